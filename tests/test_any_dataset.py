"""Any data set, any label type: the README's own-data commands (prepare -> train -> evaluate P2 and P5 -> predict
-> publish --dry-run) on data sets unlike CMU-MOSI that the tests build, and CMU-MOSI itself as three classes.

The commands are read from README.md (between `<!-- own-data:start -->` and `<!-- own-data:end -->`) and run in
process, in a temporary folder, with the layout's converter flags and methods and a tiny training budget. Each
layout then checks that the report, the plot, the card and the predictions speak its labels' language.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import pickle
import shlex

import matplotlib.figure
import numpy as np
import pytest
from any_data import write_mmsa_pickle
from conftest import MOSI_PKL, REPO_ROOT
from huggingface_hub import ModelCard

from hf_mmkd import MMKDForSentiment, cli
from hf_mmkd import training
from hf_mmkd.data import load_prepared, load_spec

METHODS = ("corrkd", "none", "logit", "mmckd", "mitr", "crossmodal")  # the README trains corrkd first
TINY = ["--max_steps", "2", "--hidden_size", "8", "--num_attention_heads", "2", "--per_device_train_batch_size",
        "16", "--per_device_eval_batch_size", "32", "--eval_strategy", "no", "--save_strategy", "no",
        "--report_rates", "0.0", "--logging_steps", "1"]


def readme_commands() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    block = text[text.index("<!-- own-data:start -->"): text.index("<!-- own-data:end -->")]
    code = block.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in code.replace("\\\n", " ").splitlines() if line.strip()]


def run(argv: list[str]) -> int:
    """One README command, in process: `python dataset_scripts/X.py`, `accelerate launch train.py`, `hf-mmkd`."""
    if argv[0].endswith("python"):
        spec = importlib.util.spec_from_file_location("script", REPO_ROOT / argv[1])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(argv[2:])
    if argv[0].endswith("accelerate"):
        at = argv.index("train.py")
        assert argv[1] == "launch" and argv[2:at] in ([], ["-q", "--config_file", "configs/accelerate/default.yaml"]), argv
        return training.main(argv[at + 1:])
    assert argv[0].endswith("hf-mmkd"), argv
    return cli.main(argv[1:])


def flag(argv, name, value):
    """argv with `name value` set (replaced where present, else appended)."""
    argv = list(argv)
    if name in argv:
        argv[argv.index(name) + 1] = value
        return argv
    return argv + [name, value]


class PlotTitles:
    """Records the panel titles of every figure saved (the report's plot)."""

    def __init__(self, monkeypatch):
        self.saved = []
        save = matplotlib.figure.Figure.savefig

        def record(fig, *args, **kwargs):
            self.saved.append([ax.get_title() for ax in fig.axes if ax.get_visible()])
            return save(fig, *args, **kwargs)

        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)


def run_readme(tmp_path, monkeypatch, *, prepare_flags, methods, caplog):
    """The README's commands in `tmp_path`; returns {"out": {command: captured stdout}, "plots": [titles]}."""
    monkeypatch.chdir(tmp_path)
    plots = PlotTitles(monkeypatch)
    prepare, train, eval_p2, eval_p5, predict, publish = readme_commands()
    prepare = prepare[: prepare.index("--task")] + prepare_flags
    assert run(prepare) == 0
    first, others = methods[0], methods[1:]
    with caplog.at_level(logging.WARNING, logger="hf_mmkd"):
        assert run(flag(train, "--method", first) + TINY) == 0
        for m in others:  # one teacher for every student, each student in its own folder
            argv = flag(flag(flag(train, "--method", m), "--output_dir", f"outputs/mine_{m}"),
                        "--teacher_name_or_path", "outputs/mine/teacher")
            assert run(argv + TINY) == 0
    students = [f"outputs/mine_{m}/student" for m in others]
    for cmd in (eval_p2, eval_p5):
        at = cmd.index("--dataset")
        assert run(cmd[:at] + students + cmd[at:] + ["--seeds", "1111"]) == 0
    assert run(predict) == 0
    assert run(publish) == 0
    return plots.saved


def report(tmp_path, protocol):
    return (tmp_path / "reports" / "mine" / f"mine_{protocol}.md").read_text()


def predictions(tmp_path):
    with open(tmp_path / "preds.csv", newline="") as f:
        return list(csv.DictReader(f))


def card(tmp_path):
    return ModelCard.load(tmp_path / "release" / "mine" / "README.md")


# --------------------------------------------------------------------------------------------------- layouts


