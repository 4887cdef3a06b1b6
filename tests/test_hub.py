"""hf_mmkd.hub: model card with model-index robustness entries, release folder, mocked upload (all offline)."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from hf_mmkd.hub import build_card, build_release_dir, eval_results, upload
from hf_mmkd.metrics import COMPLETE_SET, P3_SETS, rate_condition
from hf_mmkd.report import plot_results
from tiny import assert_honest_card

AUTO_MAP = {"AutoConfig": "configuration_mmkd.MMKDConfig",
            "AutoModelForSequenceClassification": "modeling_mmkd.MMKDForSentiment"}
CONFIG = {"model_type": "mmkd", "auto_map": AUTO_MAP, "text_feature_dim": 300, "audio_feature_dim": 74,
          "vision_feature_dim": 35, "role": "student", "distillation_method": "corrkd", "task": "regression"}


@pytest.fixture
def checkpoint(tmp_path):
    """A fake checkpoint folder shaped like `save_pretrained` output (no real model needed)."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(CONFIG))
    save_file({"head.weight": torch.zeros(2, 2)}, str(ckpt / "model.safetensors"))
    (ckpt / "configuration_mmkd.py").write_text("class MMKDConfig: ...\n")
    (ckpt / "modeling_mmkd.py").write_text("class MMKDForSentiment: ...\n")
    (ckpt / "tokenizer_config.json").write_text("{}")
    (ckpt / "training_args.bin").write_bytes(b"not shipped")
    (ckpt / "optimizer.pt").write_bytes(b"not shipped")
    return ckpt


def p2_results():
    return {"dataset": "mosi", "protocol": "p2", "checkpoints": {
        "student": {s: {rate_condition(r): {"Non0_acc_2": 0.8 - 0.2 * r + d, "MAE": 0.7 + r}
                        for r in np.arange(10) / 10}
                    for s, d in (("1111", 0.01), ("1112", -0.01))},
        "teacher": {"1111": {rate_condition(r): {"Non0_acc_2": 0.8, "MAE": 0.7} for r in np.arange(10) / 10}}}}


def p3_results():
    return {"dataset": "mmmo", "protocol": "p3", "checkpoints": {"student": {"1111": {
        c: {"Non0_F1_score": 0.5 + 0.05 * i} for i, c in enumerate(P3_SETS + (COMPLETE_SET,))}}}}


def test_eval_results_one_per_condition_and_metric():
    ers = eval_results(p2_results(), "student")
    assert len(ers) == (10 + 1) * 2  # 10 rates + the P2 summary, x 2 metrics
    r05 = [e for e in ers if e.metric_config == "p2 r=0.5" and e.metric_name == "Acc-2 (Non0)"]
    assert len(r05) == 1 and r05[0].metric_value == pytest.approx(0.7)
    assert r05[0].metric_args == {"std": 0.01, "seeds": 2}
    assert r05[0].metric_type == "accuracy" and r05[0].dataset_name == "CMU-MOSI"
    summary = [e for e in ers if e.metric_config == "p2 mean r=0.0-0.9" and e.metric_type == "mae"]
    assert summary[0].metric_value == pytest.approx(1.15)
    configs = {e.metric_config for e in eval_results(p3_results(), "student")}
    assert {"p3 available={l}", "p3 available={a,v}", "p3 available={l,a,v}", "p3 Avg. (6 sets)"} <= configs
    with pytest.raises(KeyError, match="checkpoint 'nope' not in the mosi/p2 results"):
        eval_results(p2_results(), "nope")
    results = p2_results()
    for seeds in results["checkpoints"].values():
        for conds in seeds.values():
            for metrics in conds.values():
                metrics["Non0_bal_acc_2"] = 0.625
    bal = [e for e in eval_results(results, "student") if e.metric_config == "p2 mean r=0.0-0.9"
           and e.metric_name == "Bal. Acc-2 (Non0)"]
    assert len(bal) == 1 and bal[0].metric_type == "balanced_accuracy" and bal[0].metric_value == 0.625


