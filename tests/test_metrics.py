"""hf_mmkd.metrics: MMSA metricsTop.py formulas on hand-computed arrays, sklearn agreement, property tests,
the Trainer compute_metrics factory, the protocol aggregators and the offline `evaluate` module."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, mean_absolute_error
from transformers import EvalPrediction

from hf_mmkd.metrics import (
    P2_RATES,
    P3_SETS,
    auilc,
    balanced_sign_accuracy,
    classification_metrics,
    evaluate_module_path,
    generic_regression_metrics,
    make_compute_metrics,
    mean_over_rates,
    multiclass_acc,
    parse_condition,
    rate_condition,
    regression_metrics,
    seed_mean_std,
    set_condition,
    sims_metrics,
    six_set_mean,
)

# ------------------------------------------------------------------------------- MOSI / MOSEI, by hand

Y = np.array([-2.0, -0.6, 0.0, 0.0, 1.2, 2.8])
P = np.array([-1.4, 0.3, -0.2, 0.4, 1.6, 3.7])


def test_regression_hand_computed():
    m = regression_metrics(P, Y)
    # Has0: y>=0 -> [F,F,T,T,T,T]; p>=0 -> [F,T,F,T,T,T]: 4/6 agree.
    assert m["Has0_acc_2"] == pytest.approx(4 / 6)
    # weighted F1: class False (support 2): P=1/2, R=1/2, F1=0.5; class True (support 4): P=3/4, R=3/4
    assert m["Has0_F1_score"] == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    # Non0 drops y==0: y [-2,-0.6,1.2,2.8] > 0 -> [F,F,T,T]; p [-1.4,0.3,1.6,3.7] > 0 -> [F,T,T,T]: 3/4
    assert m["Non0_acc_2"] == pytest.approx(3 / 4)
    # F1: False: P=1, R=1/2 -> 2/3; True: P=2/3, R=1 -> 0.8; weighted by support 2/2
    assert m["Non0_F1_score"] == pytest.approx((2 / 3 + 0.8) / 2)
    # Acc-7: round(clip3(p)) = [-1,0,-0,0,2,3], round(y) = [-2,-1,0,0,1,3] -> 3 agree
    assert m["Mult_acc_7"] == pytest.approx(3 / 6)
    # Acc-5: clip2 -> p [-1,0,0,0,2,2], y [-2,-1,0,0,1,2] -> 3 agree
    assert m["Mult_acc_5"] == pytest.approx(3 / 6)
    # Acc-3: clip1 -> p round [-1,0,0,0,1,1], y round [-1,-1,0,0,1,1] -> 5 agree
    assert m["Mult_acc_3"] == pytest.approx(5 / 6)
    assert m["MAE"] == pytest.approx(np.mean([0.6, 0.9, 0.2, 0.4, 0.4, 0.9]))
    assert m["Corr"] == pytest.approx(np.corrcoef(P, Y)[0, 1])


def test_regression_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(-3, 3, 200) * 3) / 3
    y[:20] = 0.0
    p = y + rng.normal(0, 1, 200)
    m = regression_metrics(p, y)
    assert m["Has0_acc_2"] == pytest.approx(accuracy_score(y >= 0, p >= 0))
    assert m["Has0_F1_score"] == pytest.approx(f1_score(y >= 0, p >= 0, average="weighted"))
    nz = y != 0
    assert m["Non0_acc_2"] == pytest.approx(accuracy_score(y[nz] > 0, p[nz] > 0))
    assert m["Non0_F1_score"] == pytest.approx(f1_score(y[nz] > 0, p[nz] > 0, average="weighted"))
    assert m["MAE"] == pytest.approx(mean_absolute_error(y, p))
    assert m["Non0_bal_acc_2"] == pytest.approx(balanced_accuracy_score(y[nz] > 0, p[nz] > 0))
    assert m["Has0_bal_acc_2"] == pytest.approx(balanced_accuracy_score(y >= 0, p >= 0))


# MMSA's keys and values on (P, Y) as computed before the balanced accuracies were added (main at 9026b0d):
# adding keys must not change one bit of MMSA's numbers, nor add or drop one of its keys.
MMSA_ON_P_Y = {"Has0_acc_2": 0.6666666666666666, "Has0_F1_score": 0.6666666666666666, "Non0_acc_2": 0.75,
               "Non0_F1_score": 0.7333333333333334, "Mult_acc_3": 0.8333333333333334, "Mult_acc_5": 0.5,
               "Mult_acc_7": 0.5, "MAE": 0.5666666666666668, "Corr": 0.9729051519664164}


def test_mmsa_keys_unchanged_and_balanced_keys_added():
    m = regression_metrics(P, Y)
    assert set(m) == set(MMSA_ON_P_Y) | {"Has0_bal_acc_2", "Non0_bal_acc_2"}
    assert {k: m[k] for k in MMSA_ON_P_Y} == MMSA_ON_P_Y  # exact, not approx
    # Has0 (y >= 0 vs p >= 0): truth F F T T T T, guess F T F T T T: recall on non-negative 3/4, on negative 1/2
    assert m["Has0_bal_acc_2"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    # Non0 (y == 0 rows out): truth F F T T, guess F T T T: recall on positive 2/2, on negative 1/2
    assert m["Non0_bal_acc_2"] == pytest.approx((1 + 1 / 2) / 2)


def test_balanced_sign_accuracy_by_hand_on_an_unbalanced_split():
    # 4 positive, 2 negative non-zero labels (and one 0, left out): plain Acc-2 4/6, balanced (3/4 + 1/2) / 2
    y = np.array([2.0, 1.0, 0.4, 3.0, -1.0, -2.0, 0.0])
    p = np.array([1.0, -0.5, 0.2, 2.0, 0.5, -1.5, 0.3])
    m = regression_metrics(p, y)
    assert m["Non0_acc_2"] == pytest.approx(4 / 6)
    assert m["Non0_bal_acc_2"] == pytest.approx(0.625)
    # Has0: the 0 label is non-negative and p = 0.3 >= 0: recall on non-negative 4/5, on negative 1/2
    assert m["Has0_bal_acc_2"] == pytest.approx((4 / 5 + 1 / 2) / 2)
    assert balanced_sign_accuracy([True, True, True, False], [True, False, False, False]) == pytest.approx(
        (1 / 3 + 1) / 2)


@pytest.mark.parametrize("labels", [
    [-2.0, -0.6, 0.0, 0.0, 1.2, 2.8],            # balanced signs, two zeros
    [0.2, 0.4, 1.0, 2.0, 3.0, -0.2, 0.0],        # mostly positive
    [-3.0, -2.0, -1.4, -0.2, 0.6],               # mostly negative
])
@pytest.mark.parametrize("value", [-3.0, -0.4, 0.0, 0.5, 3.0])
def test_any_constant_predictor_scores_exactly_one_half(labels, value):
    y = np.array(labels)
    p = np.full_like(y, value)
    m = regression_metrics(p, y)
    assert m["Non0_bal_acc_2"] == 0.5 and m["Has0_bal_acc_2"] == 0.5  # exactly 50.0 in percent
    assert generic_regression_metrics(p + 10, y + 10, (10.0, 10.0))["Sign_bal_acc_2"] == 0.5
    assert sims_metrics(p / 3, y / 3)["Mult_bal_acc_2"] == 0.5
    # whereas plain Acc-2 of a constant is the share of the side it picks, e.g. 5/6 positive non-zero labels
    if labels[0] == 0.2 and value > 0:
        assert m["Non0_acc_2"] == pytest.approx(5 / 6)


def test_balanced_sign_accuracy_with_one_side_empty_is_nan():
    m = regression_metrics([0.3, -0.2, 1.0], [0.5, 1.0, 2.0])  # every label positive: no negative side
    assert math.isnan(m["Non0_bal_acc_2"]) and math.isnan(m["Has0_bal_acc_2"])
    assert m["Non0_acc_2"] == pytest.approx(2 / 3)  # MMSA's accuracy is still defined
    m = regression_metrics([0.3, -0.2], [-1.0, 0.0])  # Non0: negative only; Has0: one row on each side
    assert math.isnan(m["Non0_bal_acc_2"])
    assert m["Has0_bal_acc_2"] == pytest.approx((0 + 0) / 2)  # -1 predicted >= 0, 0 predicted < 0: both missed
    assert math.isnan(regression_metrics([0.3, -0.2], [0.0, 0.0])["Non0_bal_acc_2"])  # no non-zero label at all
    assert math.isnan(generic_regression_metrics([1.0, 9.0], [8.0, 9.0], (4, 6))["Sign_bal_acc_2"])
    assert math.isnan(sims_metrics([0.3, -0.2], [0.5, 0.9])["Mult_bal_acc_2"])
    assert math.isnan(balanced_sign_accuracy([], []))


def test_bankers_rounding_like_mmsa():
    # np.round: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0. Half-away-from-zero would give 1, 2, 3, -1.
    y = np.array([0.5, 1.5, 2.5, -0.5])
    p = np.array([0.0, 2.0, 2.0, 0.0])
    assert multiclass_acc(p, y) == 1.0
    assert regression_metrics(p, y)["Mult_acc_7"] == 1.0
    # Acc-5 clips 2.5 to 2 first; still all equal. Acc-3 clips 1.5 and 2.5 to 1 and p=2 to 1.
    assert regression_metrics(p, y)["Mult_acc_3"] == 1.0


def test_non0_all_zero_labels_is_nan():
    m = regression_metrics([0.3, -0.2], [0.0, 0.0])
    assert math.isnan(m["Non0_acc_2"]) and math.isnan(m["Non0_F1_score"])
    assert math.isnan(m["Corr"])  # constant labels
    assert m["Has0_acc_2"] == 0.5


def test_column_vector_and_torch_inputs():
    torch = pytest.importorskip("torch")
    a = regression_metrics(P.reshape(-1, 1), Y)
    b = regression_metrics(torch.tensor(P).view(-1, 1), torch.tensor(Y))
    assert a == pytest.approx(regression_metrics(P, Y)) and b == pytest.approx(a)


@pytest.mark.parametrize("preds, labels, match", [
    ([], [], "empty"),
    ([0.1, 0.2], [0.1], "length mismatch: 2 predictions but 1 labels"),
    ([0.1, float("nan")], [0.1, 0.2], "predictions contain 1 NaN"),
    ([0.1, 0.2], [float("inf"), 0.2], "labels contain 1 NaN/inf"),
    (np.zeros((2, 2)), [0.1, 0.2], r"shape \(N,\) or \(N, 1\)"),
])
def test_regression_errors(preds, labels, match):
    with pytest.raises(ValueError, match=match):
        regression_metrics(preds, labels)
    with pytest.raises(ValueError, match=match):
        sims_metrics(preds, labels)

# --------------------------------------------------------------------------------------------- SIMS


def test_sims_hand_computed():
    y = np.array([-1.0, -0.8, -0.2, 0.0, 0.2, 0.6, 1.0, 0.8])
    p = np.array([-1.5, -0.6, 0.05, 0.1, 0.3, 0.75, 0.4, 1.2])  # clipped: -1.5 -> -1, 1.2 -> 1
    m = sims_metrics(p, y)
    # Acc-2 bins [-1,0] / (0,1]: y [0,0,0,0,1,1,1,1], p [0,0,1,1,1,1,1,1] -> 6/8
    assert m["Mult_acc_2"] == pytest.approx(6 / 8)
    # Acc-3 bins <=-0.1 / (-0.1,0.1] / >0.1: y [0,0,0,1,2,2,2,2]; p [0,0,1,1,2,2,2,2] -> 7/8
    assert m["Mult_acc_3"] == pytest.approx(7 / 8)
    # Acc-5 edges -0.7,-0.1,0.1,0.7: y [0,0,1,2,3,3,4,4]; p [0,1,2,2,3,4,3,4] -> 4/8
    assert m["Mult_acc_5"] == pytest.approx(4 / 8)
    y2, p2 = np.array([0, 0, 0, 0, 1, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 1, 1, 1])
    assert m["F1_score"] == pytest.approx(f1_score(y2, p2, average="weighted"))
    pc = np.clip(p, -1, 1)  # SIMS MAE/Corr use the clipped predictions (MMSA)
    assert m["MAE"] == pytest.approx(np.mean(np.abs(pc - y)))
    assert m["Corr"] == pytest.approx(np.corrcoef(pc, y)[0, 1])


def test_sims_bin_edges_inclusive_on_the_right():
    # Right-closed bins (float32, as MMSA sees them): 0.0 is negative for Acc-2 and neutral for Acc-3/5;
    # -0.1 is in [-1, -0.1] (Acc-3) and (-0.7, -0.1] (Acc-5); 0.1 in (-0.1, 0.1]; -0.7 in [-1, -0.7]; 0.7 in (0.1, 0.7]
    y = np.array([0.0, -0.1, 0.1, -0.7, 0.7], dtype=np.float32)
    p = np.array([-0.05, -0.4, 0.05, -1.0, 0.2], dtype=np.float32)
    m = sims_metrics(p, y)
    assert m["Mult_acc_2"] == 1.0 and m["Mult_acc_3"] == 1.0 and m["Mult_acc_5"] == 1.0


def test_sims_float32_comparisons_like_mmsa():
    # float32(0.1) > 0.1 in float64; MMSA compares float32 tensors, where it equals the edge -> bin (-0.1, 0.1].
    y32 = np.array([0.1, 0.5], dtype=np.float32)
    p = np.array([0.0, 0.5], dtype=np.float32)
    assert sims_metrics(p, y32)["Mult_acc_3"] == 1.0
    assert sims_metrics(p.astype(np.float64), y32.astype(np.float64))["Mult_acc_3"] == 0.5

# ----------------------------------------------------------------------------------- classification


def test_classification_hand_computed_and_sklearn():
    y = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    p = np.array([0, 1, 1, 1, 2, 3, 0, 3])
    names = ["happy", "sad", "angry", "neutral"]
    m = classification_metrics(np.eye(4)[p] * 5.0, y, label_names=names)  # logits -> argmax
    assert m["Accuracy"] == m["WA"] == pytest.approx(6 / 8)
    # recalls: happy 1/2, sad 2/2, angry 1/1, neutral 2/3
    assert m["UA"] == pytest.approx((0.5 + 1 + 1 + 2 / 3) / 4)
    # happy: P=1/2 R=1/2 -> 0.5; sad: P=2/3 R=1 -> 0.8; angry 1; neutral P=1 R=2/3 -> 0.8
    assert [m[f"F1_{n}"] for n in names] == pytest.approx([0.5, 0.8, 1.0, 0.8])
    assert m["F1_score"] == pytest.approx(f1_score(y, p, average="weighted"))
    assert classification_metrics(p, y)["F1_3"] == pytest.approx(0.8)


def test_classification_macro_f1_and_balanced_accuracy_three_classes():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 1, 2, 1, 0, 2, 2])
    m = classification_metrics(p, y, label_names=["neg", "neu", "pos"])
    assert m["Accuracy"] == pytest.approx(5 / 8)
    # recalls: neg 2/4, neu 1/2, pos 2/2
    assert m["Balanced_acc"] == m["UA"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    # F1: neg P=2/3 R=1/2 -> 4/7; neu P=1/2 R=1/2 -> 1/2; pos P=2/3 R=1 -> 4/5
    assert m["Macro_F1"] == pytest.approx((4 / 7 + 1 / 2 + 4 / 5) / 3)
    assert m["Balanced_acc"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["Macro_F1"] == pytest.approx(f1_score(y, p, average="macro"))
    # a constant predictor: balanced accuracy 1 / (classes present); macro-F1 of the one class it predicts / 3
    const = classification_metrics(np.zeros_like(y), y)
    assert const["Balanced_acc"] == pytest.approx(1 / 3)
    assert const["Macro_F1"] == pytest.approx((2 * 0.5 * 1.0 / 1.5) / 3)  # neg: P=1/2 R=1 -> 2/3; others 0
    # a fourth class never true and never predicted has no recall and no F1: left out of both means
    four = classification_metrics(p, y, label_names=["neg", "neu", "pos", "other"])
    assert four["F1_other"] == 0.0
    assert four["Macro_F1"] == pytest.approx(m["Macro_F1"]) and four["Balanced_acc"] == pytest.approx(2 / 3)


def test_classification_errors():
    with pytest.raises(ValueError, match="length mismatch"):
        classification_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.zeros((0,)), [])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics(np.array([[0.1, np.nan]]), [0])
    with pytest.raises(ValueError, match="integer class ids"):
        classification_metrics([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="2 label_names for 3 classes"):
        classification_metrics(np.zeros((2, 3)), [0, 1], label_names=["a", "b"])

# ------------------------------------------------------------------------------------ compute_metrics


def test_make_compute_metrics_shapes_and_tuples():
    cm = make_compute_metrics("mmsa_pm3")
    ref = regression_metrics(P, Y)
    assert cm(EvalPrediction(predictions=P.reshape(-1, 1).astype(np.float32), label_ids=Y)) == pytest.approx(
        regression_metrics(P.astype(np.float32), Y))
    assert cm(EvalPrediction(predictions=(P, np.zeros((6, 8))), label_ids=Y)) == pytest.approx(ref)
    assert cm((P, Y)) == pytest.approx(ref)
    assert make_compute_metrics("mmsa_pm1")(EvalPrediction(predictions=P / 3, label_ids=Y / 3)) == pytest.approx(
        sims_metrics(P / 3, Y / 3))
    cls = make_compute_metrics("classification", label_names=["neg", "pos"])
    out = cls(EvalPrediction(predictions=np.array([[2.0, 1.0], [0.0, 3.0]]), label_ids=np.array([0, 0])))
    assert out["Accuracy"] == 0.5 and "F1_pos" in out
    with pytest.raises(ValueError, match="unknown metric set 'mosi'"):
        make_compute_metrics("mosi")  # data-set names are not metric sets
    with pytest.raises(ValueError, match="no label_ids"):
        cm(EvalPrediction(predictions=P, label_ids=None))
    with pytest.raises(ValueError, match="label_names only apply to classification"):
        make_compute_metrics("mmsa_pm3", label_names=["a", "b"])


def spec_of(label_range=None, class_names=None, neutral_band=None):
    from hf_mmkd.data.spec import DatasetSpec, default_neutral_band

    task = "classification" if class_names else "regression"
    band = None if class_names else (neutral_band or default_neutral_band(label_range))
    return DatasetSpec(name="t", task=task, label_column="label", label_range=label_range, neutral_band=band,
                       class_names=class_names, modalities={"audio": {"kind": "features", "dim": 2}}, source="t",
                       splits={"train": {"rows": 1, "audio": 1, "left_out": []}})


def test_the_spec_chooses_the_metric_set():
    assert make_compute_metrics(spec_of((-3, 3)))((P, Y)) == pytest.approx(regression_metrics(P, Y))
    assert make_compute_metrics(spec_of((-1, 1)))((P / 3, Y / 3)) == pytest.approx(sims_metrics(P / 3, Y / 3))
    classes = make_compute_metrics(spec_of(class_names=("neg", "neu", "pos")))
    out = classes((np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 1, 2])))
    assert out["Accuracy"] == 0.75 and set(out) >= {"F1_neg", "F1_neu", "F1_pos", "WA", "UA"}
    ratings = make_compute_metrics(spec_of((1, 5), neutral_band=(2.5, 3.5)))
    assert ratings.metric_set == "generic_regression"
    assert ratings((P + 3, Y + 3)) == pytest.approx(generic_regression_metrics(P + 3, Y + 3, (2.5, 3.5)))


def test_generic_regression_metrics_by_hand():
    # scale 0..10, neutral band [4, 6] (centre 5): labels 5 and 4 are neutral (left out of the sign metrics)
    p = np.array([1.0, 7.0, 6.5, 5.5, 9.0, 4.5])
    y = np.array([2.0, 8.0, 3.0, 5.0, 10.0, 4.0])
    m = generic_regression_metrics(p, y, (4.0, 6.0))
    # polar rows 0, 1, 2, 4: truth (y > 6) F T F T, guess (p > 5) F T T T -> 3 of 4
    assert m["Sign_acc_2"] == pytest.approx(0.75)
    # bands (below 4 / [4, 6] / above 6): y 0 2 0 1 2 1, p 0 2 2 1 2 1 -> 5 of 6
    assert m["Band_acc_3"] == pytest.approx(5 / 6)
    assert m["MAE"] == pytest.approx(np.mean([1, 1, 3.5, 0.5, 1, 0.5]))
    assert m["Corr"] == pytest.approx(np.corrcoef(p, y)[0, 1])
    # with the band [0, 0] the sign metrics are MMSA's Non0 Acc-2 / F1
    assert generic_regression_metrics(P, Y)["Sign_acc_2"] == pytest.approx(regression_metrics(P, Y)["Non0_acc_2"])
    assert generic_regression_metrics(P, Y)["Sign_F1_score"] == pytest.approx(
        regression_metrics(P, Y)["Non0_F1_score"])
    assert generic_regression_metrics(P, Y)["Sign_bal_acc_2"] == regression_metrics(P, Y)["Non0_bal_acc_2"]
    # balanced: truth F T F T, guess F T T T -> recall on positive 2/2, on negative 1/2
    assert m["Sign_bal_acc_2"] == pytest.approx(0.75)
    assert np.isnan(generic_regression_metrics([1.0, 9.0], [5.0, 5.0], (4, 6))["Sign_acc_2"])  # all neutral

# ---------------------------------------------------------------------------------------- properties

finite = st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=32)
pairs = st.integers(2, 40).flatmap(lambda n: st.tuples(arrays(np.float64, n, elements=finite),
                                                       arrays(np.float64, n, elements=finite)))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(y=arrays(np.float64, st.integers(2, 40), elements=finite))
def test_perfect_predictions(y):
    m = regression_metrics(y, y)
    for k in ("Has0_acc_2", "Has0_F1_score", "Mult_acc_3", "Mult_acc_5", "Mult_acc_7"):
        assert m[k] == 1.0
    assert m["MAE"] == 0.0
    if (y != 0).any():
        assert m["Non0_acc_2"] == 1.0 and m["Non0_F1_score"] == 1.0
    if (y > 0).any() and (y < 0).any():
        assert m["Non0_bal_acc_2"] == 1.0 and m["Has0_bal_acc_2"] == 1.0
    if np.ptp(y) > 0:
        assert m["Corr"] == pytest.approx(1.0)
    s = sims_metrics(y / 4, y / 4)
    assert s["Mult_acc_2"] == s["Mult_acc_3"] == s["Mult_acc_5"] == s["F1_score"] == 1.0 and s["MAE"] == 0.0


@FAST
@given(pair=pairs, extra=st.floats(0, 50))
def test_acc7_invariant_to_values_beyond_clip_range(pair, extra):
    p, y = pair
    pushed = np.where(p >= 3, p + extra, np.where(p <= -3, p - extra, p))
    a, b = regression_metrics(p, y), regression_metrics(pushed, y)
    assert a["Mult_acc_7"] == b["Mult_acc_7"]
    assert a["Has0_acc_2"] == b["Has0_acc_2"]
    assert a["Non0_acc_2"] == b["Non0_acc_2"] or (math.isnan(a["Non0_acc_2"]) and math.isnan(b["Non0_acc_2"]))


@FAST
@given(pair=pairs)
def test_has0_non0_relations(pair):
    p, y = pair
    p = np.where(p == 0, 1e-3, p)  # away from p == 0, where ">= 0" and "> 0" differ
    m = regression_metrics(p, y)
    nz = y != 0
    if nz.any():
        # Has0 hits = Non0 hits on the y != 0 rows + the y == 0 rows predicted non-negative
        assert m["Has0_acc_2"] * len(y) == pytest.approx(m["Non0_acc_2"] * nz.sum() + (p[~nz] >= 0).sum())
    if nz.all():
        assert m["Has0_acc_2"] == m["Non0_acc_2"] and m["Has0_F1_score"] == pytest.approx(m["Non0_F1_score"])


@FAST
@given(pair=pairs, seed=st.integers(0, 2**16))
def test_permutation_invariance(pair, seed):
    p, y = pair
    perm = np.random.default_rng(seed).permutation(len(y))
    a, b = regression_metrics(p, y), regression_metrics(p[perm], y[perm])
    assert a.keys() == b.keys()
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], abs=1e-9)
    sa, sb = sims_metrics(p / 4, y / 4), sims_metrics(p[perm] / 4, y[perm] / 4)
    assert sa["Mult_acc_5"] == sb["Mult_acc_5"] and sa["F1_score"] == pytest.approx(sb["F1_score"])


@FAST
@given(pair=pairs)
def test_bounds(pair):
    p, y = pair
    m = regression_metrics(p, y)
    for k, v in m.items():
        if k not in ("MAE", "Corr") and not math.isnan(v):
            assert 0.0 <= v <= 1.0
    assert m["MAE"] >= 0.0

# --------------------------------------------------------------------------------- conditions, aggregators


def test_condition_names():
    assert rate_condition(0.1 * 3) == "r=0.3" and rate_condition(0) == "r=0.0"
    assert set_condition(("audio", "text")) == "{l,a}" and set_condition((0, 1, 1)) == "{a,v}"
    assert parse_condition("r=0.50") == ("rate", 0.5)
    assert parse_condition("{v, t}") == ("set", "{l,v}")
    with pytest.raises(ValueError, match="unknown condition"):
        parse_condition("missing=audio")
    with pytest.raises(ValueError, match="unknown modality 'x'"):
        set_condition(["x"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rate_condition(1.5)


def test_auilc_trapezoid():
    res = {rate_condition(r): {"acc": 1.0 - r, "mae": 0.5 + r} for r in (0.0, 0.5, 1.0)}
    # acc: straight line 1 -> 0 over [0, 1]: area 0.5; mae 0.5 -> 1.5: area 1.0
    assert auilc(res) == pytest.approx({"acc": 0.5, "mae": 1.0})
    # uneven spacing: points (0, 1), (0.2, 1), (1, 0): 0.2*1 + 0.8*0.5 = 0.6
    res2 = {"r=1.0": {"acc": 0.0}, "r=0.0": {"acc": 1.0}, "r=0.2": {"acc": 1.0}}
    assert auilc(res2)["acc"] == pytest.approx(0.6)
    # SIMS range 0.5: constant 0.8 gives 0.4 (EMT-DLFR reports it unnormalised); normalize gives 0.8
    sims = {rate_condition(r): {"acc": 0.8} for r in np.arange(6) / 10}
    assert auilc(sims)["acc"] == pytest.approx(0.4)
    assert auilc(sims, normalize=True)["acc"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least two"):
        auilc({"r=0.0": {"acc": 1.0}})
    with pytest.raises(ValueError, match=r"metric\(s\) \['f1'\] missing"):
        auilc(res, metrics=["f1"])


def test_mean_over_rates_p2():
    res = {rate_condition(r): {"acc": 1.0 - r} for r in np.arange(11) / 10}  # includes r=1.0, ignored
    assert mean_over_rates(res) == pytest.approx({"acc": 1.0 - 0.45})
    del res["r=0.4"]
    with pytest.raises(ValueError, match=r"missing rate\(s\) \[0.4\]"):
        mean_over_rates(res)
    assert P2_RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def test_six_set_mean_p3():
    res = {s: {"f1": 0.1 * (i + 1)} for i, s in enumerate(P3_SETS)}
    res["{l,a,v}"] = {"f1": 0.9}
    out = six_set_mean(res)
    assert out["avg"]["f1"] == pytest.approx(0.35) and out["complete"]["f1"] == 0.9
    del res["{a,v}"]
    with pytest.raises(ValueError, match=r"\['\{a,v\}'\] missing"):
        six_set_mean(res)


def test_seed_mean_std():
    seeds = {1111: {"r=0.0": {"acc": 0.8, "mae": 1.0}}, 1112: {"r=0.0": {"acc": 0.6, "mae": 2.0}}}
    out = seed_mean_std(seeds)
    assert out["r=0.0"]["acc"] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})  # population std
    assert seed_mean_std(list(seeds.values()), ddof=1)["r=0.0"]["mae"]["std"] == pytest.approx(np.std([1, 2], ddof=1))
    with pytest.raises(ValueError, match="seed 1 has keys"):
        seed_mean_std([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError, match="no seeds"):
        seed_mean_std([])

# ------------------------------------------------------------------------------------- evaluate module


def test_evaluate_module_loads_offline():
    import evaluate

    mosi = evaluate.load(evaluate_module_path(), config_name="mmsa_pm3")
    got = mosi.compute(predictions=P.tolist(), references=Y.tolist())
    assert got == pytest.approx(regression_metrics(P.astype(np.float32), Y.astype(np.float32)))
    default = evaluate.load(evaluate_module_path())
    default.add_batch(predictions=P[:3], references=Y[:3])
    default.add_batch(predictions=P[3:], references=Y[3:])
    assert default.compute()["Has0_acc_2"] == pytest.approx(4 / 6)
    sims = evaluate.load(evaluate_module_path(), config_name="mmsa_pm1")
    assert sims.compute(predictions=[0.0, 0.5], references=[0.1, 0.5])["Mult_acc_3"] == 1.0  # float32 bins
    cls = evaluate.load(evaluate_module_path(), config_name="classification")
    assert cls.compute(predictions=[0, 1, 1], references=[0, 1, 0], label_names=["n", "p"])["UA"] == 0.75
    generic = evaluate.load(evaluate_module_path(), config_name="generic_regression")
    assert generic.compute(predictions=[6.0, 3.0], references=[9.0, 1.0], neutral_band=[4, 6])["Sign_acc_2"] == 1.0