def test_ratings_zero_to_ten_three_modalities(tmp_path, monkeypatch, caplog, capsys):
    """Regression on 0..10 (the generic metric set), three modalities, rows without any modality (left out by the
    converter); CorrKD, whose label bins come from the spec's range."""
    empty = write_mmsa_pickle(tmp_path / "my_data.pkl", label_range=(0, 10), empty_rows={"train": 3, "test": 1})
    plots = run_readme(tmp_path, monkeypatch, prepare_flags=["--label-range", "0", "10"], methods=("corrkd",),
                       caplog=caplog)
    spec = load_spec(tmp_path / "data_prepared" / "mine")
    assert spec.metric_set == "generic_regression" and spec.neutral_band == pytest.approx((4.166667, 5.833333))
    assert spec.splits["train"]["left_out"] == empty["train"] and spec.splits["test"]["left_out"] == empty["test"]
    assert "train: 37 rows, with text 37, with audio 37, with vision 37; 3 left out (no modality)" in \
        capsys.readouterr().out
    for stage in ("teacher", "student"):  # both carry the spec; CorrKD's label bins come from it
        config = MMKDForSentiment.from_pretrained(tmp_path / "outputs" / "mine" / stage).config
        assert config.dataset_spec == spec.to_dict()

    columns = "| Acc-2 (sign) | F1 (sign) | Bal. Acc-2 (sign) | Acc-3 (band) | MAE | Corr |"
    for protocol, summary in (("p2", "**mean r=0.0-0.9**"), ("p5", "**Avg. (7 patterns)**")):
        md = report(tmp_path, protocol)
        assert f"| Checkpoint | Condition {columns}" in md and "Acc-7" not in md and "Non0" not in md
        assert summary in md and "Metric set `generic_regression`" in md
        assert "| teacher (1 seed) |" in md and "| student (1 seed) |" in md
        assert "| constant: train median" in md and "| every condition |" in md
    assert plots[0] == ["Acc-2 (sign) (%) ↑", "Bal. Acc-2 (sign) (%) ↑", "F1 (sign) (%) ↑", "Acc-3 (band) (%) ↑",
                        "MAE ↓", "Corr ↑"]

    rows = predictions(tmp_path)
    assert len(rows) == 15 and {r["id"] for r in rows}.isdisjoint(empty["test"])
    a, b = spec.neutral_band
    for r in rows:  # the label is the spec's: below the band negative, inside neutral, above positive
        score = float(r["score"])
        assert r["label"] == ("negative" if score < a else "positive" if score > b else "neutral")
        assert 0 <= float(r["reference"]) <= 10

    text = card(tmp_path).text
    assert "Trained on **mine**" in text and "a score in [0, 10]; scores in [4.16667, 5.83333] are neutral" in text
    assert "Metrics (metric set `generic_regression`)" in text and "| train | 37 | 37 | 37 | 37 | 3 |" in text
    training_data = text[text.index("## Training data"): text.index("## Limitations")]
    assert "MOSI" not in training_data and "MMMO" not in training_data  # the data it was trained on, no other
    names = {e.metric_name for e in card(tmp_path).data.eval_results}
    assert names == {"Acc-2 (sign)", "F1 (sign)", "Bal. Acc-2 (sign)", "Acc-3 (band)", "MAE", "Corr"}


def test_three_classes_text_absent_from_train_kept_rows_without_modality_every_method(tmp_path, monkeypatch,
                                                                                        caplog):
    """Three classes (class names given), text absent from the train split, rows without any modality kept by the
    converter: training skips them with a warning naming their ids, evaluation leaves them out with a note. The
    teacher and all six students."""
    empty = write_mmsa_pickle(tmp_path / "my_data.pkl", task="classification", absent=[("train", "text")],
                              empty_rows={"train": 2, "test": 1})
    flags = ["--task", "classification", "--class-names", "negative", "neutral", "positive",
             "--keep-rows-without-modality"]
    plots = run_readme(tmp_path, monkeypatch, prepare_flags=flags, methods=METHODS, caplog=caplog)
    assert "train: 2 row(s) have none of the model's modalities (audio, vision) and are left out: " \
           f"{empty['train']}" in caplog.text
    spec = load_spec(tmp_path / "data_prepared" / "mine")
    assert spec.splits["train"]["text"] == 0 and spec.splits["train"]["left_out"] == []
    for m in METHODS:  # every student learned class labels and carries the spec
        folder = tmp_path / "outputs" / ("mine" if m == "corrkd" else f"mine_{m}") / "student"
        student = MMKDForSentiment.from_pretrained(folder).config
        assert student.task == "classification" and student.num_labels == 3 and student.distillation_method == m
        assert student.modalities == ["audio", "vision"] and student.dataset_spec == spec.to_dict()
        assert student.label_names() == ["negative", "neutral", "positive"]

    for protocol in ("p2", "p5"):
        md = report(tmp_path, protocol)
        assert "| Acc | F1 | F1_negative | F1_neutral | F1_positive | WA | UA | Bal. Acc | Macro-F1 |" in md
        assert "MAE" not in md
        for name in ["mine/teacher", "mine/student"] + [f"mine_{m}/student" for m in METHODS if m != "corrkd"]:
            assert f"| {name} (1 seed) |" in md, (protocol, name)
        assert "| constant: majority class" in md
        assert "Rows that have none of a checkpoint's modalities were left out of its evaluation: " \
               f"mine/teacher: 1 rows (ids {empty['test'][0]}); mine/student: 1 rows" in md
    assert "share only {a,v} (the models have no text encoder)" in report(tmp_path, "p5")
    assert plots[0] == ["Acc (%) ↑", "Bal. Acc (%) ↑", "Macro-F1 (%) ↑", "F1 (%) ↑"]

    rows = predictions(tmp_path)
    by_id = {r["id"]: r for r in rows}
    assert by_id[empty["test"][0]]["label"] == "" and by_id[empty["test"][0]]["score"] == ""
    labelled = [r for r in rows if r["id"] != empty["test"][0]]
    assert labelled and all(r["label"] in ("negative", "neutral", "positive") for r in labelled)
    assert all(r["reference"] in ("0", "1", "2") for r in labelled)
    assert all(0 < float(r["score"]) <= 1 for r in labelled)  # the arg-max class's probability

    text = card(tmp_path).text
    assert "classification into 3 classes (0 negative, 1 neutral, 2 positive)" in text
    assert "(B, 3) class logits, classes in id order: negative, neutral, positive" in text
    assert {e.metric_name for e in card(tmp_path).data.eval_results} >= {"Acc", "F1", "WA", "UA", "F1_neutral"}


