"""hf_mmkd.evaluation: conditions per protocol, seeds, metric sets, consistency with a direct evaluation, errors."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data.collator import MMKDDataCollator
from hf_mmkd.data.demo import demo_spec, make_demo_dataset
from hf_mmkd.data.missing import model_inputs
from hf_mmkd.data.prepared import load_prepared, save_prepared
from hf_mmkd.evaluation import (
    P1_RATES,
    checkpoint_names,
    condition_plan,
    evaluate_checkpoints,
    report_markdown,
    write_evaluation_report,
)
from hf_mmkd.metrics import COMPLETE_SET, P2_RATES, P3_SETS, P5_SETS, rate_condition, regression_metrics
from hf_mmkd.report import summarize

DIMS = {"text": 6, "audio": 4, "vision": 3}
SIZES = {"train": 4, "validation": 4, "test": 24}
MOSI_KEYS = set(regression_metrics(np.array([0.5, -1.0, 2.0]), np.array([1.0, -2.0, 0.0])))


def make_dataset(tmp_path_factory, name="mosi_tiny", dims=DIMS):
    """A small prepared folder (synthetic demo rows in the prepared layout)."""
    out = tmp_path_factory.mktemp("data") / name
    card = f"# {name} (SYNTHETIC test data, hf_mmkd.data.demo)\n"
    dsd = make_demo_dataset(sizes=SIZES, dims=dims, seed=3)
    return save_prepared(dsd, out, card, dataclasses.replace(demo_spec(dsd, seed=3), name=name))


def make_checkpoint(folder, dims=DIMS, seed=0, role="teacher"):
    """A tiny feature-input model saved with save_pretrained (auto_map + code files)."""
    torch.manual_seed(seed)
    config = MMKDConfig(**{f"{m}_feature_dim": d for m, d in dims.items()}, hidden_size=8, num_attention_heads=2,
                        role=role, initializer_range=0.5)
    model = MMKDForSentiment(config).eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(prepared dataset folder, {name: checkpoint folder}) shared by the tests of this module."""
    data = make_dataset(tmp_path_factory)
    root = tmp_path_factory.mktemp("ckpts")
    ckpts = {"teacher": make_checkpoint(root / "teacher", seed=0),
             "student": make_checkpoint(root / "student", seed=1, role="student")}
    return data, ckpts


def direct_predictions(ckpt, split):
    """The reference: the whole split in one batch, complete inputs, no simulator."""
    model = MMKDForSentiment.from_pretrained(ckpt).eval()
    batch = MMKDDataCollator(model.config, max_text_length=50, return_row_keys=True)([split[i] for i in range(len(split))])
    with torch.no_grad():
        inputs = model_inputs(batch)
        labels = inputs.pop("labels")
        return model(**inputs).logits[:, 0].numpy(), labels.numpy()


def test_p2_conditions_metrics_and_complete_rate_matches_direct_evaluation(tiny):
    data, ckpts = tiny
    res = evaluate_checkpoints(ckpts, data, "p2", seeds=(1111, 1112))
    assert res["dataset"] == "mosi_tiny" and res["protocol"] == "p2" and res["split"] == "test"
    assert res["metric_set"] == "mmsa_pm3"  # the demo's spec: scores in [-3, 3]
    reference = res["reference"]
    assert reference.startswith("constant: train median")
    assert list(res["checkpoints"]) == ["teacher", "student", reference]
    for per_seed in res["checkpoints"].values():
        assert list(per_seed) == ["1111", "1112"]
        for conds in per_seed.values():
            assert list(conds) == [rate_condition(r) for r in P2_RATES]
            assert all(set(m) == MOSI_KEYS for m in conds.values())
    test = load_prepared(data)["test"]
    for name, ckpt in ckpts.items():
        preds, labels = direct_predictions(ckpt, test)
        expected = regression_metrics(preds, labels)
        got = res["checkpoints"][name]["1111"]["r=0.0"]
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # r = 0 draws nothing: identical for every seed; r > 0 differs between seeds
    t = res["checkpoints"]["teacher"]
    assert t["1111"]["r=0.0"] == t["1112"]["r=0.0"]
    assert t["1111"]["r=0.5"]["MAE"] != t["1112"]["r=0.5"]["MAE"]
    assert res["n_rows"] == SIZES["test"] and res["modalities"]["teacher"] == ["text", "audio", "vision"]
    summary = summarize(res)
    assert set(summary["student"]["summary"]) == {"mean r=0.0-0.9"}