def test_card_round_trip(tmp_path, checkpoint):
    card = build_card([p2_results(), p3_results()], "student", repo_id="me/mmkd-student",
                      config=checkpoint / "config.json", hyperparameters={"learning_rate": 1e-3, "seeds": "1111,1112"},
                      plot_filename="robustness.png", dataset_types={"mosi": "me/mosi-parquet"})
    path = tmp_path / "README.md"
    card.save(path)
    loaded = ModelCard.load(path)
    ers = loaded.data.eval_results
    assert len(ers) == 22 + 8  # P2: 11 x 2; P3: 7 sets + Avg.
    e = next(x for x in ers if x.metric_config == "p2 r=0.9" and x.metric_type == "mae")
    assert e.metric_value == pytest.approx(1.6) and e.dataset_type == "me/mosi-parquet"
    assert e.dataset_split == "test"
    f = next(x for x in ers if x.metric_config == "p3 available={l,v}")
    assert f.metric_value == pytest.approx(0.7) and f.dataset_name == "ICT-MMMO" and f.metric_type == "f1"
    assert loaded.data.model_name == "mmkd-student" and "custom_code" in loaded.data.tags
    text = loaded.text
    assert "**student** model" in text and "corrkd" in text
    assert "| audio | 74-d feature sequence | `audio_features` (B, L, 74), `audio_lengths` (B,) |" in text
    assert "modality_mask=torch.tensor([[True, True, False], [True, True, False]])" in text
    assert "k not in ('vision_features', 'vision_lengths')" in text
    assert "| learning_rate | `0.001` |" in text
    assert "protocol P2 (LNLN)" in text and "protocol P3 (CorrKD/HRLF)" in text
    assert "![Robustness to missing modalities](robustness.png)" in text
    assert "does **not** contain or redistribute" in text
    assert_honest_card(text, None, (checkpoint / "config.json").read_text())  # no spec: training data "unknown"
    assert "Terms and weights" not in text and "scd_weight=1.0" in text  # CorrKD's defaults, from its loss module


MMMO_SPEC = {"version": 1, "name": "ICT-MMMO", "task": "regression", "label_column": "label", "label_range": [1, 5],
             "neutral_band": [3, 3], "class_names": None,
             "modalities": {"audio": {"kind": "features", "dim": 74}, "vision": {"kind": "features", "dim": 36}},
             "source": "MFN h5 files",
             "splits": {"train": {"rows": 220, "audio": 220, "vision": 220, "left_out": []},
                        "test": {"rows": 80, "audio": 80, "vision": 80, "left_out": []}}}


def test_card_data_section_comes_from_the_spec_only(tmp_path):
    summary = {"method": "mitr", "method_kwargs": {"kd_weight": 0.1}, "teacher": None, "missing_protocol": "p1",
               "missing_rate": 0.3, "num_train_epochs": 2, "validation": {"r=0 MAE": 0.91}}
    config = {**CONFIG, "distillation_method": "mitr", "dataset_spec": MMMO_SPEC,
              "text_config": None, "audio_config": {"model_type": "wav2vec2", "_name_or_path": "/root/w2v"}}
    text = str(build_card([], "student", repo_id="me/x", config=config, summary=summary))
    assert_honest_card(text, "ICT-MMMO")
    assert "a score in [1, 5]; scores in [3, 3] are neutral" in text
    assert "Modalities: audio (features, 74-d), vision (features, 36-d)." in text
    assert "| train | 220 |" in text and "| test | 80 |" in text and "Source: MFN h5 files" in text
    assert "kd_weight=0.1" in text and "recon_weight=1.0" in text  # recorded kwargs over the defaults
    assert "(student view): p1 (rate 0.3)" in text and "r=0 MAE 0.91" in text and "`w2v` backbone" in text
    assert "Metric set `generic_regression`" in text and "Accuracy" not in text
    shaped = str(build_card([], "student", repo_id="me/x", config=config,
                            summary={**summary, "balance_terms": True, "balance_ratio": 1.0,
                                     "recoverability_floor": 0.5, "recoverability_fallback": 1.0,
                                     "response_weight": 0.5}))
    assert ("Shared distillation machinery (`docs/methods.md#shared-machinery`): term gradients capped at 1.0 x the "
            "task's; rows weighted by recoverability (floor 0.5); rows that keep little pulled towards the neutral "
            "answer (weight 1.0); the teacher's answer distilled beside the method's terms (logit-KD term, weight "
            "0.5).") in shaped.replace("**", "")
    matched = str(build_card([], "student", repo_id="me/x", config=config,
                             summary={**summary, "missing_protocol": "p2", "missing_rate": None,
                                      "train_missing_rates": [0.0, 0.5]}))
    assert "(student view): p2 (one rate per row, every modality, from [0.0, 0.5]);" in matched
    classes = dict(MMMO_SPEC, task="classification", class_names=["neg", "pos"], label_range=None, neutral_band=None)
    text = str(build_card([], "teacher", repo_id="me/x", config={**CONFIG, "role": "teacher",
                                                                  "dataset_spec": classes}))
    assert_honest_card(text, "ICT-MMMO")
    assert "classification into 2 classes (0 neg, 1 pos)" in text and "Metric set `classification`" in text
    assert "teacher, trained on complete inputs" in text