def test_five_classes_two_modalities(tmp_path, monkeypatch, caplog):
    """Five classes from a pickle that also has regression labels (MMSA's own layout: --task chooses), two
    modalities (audio and vision, no text anywhere)."""
    write_mmsa_pickle(tmp_path / "my_data.pkl", task="classification", num_classes=5, modalities=("audio", "vision"),
                      both_labels=True)
    names = ["very_negative", "negative", "neutral", "positive", "very_positive"]
    plots = run_readme(tmp_path, monkeypatch, prepare_flags=["--task", "classification", "--class-names", *names],
                       methods=("mmckd",), caplog=caplog)
    assert plots == [["Acc (%) ↑", "Bal. Acc (%) ↑", "Macro-F1 (%) ↑", "F1 (%) ↑"]] * 2  # the P2 and the P5 plot
    assert load_prepared(tmp_path / "data_prepared" / "mine")["train"].column_names.count("label") == 1  # kept
    md = report(tmp_path, "p5")
    assert "| Acc | F1 | " + " | ".join(f"F1_{n}" for n in names) + " | WA | UA | Bal. Acc | Macro-F1 |" in md
    assert "| student (1 seed) | {a,v} |" in md and "{l}" not in md.split("Notes:")[0]
    assert "neither the models nor the test split have text" in md
    rows = predictions(tmp_path)
    assert rows and all(r["label"] in names and r["reference"] in "01234" for r in rows)
    text = card(tmp_path).text
    assert "classification into 5 classes (0 very_negative" in text and "| F1_very_positive |" in text
    assert "Metrics (metric set `classification`)" in text


# ------------------------------------------------------------------------------------------ real data as classes


def test_real_mosi_as_three_classes(tmp_path):
    """The shared CMU-MOSI pickle with `classification_labels` added as MMSA's files carry them (0 negative,
    1 neutral, 2 positive by the sign of the score): it trains and evaluates as three classes."""
    if not MOSI_PKL.is_file():
        pytest.fail(f"real CMU-MOSI pickle not found at {MOSI_PKL} (the project reads ../shared/data)")
    from hf_mmkd.evaluation import evaluate_checkpoints

    data = pickle.loads(MOSI_PKL.read_bytes())
    for arrays in data.values():
        arrays["classification_labels"] = (np.sign(arrays["regression_labels"]) + 1).astype(np.float32)
    src = tmp_path / "mosi_classes.pkl"
    src.write_bytes(pickle.dumps(data))
    prepared = tmp_path / "prepared"
    assert run(["python", "dataset_scripts/prepare_mmsa.py", str(src), str(prepared), "--task", "classification",
                "--class-names", "negative", "neutral", "positive"]) == 0
    spec = load_spec(prepared)
    assert spec.task == "classification" and spec.class_names == ("negative", "neutral", "positive")
    out = tmp_path / "run"
    assert training.main(["--dataset", str(prepared), "--output_dir", str(out), "--stage", "teacher",
                          "--text_backbone", "minilm", "--max_train_samples", "32", "--max_eval_samples", "16",
                          *TINY]) == 0
    teacher = MMKDForSentiment.from_pretrained(out / "teacher")
    assert teacher.config.num_labels == 3 and teacher.config.modalities == ["text", "audio"]
    results = json.loads((out / "results.json").read_text())["teacher"]
    assert {"eval_r0_Accuracy", "eval_r0_UA", "eval_r0_F1_neutral"} <= set(results)
    res = evaluate_checkpoints({"teacher": out / "teacher"}, prepared, "p2", split="validation", seeds=(1111,),
                               rates=(0.0, 0.5))
    assert res["metric_set"] == "classification" and res["n_rows"] == 229
    row = res["checkpoints"]["teacher"]["1111"]["r=0.5"]
    assert set(row) == {"Accuracy", "F1_score", "F1_negative", "F1_neutral", "F1_positive", "WA", "UA", "Macro_F1",
                        "Balanced_acc"}
    # the majority class of MOSI's train split is "positive" (sign > 0)
    assert res["reference"] == "constant: majority class 'positive'"