def test_reports_show_balanced_sign_accuracy_and_the_constant_scores_one_half(tiny):
    """The evaluation's reference row is a constant predictor: its balanced sign accuracies are exactly 0.5 (50.00
    in the report) under every condition, whatever the test split's share of positive labels; the report shows
    the metric beside MMSA's Acc-2."""
    data, ckpts = tiny
    res = evaluate_checkpoints({"student": ckpts["student"]}, data, "p2", seeds=(1111,), rates=(0.0, 0.5))
    labels = np.asarray(load_prepared(data)["test"]["label"])
    assert (labels > 0).any() and (labels < 0).any()  # both signs, so the balanced accuracy is defined
    for cond in ("r=0.0", "r=0.5"):
        row = res["checkpoints"][res["reference"]]["1111"][cond]
        assert row["Non0_bal_acc_2"] == 0.5 and row["Has0_bal_acc_2"] == 0.5
        # whereas its plain Acc-2 is the share of the side the constant (the train median) picks
        side = labels[labels != 0] > 0 if res["reference_value"] > 0 else labels[labels != 0] < 0
        assert row["Non0_acc_2"] == pytest.approx(np.mean(side))
    text = report_markdown(res)
    assert "| Acc-2 (Non0) | F1 (Non0) | Bal. Acc-2 (Non0) |" in text
    assert "| 50.00 ± 0.00 |" in text.split(res["reference"])[1].split("\n")[0]


def test_same_seed_same_numbers_and_batch_size_invariance(tiny):
    data, ckpts = tiny
    one = {"student": ckpts["student"]}
    a = evaluate_checkpoints(one, data, "p2", seeds=(1111,), rates=(0.3, 0.7))
    b = evaluate_checkpoints(one, data, "p2", seeds=(1111,), rates=(0.3, 0.7))
    c = evaluate_checkpoints(one, data, "p2", seeds=(1111,), rates=(0.3, 0.7), batch_size=7)
    assert a["checkpoints"]["student"] == b["checkpoints"]["student"]
    for cond in ("r=0.3", "r=0.7"):
        assert c["checkpoints"]["student"]["1111"][cond] == pytest.approx(a["checkpoints"]["student"]["1111"][cond],
                                                                         rel=1e-5, abs=1e-6)


def test_checkpoint_with_a_saved_processor(tiny, tmp_path):
    from hf_mmkd.inference import build_processor

    data, ckpts = tiny
    folder = tmp_path / "with_processor"
    shutil.copytree(ckpts["student"], folder)
    model = MMKDForSentiment.from_pretrained(folder)
    build_processor(model.config).save_pretrained(folder)
    assert (folder / "processor_config.json").is_file()
    a = evaluate_checkpoints({"s": ckpts["student"]}, data, "p2", seeds=(1111,), rates=(0.0, 0.6))
    b = evaluate_checkpoints({"s": folder}, data, "p2", seeds=(1111,), rates=(0.0, 0.6))
    assert a["checkpoints"]["s"] == b["checkpoints"]["s"]


def test_p1_p3_p5_conditions(tiny):
    data, ckpts = tiny
    one = {"teacher": ckpts["teacher"]}
    p1 = evaluate_checkpoints(one, data, "p1", seeds=(1111,))
    assert list(p1["checkpoints"]["teacher"]["1111"]) == [rate_condition(r) for r in P1_RATES]
    assert "AUILC" in summarize(p1)["teacher"]["summary"]
    p3 = evaluate_checkpoints(one, data, "p3", seeds=(1111, 1112))
    conds = p3["checkpoints"]["teacher"]["1111"]
    assert list(conds) == list(P3_SETS) + [COMPLETE_SET]
    assert conds == p3["checkpoints"]["teacher"]["1112"]  # fixed sets draw nothing
    full = evaluate_checkpoints(one, data, "p2", seeds=(1111,), rates=(0.0,))
    assert conds[COMPLETE_SET] == pytest.approx(full["checkpoints"]["teacher"]["1111"]["r=0.0"])
    assert set(summarize(p3)["teacher"]["summary"]) == {"Avg. (6 sets)"}
    p5 = evaluate_checkpoints(one, data, "p5", seeds=(1111,), sets=["l", "{a,v}"])
    assert list(p5["checkpoints"]["teacher"]["1111"]) == ["{l}", "{a,v}"]
    assert condition_plan("p5", ["text", "audio", "vision"]) == [(s, {"availability": s[1:-1].replace(",", "")})
                                                                 for s in P5_SETS]