def test_build_release_dir(tmp_path, checkpoint):
    plot = plot_results(p2_results(), tmp_path / "robustness.png")
    card = build_card(p2_results(), "student", repo_id="me/m", config=CONFIG, plot_filename="robustness.png")
    out = build_release_dir(checkpoint, tmp_path / "release", card, extra_files=[plot])
    assert sorted(os.listdir(out)) == [".hf_mmkd_outputs.json", "README.md", "config.json", "configuration_mmkd.py",
                                       "model.safetensors", "modeling_mmkd.py", "robustness.png",
                                       "tokenizer_config.json"]
    assert json.loads((out / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert len(ModelCard.load(out / "README.md").data.eval_results) == 22
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    with pytest.raises(ValueError, match="is not empty; pass --overwrite"):
        build_release_dir(checkpoint, out, card, extra_files=[plot])
    out2 = build_release_dir(checkpoint, out, "---\nlicense: mit\n---\n# x\n", overwrite=True,
                             extra_files={"plots/curve.png": plot})
    assert (out2 / "plots" / "curve.png").is_file() and not (out2 / "robustness.png").exists()
    assert ModelCard.load(out2 / "README.md").data.license == "mit"


def test_release_refuses_incomplete_checkpoints(tmp_path, checkpoint):
    card = "---\nlicense: mit\n---\n# x\n"
    with pytest.raises(FileNotFoundError, match=r"embeds \['robustness.png'\]"):
        build_release_dir(checkpoint, tmp_path / "a", card + "![plot](robustness.png)\n")
    (checkpoint / "modeling_mmkd.py").unlink()
    with pytest.raises(FileNotFoundError, match="missing modeling_mmkd.py, named in auto_map"):
        build_release_dir(checkpoint, tmp_path / "b", card)
    cfg = dict(CONFIG)
    del cfg["auto_map"]
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="has no auto_map"):
        build_release_dir(checkpoint, tmp_path / "c", card)
    (checkpoint / "model.safetensors").rename(checkpoint / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"missing model.safetensors \(found \['pytorch_model.bin'\]"):
        build_release_dir(checkpoint, tmp_path / "d", card)
    (checkpoint / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        build_release_dir(checkpoint, tmp_path / "e", card)
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_release_sharded_weights(tmp_path, checkpoint):
    (checkpoint / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file({"a": torch.zeros(1)}, str(checkpoint / "model-00001-of-00002.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"shard\(s\) \['model-00002-of-00002.safetensors'\]"):
        build_release_dir(checkpoint, tmp_path / "r", "# x\n")
    save_file({"b": torch.zeros(1)}, str(checkpoint / "model-00002-of-00002.safetensors"))
    out = build_release_dir(checkpoint, tmp_path / "r", "# x\n")
    assert (out / "model-00002-of-00002.safetensors").is_file() and (out / "model.safetensors.index.json").is_file()


def test_upload_calls_hfapi(tmp_path, checkpoint):
    out = build_release_dir(checkpoint, tmp_path / "release", "# card\n")
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:
        api = api_cls.return_value
        api.upload_folder.return_value = "commit-info"
        assert upload(out, "me/mmkd-student", token="hf_x", private=True) == "commit-info"
    api_cls.assert_called_once_with(token="hf_x")
    api.create_repo.assert_called_once_with(repo_id="me/mmkd-student", repo_type="model", private=True,
                                            exist_ok=True)
    api.upload_folder.assert_called_once_with(repo_id="me/mmkd-student", folder_path=str(out), repo_type="model",
                                              commit_message="Upload hf_mmkd model",
                                              ignore_patterns=[".hf_mmkd_outputs.json"])  # the manifest stays
    assert api.method_calls[0][0] == "create_repo"  # the repo exists before the upload
    with mock.patch("hf_mmkd.hub.HfApi") as api_cls:
        with pytest.raises(FileNotFoundError, match="missing README.md"):
            upload(checkpoint, "me/x")
        api_cls.assert_not_called()


def test_card_describes_the_training_data_from_the_spec():
    from test_dataset_spec import classes, spec

    ratings = build_card(p2_results(), "student", repo_id="me/m", config={**CONFIG, "dataset_spec": spec().to_dict()})
    text = ratings.text
    assert "Trained on **ratings**" in text and "label column `label`: a score in [0, 10]; scores in [4, 6] are" in text
    assert "(B, 1) scores on the scale [0, 10]; predict() calls a score in [4, 6] neutral" in text
    assert "Metrics (metric set `generic_regression`): MAE, Pearson Corr, sign accuracy" in text
    assert "| train | 4 | 4 | 1 |" in text and "- train: `x`" in text  # rows, with audio, left out (and their ids)
    three = build_card(p2_results(), "student", repo_id="me/m",
                       config={**CONFIG, "task": "classification", "dataset_spec": classes().to_dict()}).text
    assert "Sentiment classification into 3 classes (0 neg, 1 neu, 2 pos)" in three
    assert "(B, 3) class logits, classes in id order: neg, neu, pos" in three
    bare = build_card(p2_results(), "student", repo_id="me/m", config=CONFIG).text
    assert "The training data of this checkpoint are not recorded" in bare and "CMU-MOSI and" not in bare


def test_card_names_teacher_method_paper_and_evaluation_caveats():
    """A teacher card does not claim distillation; a student card identifies its teacher with its validation
    figure, links the paper, and lists no regression-only settings for classes; the evaluation's warnings and
    notes sit next to the table the model-index repeats."""
    teacher = str(build_card([], "teacher", repo_id="me/t", config={**CONFIG, "role": "teacher"}))
    assert "trained by knowledge distillation" not in teacher and "task loss only" in teacher
    summary = {"method": "corrkd", "teacher": "teacher", "teacher_location": "outputs/demo/teacher",
               "teacher_validation": {"r=0.0 MAE": 0.7123}, "missing_protocol": "p2"}
    student = str(build_card([], "student", repo_id="me/s", config=CONFIG, summary=summary)).replace("**", "")
    assert "Teacher: `outputs/demo/teacher` (`teacher`), validation r=0.0 MAE 0.7123 (teacher mode `frozen`)" in student
    assert "Paper: https://arxiv.org/abs/2404.16456." in student and "trained by knowledge distillation (corrkd)" in student
    assert "label_bins=7class" in student and "sigma=0.5" in student  # regression: CorrKD's bins of the score
    classes = str(build_card([], "student", repo_id="me/s", config={**CONFIG, "task": "classification"},
                             summary=summary))
    assert "label_bins" not in classes and "sigma" not in classes and "margin=" in classes
    results = {**p2_results(), "warnings": ["'student' makes near-constant predictions under every condition"],
               "notes": ["Rows that keep no modality under an availability set were left out: {v}: 3 rows."]}
    card = str(build_card(results, "student", repo_id="me/s", config=CONFIG))
    assert "**Warning:** 'student' makes near-constant predictions under every condition" in card
    assert "*Note:* Rows that keep no modality under an availability set were left out: {v}: 3 rows." in card


def test_training_summary_identifies_the_teacher(tmp_path):
    from hf_mmkd.trainer import MMKDTrainingArguments
    from hf_mmkd.training import training_summary

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "training_summary.json").write_text(json.dumps({"validation": {"r=0.0 MAE": 0.81, "r=0.5 MAE": 0.9}}))
    args = MMKDTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    summary = training_summary(args, teacher, {})
    assert summary["teacher"] == "teacher" and summary["teacher_location"] == "teacher"  # absolute: its name only
    assert summary["teacher_validation"] == {"r=0.0 MAE": 0.81, "r=0.5 MAE": 0.9}
    assert training_summary(args, "me/hub-teacher", {})["teacher_location"] == "me/hub-teacher"


def test_local_and_release_cards_lead_with_the_same_figure(checkpoint, tmp_path):
    """train.py's card (write_card) and `hf-mmkd publish`'s (from training_summary.json) give the same headline."""
    from hf_mmkd.hub import method_section
    from hf_mmkd.trainer import MMKDTrainingArguments
    from hf_mmkd.training import write_card

    summary = {"method": "corrkd", "validation": {"r=0.0 Non0_acc_2": 0.61, "r=0.0 MAE": 1.25}}  # as trained
    write_card(checkpoint, summary, MMKDTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True))
    saved = json.loads((checkpoint / "training_summary.json").read_text())
    headline = method_section(CONFIG, saved)["model_summary"]
    assert headline.endswith("validation r=0.0 MAE 1.25.")  # keys sorted as saved
    assert headline in (checkpoint / "README.md").read_text()
