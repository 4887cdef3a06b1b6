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