def test_two_modality_data_restrict_the_sets(tmp_path_factory, tmp_path):
    dims = {"text": 5, "audio": 4}  # like the MMSA MOSI copy: no vision at all
    data = make_dataset(tmp_path_factory, "mosi_text_audio", dims)
    ckpt = make_checkpoint(tmp_path / "la", dims)
    res = evaluate_checkpoints({"la": ckpt}, data, "p3", seeds=(1111,))
    assert list(res["checkpoints"]["la"]["1111"]) == ["{l}", "{a}", "{l,a}"]
    assert any("share only {l,a} (neither the models nor the test split have vision)" in n
               and "left out: {v}, {l,v}, {a,v}, {l,a,v}" in n for n in res["notes"]), res["notes"]
    paths = write_evaluation_report(res, tmp_path / "report")
    payload = json.loads(paths["json"].read_text())
    assert payload["results"]["requested_protocol"] == "p3"  # summarised as fixed patterns, and said so
    md = paths["markdown"].read_text()
    assert "Protocol P3 was requested" in md and "{l,a}" in md and paths["plot"].stat().st_size > 0
    with pytest.raises(ValueError, match=r"needs a modality that the model or the data lack"):
        evaluate_checkpoints({"la": ckpt}, data, "p5", seeds=(1111,), sets=["lv"])


def test_model_without_a_modality_of_the_data_restricts_p5_and_says_so(tiny, tmp_path):
    # Like ICT-MMMO: the data have text, audio and vision, the model (trained without text) reads audio and vision.
    data, _ = tiny
    ckpt = make_checkpoint(tmp_path / "av", {"audio": DIMS["audio"], "vision": DIMS["vision"]})
    res = evaluate_checkpoints({"av": ckpt}, data, "p5", seeds=(1111,))
    assert list(res["checkpoints"]["av"]["1111"]) == ["{a}", "{v}", "{a,v}"]
    note = next(n for n in res["notes"] if "share only" in n)
    assert "share only {a,v} (the models have no text encoder)" in note
    assert note.endswith("left out: {l}, {l,a}, {l,v}, {l,a,v}.")
    assert note in report_markdown(res)


def test_rows_without_the_kept_modality_are_left_out(tmp_path):
    dsd = make_demo_dataset(sizes=SIZES, dims=DIMS, seed=3)
    no_audio = set(range(0, SIZES["test"], 4))
    dsd["test"] = dsd["test"].map(lambda row, i: {"has_audio": i not in no_audio}, with_indices=True)
    ckpt = make_checkpoint(tmp_path / "m")
    res = evaluate_checkpoints({"m": ckpt}, dsd, "p5", seeds=(1111,), sets=["a", "la"], dataset_name="shown")
    assert res["rows_left_out"] == {"m": {"{a}": len(no_audio)}}
    assert "left out" in report_markdown(res)
    # the reference row is scored on the same rows: under {a} only those with audio
    ref = res["checkpoints"][res["reference"]]["1111"]
    assert ref["{a}"]["MAE"] != ref["{l,a}"]["MAE"]
    # a DatasetDict's spec comes from build_spec's defaults (labels in [-3, 3] here); the display name is only that
    assert res["dataset"] == "shown" and res["metric_set"] == "mmsa_pm3"
    assert any("Shown as 'shown' (--dataset-name)" in n for n in res["notes"])


def test_names_never_choose_the_metric_set(tmp_path_factory, tmp_path):
    # A folder named like ICT-MMMO, a card titled like it, a display name "mmmo": the spec ([-3, 3]) decides.
    out = tmp_path_factory.mktemp("mmmo_like") / "mmmo_prepared"
    dsd = make_demo_dataset(sizes=SIZES, dims=DIMS, seed=3)
    save_prepared(dsd, out, "# mmmo_features (prepared for hf_mmkd)\n", demo_spec(dsd, seed=3))
    ckpt = make_checkpoint(tmp_path / "m")
    res = evaluate_checkpoints({"m": ckpt}, out, "p2", seeds=(1111,), rates=(0.0,), dataset_name="mmmo")
    test = load_prepared(out)["test"]
    preds, labels = direct_predictions(ckpt, test)
    assert res["metric_set"] == "mmsa_pm3" and "label_shift" not in res
    assert res["checkpoints"]["m"]["1111"]["r=0.0"] == pytest.approx(regression_metrics(preds, labels), rel=1e-5)


