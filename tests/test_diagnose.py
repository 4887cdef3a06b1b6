"""benchmarks/diagnose.py on the demo set: the teacher's fit on its own training rows, in sample and out of fold
(cross-fitted teachers), and a checkpoint's sign accuracy and positive share per P2 rate."""

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO_ROOT

from hf_mmkd.data.missing import row_key
from hf_mmkd.data.prepared import save_prepared
from hf_mmkd.training import main as train_main

TINY = ["--num_train_epochs", "1", "--per_device_train_batch_size", "16", "--hidden_size", "8",
        "--num_attention_heads", "2", "--report_rates", "", "--save_strategy", "no", "--eval_strategy", "no",
        "--load_best_model_at_end", "false"]


def load_diagnose():
    spec = importlib.util.spec_from_file_location("diagnose", REPO_ROOT / "benchmarks" / "diagnose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from hf_mmkd.data.demo import demo_spec, make_demo_dataset

    root = tmp_path_factory.mktemp("diagnose")
    dsd = make_demo_dataset(sizes={"train": 48, "validation": 24}, seed=0)
    save_prepared(dsd, root / "ds", "test data", demo_spec(dsd))
    assert train_main(["--dataset", str(root / "ds"), "--output_dir", str(root / "run"), "--stage", "teacher",
                       "--teacher_folds", "2", *TINY]) == 0
    return root


def test_teacher_fit_in_sample_and_out_of_fold(demo_run):
    diagnose = load_diagnose()
    args = SimpleNamespace(dataset=str(demo_run / "ds"), split="validation", mask_seed=1111)
    teacher = str(demo_run / "run" / "teacher")
    fit, table = diagnose.teacher_fit(teacher, args)
    assert set(fit) == {"full teacher, train", "full teacher, validation", "out-of-fold teachers, train"}
    assert "| out-of-fold teachers, train |" in table
    # out of fold: each training row's prediction is the fold teacher's that never saw it
    preds, labels = diagnose.out_of_fold_predictions(teacher, args)
    from hf_mmkd.data.prepared import load_prepared

    ids = load_prepared(str(demo_run / "ds"))["train"]["id"]
    fold0 = np.asarray([row_key(i) % 2 == 0 for i in ids])
    p0, _ = diagnose.predictions(str(demo_run / "run" / "teacher" / "folds" / "fold_0"), args.dataset, "train", 0.0,
                                 1111)
    assert np.allclose(preds[fold0], p0[fold0]) and fold0.any() and (~fold0).any()
    assert fit["out-of-fold teachers, train"]["MAE"] == pytest.approx(float(np.abs(preds - labels).mean()), rel=1e-6)
    from sklearn.metrics import balanced_accuracy_score

    nz = labels != 0
    assert fit["out-of-fold teachers, train"]["Non0_bal_acc_2"] == pytest.approx(
        balanced_accuracy_score(labels[nz] > 0, preds[nz] > 0))
    assert "| Non0 Acc-2 | Bal. Acc-2 (Non0) |" in table


def test_prediction_report_sign_accuracy_and_positive_share(demo_run):
    diagnose = load_diagnose()
    args = SimpleNamespace(dataset=str(demo_run / "ds"), split="validation", mask_seed=1111)
    results, table = diagnose.prediction_report({"teacher": str(demo_run / "run" / "teacher")}, args)
    per_rate = results["teacher"]
    assert list(per_rate) == [f"{r:g}" for r in diagnose.RATES]
    p, y = diagnose.predictions(str(demo_run / "run" / "teacher"), args.dataset, "validation", 0.5, 1111)
    nz = y != 0
    assert per_rate["0.5"]["pos_share"] == pytest.approx(float((p[nz] > 0).mean()))
    assert per_rate["0.5"]["acc2_non0"] == pytest.approx(float(((p[nz] > 0) == (y[nz] > 0)).mean()))
    assert per_rate["0.5"]["bal_acc2_non0"] == pytest.approx(
        ((p[nz] > 0)[y[nz] > 0].mean() + (p[nz] <= 0)[y[nz] < 0].mean()) / 2)
    assert "share of positive predictions" in table and "Non0 balanced Acc-2 on validation" in table


def test_selection_regret_by_hand():
    """Two groups, one run whose first epoch answers the labels and whose last answers their negation: every rule
    that reads the chosen half picks the first epoch (held-out balanced Acc-2 1, regret 0); the last epoch scores 0
    with regret 1, in both directions of every halving."""
    diagnose = load_diagnose()
    labels = np.array([1.0, -1.0, 2.0, -2.0])
    right, wrong = labels[None, :], -labels[None, :]  # (R = 1 rate, N = 4 rows)
    result = diagnose.selection_regret({"run": [right, wrong]}, labels, ["a", "a", "b", "b"], splits=3)
    for rule in ("best Non0_bal_acc_2", "best Corr", "lowest MAE"):
        assert result[rule] == {"held_out_bal_acc_2": 1.0, "regret": 0.0}
    assert result["last epoch"] == {"held_out_bal_acc_2": 0.0, "regret": 1.0}
    with pytest.raises(ValueError, match="the split has 1 group"):
        diagnose.selection_regret({"run": [right, wrong]}, labels, ["a"] * 4, splits=1)


def test_selection_rules_on_a_run_with_every_epoch_kept(demo_run, tmp_path, capsys):
    diagnose = load_diagnose()
    run = tmp_path / "none"
    assert train_main(["--dataset", str(demo_run / "ds"), "--output_dir", str(run), "--method", "none",
                       "--num_train_epochs", "3", "--per_device_train_batch_size", "16", "--hidden_size", "8",
                       "--learning_rate", "0.03",
                       "--num_attention_heads", "2", "--report_rates", "", "--save_strategy", "epoch",
                       "--eval_strategy", "epoch", "--save_total_limit", "5"]) == 0
    epochs = diagnose.epoch_checkpoints(str(run))
    assert len(epochs) == 3
    out = tmp_path / "selection.json"
    argv = ["--dataset", str(demo_run / "ds"), "--selection-runs", f"none={run}", "--selection-splits", "5",
            "--group-pattern", r"demo_validation_\d*(\d)", "--out", str(out)]
    assert diagnose.main(argv) == 0
    table = capsys.readouterr().out
    # each epoch's cell: the P2 mean over r of the balanced sign accuracy on all validation rows
    from sklearn.metrics import balanced_accuracy_score

    for k, folder in enumerate(epochs):
        per_rate = [diagnose.predictions(str(folder), str(demo_run / "ds"), "validation", r, 1111)
                    for r in diagnose.RATES]
        expected = np.mean([balanced_accuracy_score(y[y != 0] > 0, p[y != 0] > 0) for p, y in per_rate])
        cells = table.split("| none |")[1].split("\n")[0].split("|")[:-1]  # this run's row: one cell per epoch
        assert float(cells[k]) == pytest.approx(100 * expected, abs=0.005)
    assert "random halvings of the 10 groups" in table
    import json

    rules = json.loads(out.read_text())["selection_rules"]
    assert set(rules) == set(diagnose.SELECTION_RULES)
    assert all(0.0 <= r["held_out_bal_acc_2"] <= 1.0 and r["regret"] >= 0.0 for r in rules.values())
    # a folder without epoch checkpoints, and a pattern that leaves one group, are one-line errors
    assert diagnose.main(["--dataset", str(demo_run / "ds"), "--selection-runs", f"x={tmp_path}"]) == 2
    assert "--selection-runs expects NAME=RUN_DIR" in capsys.readouterr().err
    assert diagnose.main(["--dataset", str(demo_run / "ds"), "--selection-runs", f"none={run}"]) == 2
    assert capsys.readouterr().err.strip() == ("diagnose.py: error: the split has 1 group(s); halving it needs at "
                                               "least 2 (--group-pattern or --group-column name each row's group)")