def test_checkpoint_names():
    assert checkpoint_names(["/a/run1/student", "/a/run2/student"]) == ["run1/student", "run2/student"]
    assert checkpoint_names(["/a/teacher", "/a/student"]) == ["teacher", "student"]


def test_errors_name_the_problem(tiny, tmp_path):
    data, ckpts = tiny
    one = {"t": ckpts["teacher"]}
    with pytest.raises(ValueError, match="unknown protocol 'p9'"):
        evaluate_checkpoints(one, data, "p9")
    with pytest.raises(ValueError, match="p4 \(IMDer\) has missing rates MR in"):
        evaluate_checkpoints(one, data, "p4", rates=(0.05,))
    with pytest.raises(ValueError, match="has no 'dev' split"):
        evaluate_checkpoints(one, data, "p2", split="dev")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_checkpoints({"x": tmp_path / "nope"}, data, "p2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        evaluate_checkpoints({"x": tmp_path / "empty"}, data, "p2")
    (tmp_path / "empty" / "config.json").write_text(json.dumps({"model_type": "mmkd"}))
    with pytest.raises(FileNotFoundError, match="has no weights"):
        evaluate_checkpoints({"x": tmp_path / "empty"}, data, "p2")
    with pytest.raises(ValueError, match="availability sets apply to p3/p5"):
        evaluate_checkpoints(one, data, "p2", sets=["l"])
    with pytest.raises(ValueError, match="missing rate must be in"):
        evaluate_checkpoints(one, data, "p2", rates=[1.5])


def test_constant_reference_and_near_constant_by_hand():
    from test_dataset_spec import classes, spec

    from hf_mmkd.evaluation import constant_reference, near_constant

    ratings, three = spec(), classes()  # [0, 10]; neg / neu / pos
    assert constant_reference(ratings, [1.0, 7.0, 0.5, None, 3.0]) == ("constant: train median 2", 2.0)
    assert constant_reference(three, [2, 0, 2, 1]) == ("constant: majority class 'pos'", 2)
    labels = np.array([2.0, 5.0, 8.0])  # std 2.449
    why = near_constant(np.array([5.0, 5.001, 4.999]), labels, ratings)  # std 0.000816: 0.033% of it
    assert why == "prediction std 0.000816 is 0.033% of the labels' std 2.45"
    assert near_constant(np.array([4.0, 5.0, 6.0]), labels, ratings) is None
    logits = np.array([[0.0, 0.1, 2.0], [1.0, 0.0, 3.0]])
    assert near_constant(logits, np.array([0, 2]), three) == "predicts class 'pos' for every row"
    assert near_constant(logits, np.array([2, 2]), three) is None  # the labels are one class too


def test_an_in_memory_datasetdict_takes_the_checkpoint_spec(tmp_path):
    dsd = make_demo_dataset(sizes=SIZES, dims=DIMS, seed=3)
    for split in dsd:  # labels in [-0.3, 0.3]: on their own they would default to the range [-1, 1]
        dsd[split] = dsd[split].map(lambda row: {"label": row["label"] / 10})
    torch.manual_seed(0)
    config = MMKDConfig(**{f"{m}_feature_dim": d for m, d in DIMS.items()}, hidden_size=8, num_attention_heads=2,
                        dataset_spec=demo_spec(make_demo_dataset(sizes=SIZES, dims=DIMS, seed=3)).to_dict())
    MMKDForSentiment(config).save_pretrained(tmp_path / "m")
    res = evaluate_checkpoints({"m": tmp_path / "m"}, dsd, "p2", seeds=(1111,), rates=(0.0,))
    assert res["metric_set"] == "mmsa_pm3" and res["dataset"] == "hf_mmkd synthetic demo"
    assert evaluate_checkpoints({"m": make_checkpoint(tmp_path / "plain")}, dsd, "p2", seeds=(1111,),
                                rates=(0.0,))["metric_set"] == "mmsa_pm1"  # no spec anywhere: build_spec's defaults
