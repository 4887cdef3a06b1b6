"""Sentiment metrics exactly as MMSA computes them, a `compute_metrics` factory for the `Trainer`, and the
aggregators each missing-modality protocol uses to summarise a robustness curve.

Formulas follow thuiar/MMSA `src/MMSA/utils/metricsTop.py` (`MetricsTop`), the copy that MITR-DNet, EMT-DLFR,
LNLN and the rest of the field use. Key names are MMSA's, so numbers can be compared with MMSA logs directly:

- MOSI / MOSEI (`regression_metrics`): `Has0_acc_2`, `Has0_F1_score`, `Non0_acc_2`, `Non0_F1_score`,
  `Mult_acc_3`, `Mult_acc_5`, `Mult_acc_7`, `MAE`, `Corr` (MMSA computes Acc-3 but does not return it; we do),
  plus ours: `Has0_bal_acc_2`, `Non0_bal_acc_2`.
- SIMS (`sims_metrics`): `Mult_acc_2`, `Mult_acc_3`, `Mult_acc_5`, `F1_score`, `MAE`, `Corr`, plus ours:
  `Mult_bal_acc_2`.
- Classification, e.g. IEMOCAP (`classification_metrics`): `Accuracy`, `F1_score` (weighted), `F1_<class>`,
  `WA`, `UA`, plus `Macro_F1` and `Balanced_acc` (the same number as `UA`, under its plain name).
- Any other regression scale (`generic_regression_metrics`, ours): `Sign_acc_2`, `Sign_bal_acc_2`,
  `Sign_F1_score`, `Band_acc_3`, `MAE`, `Corr`, relative to the data set's neutral band.

Balanced sign accuracy (`<split>_bal_acc_2`, `balanced_sign_accuracy`) is ours, added beside each 2-class accuracy
of a sign-scored regression set, on exactly the rows and the sign rule of that accuracy: the mean of the recall on
the positive rows and the recall on the negative rows. Plain accuracy rewards a model for leaning to the majority
sign of the rows it is scored on; the balanced one does not: ANY constant predictor scores exactly 0.5 (50.0 in
percent), whatever the share of positive rows. It is reported because CMU-MOSI's standard validation split is
57% positive among its non-zero labels and its test split 42% (docs/methods.md#balanced-sign-accuracy). When one
of the two sides has no row, it is NaN (undefined, as `Non0_acc_2` is NaN when every label is 0): a recall on an
empty side does not exist, and scoring the other side alone would let a constant predictor reach 1.0. MMSA's own
keys are untouched: their values are the same with or without the balanced ones.

Which set scores a data set is its spec's `metric_set` (`hf_mmkd.data.spec.METRIC_SETS`: by task and label
range, never by name): `metric_fn(spec)` / `make_compute_metrics(spec)`.

Two deliberate differences from MMSA, neither changes a number beyond float noise:
- MMSA rounds the MOSI/MOSEI results to 4 decimals; we return full precision so that aggregating over rates and
  seeds does not accumulate rounding (round when printing).
- MAE and Corr are computed in float64. Threshold comparisons (Acc-2 signs, SIMS bins, clip-and-round) run in the
  dtype of the inputs, as MMSA does on float32 tensors: float32 0.1 lies in SIMS bin (-0.1, 0.1] in float32 but
  not in float64, so pass float32 arrays to reproduce MMSA's bins bit for bit (the `Trainer` does).

Condition names used by the aggregators (and by `hf_mmkd.report` / `hf_mmkd.hub`):
- a missing *rate* (P1, P2): ``"r=0.3"``, see `rate_condition`;
- an *availability set* (P3, P5): the available modalities in l, a, v order, e.g. ``"{l,a}"``; ``"{l,a,v}"`` is
  complete. See `set_condition`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score

__all__ = [
    "COMPLETE_SET",
    "P2_RATES",
    "P4_RATES",
    "P3_SETS",
    "P5_SETS",
    "KEY_METRICS",
    "auilc",
    "balanced_sign_accuracy",
    "classification_metrics",
    "evaluate_module_path",
    "generic_regression_metrics",
    "make_compute_metrics",
    "mean_over_rates",
    "metric_fn",
    "multiclass_acc",
    "parse_condition",
    "rate_condition",
    "regression_metrics",
    "seed_mean_std",
    "set_condition",
    "sims_metrics",
    "six_set_mean",
]

# --------------------------------------------------------------------------------------------- input checks


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """1-D float array (float32 stays float32, see module docstring); (B, 1) is flattened."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1) for regression metrics, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    elif arr.dtype.itemsize < 4:  # float16 eval outputs: compare in float32, as MMSA's float32 tensors would
        arr = arr.astype(np.float32)
    return arr


def _check_pair(preds: np.ndarray, labels: np.ndarray) -> None:
    if preds.shape[0] == 0 or labels.shape[0] == 0:
        raise ValueError(f"cannot compute metrics on empty arrays (predictions: {preds.shape[0]}, "
                         f"labels: {labels.shape[0]})")
    if preds.shape[0] != labels.shape[0]:
        raise ValueError(f"length mismatch: {preds.shape[0]} predictions but {labels.shape[0]} labels")
    for name, arr in (("predictions", preds), ("labels", labels)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} contain {int(bad.sum())} NaN/inf value(s) (first at index "
                             f"{int(np.flatnonzero(bad)[0])}); a diverged model or a bad label")


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    """`np.corrcoef(p, y)[0][1]` as in MMSA; NaN (no warning) when either side is constant."""
    p, y = p.astype(np.float64), y.astype(np.float64)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(p, y)[0][1])


def multiclass_acc(preds: np.ndarray, labels: np.ndarray) -> float:
    """MMSA `__multiclass_acc`: share of samples with `np.round(p) == np.round(y)`.

    `np.round` rounds half to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2), and so do we.
    """
    return float(np.sum(np.round(preds) == np.round(labels)) / float(len(labels)))


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # zero_division=0 is sklearn's default numeric result ("warn" means 0 plus a warning) without the warning.
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def balanced_sign_accuracy(truth: np.ndarray, guess: np.ndarray) -> float:
    """Mean of the recall on the positive rows (`truth` True) and the recall on the negative rows (`truth` False).

    `truth` / `guess` are boolean arrays (label on the positive side / prediction on the positive side), already
    restricted to the rows the accuracy is computed on. Any constant `guess` scores exactly 0.5: one recall is 1,
    the other 0. NaN when either side has no row (a recall on no rows is undefined; see the module docstring).
    """
    truth, guess = np.asarray(truth, dtype=bool), np.asarray(guess, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    recall_pos = np.count_nonzero(guess & truth) / n_pos
    recall_neg = np.count_nonzero(~guess & ~truth) / n_neg
    return float((recall_pos + recall_neg) / 2)


# ------------------------------------------------------------------------------------------- metric sets


def regression_metrics(predictions: Any, labels: Any) -> dict[str, float]:
    """MOSI / MOSEI regression metrics (MMSA `__eval_mosei_regression`), labels in [-3, 3].

    - Has0 Acc-2 / weighted F1: negative vs non-negative, `(y >= 0)` vs `(p >= 0)` over all samples.
    - Non0 Acc-2 / weighted F1: samples with `y == 0` dropped, then `(y > 0)` vs `(p > 0)`. NaN when every label
      is 0 (MMSA raises there).
    - Has0 / Non0 balanced Acc-2 (ours, `Has0_bal_acc_2`, `Non0_bal_acc_2`): `balanced_sign_accuracy` on the same
      rows and signs as Has0 / Non0 Acc-2 (any constant predictor: 0.5; NaN when one side has no row).
    - Acc-7 / Acc-5 / Acc-3: clip p and y to [-3, 3] / [-2, 2] / [-1, 1], round (half to even), accuracy.
    - MAE = mean |p - y| and Corr = Pearson r on the unclipped values (Corr is NaN if p or y is constant).
    """
    p, y = _as_float_array(predictions, "predictions"), _as_float_array(labels, "labels")
    _check_pair(p, y)
    out: dict[str, float] = {}
    binary_truth, binary_preds = y >= 0, p >= 0
    out["Has0_acc_2"] = float(accuracy_score(binary_truth, binary_preds))
    out["Has0_F1_score"] = _weighted_f1(binary_truth, binary_preds)
    out["Has0_bal_acc_2"] = balanced_sign_accuracy(binary_truth, binary_preds)
    non_zero = y != 0
    if non_zero.any():
        nz_truth, nz_preds = y[non_zero] > 0, p[non_zero] > 0
        out["Non0_acc_2"] = float(accuracy_score(nz_truth, nz_preds))
        out["Non0_F1_score"] = _weighted_f1(nz_truth, nz_preds)
        out["Non0_bal_acc_2"] = balanced_sign_accuracy(nz_truth, nz_preds)
    else:
        out["Non0_acc_2"] = out["Non0_F1_score"] = out["Non0_bal_acc_2"] = float("nan")
    for k, bound in ((3, 1.0), (5, 2.0), (7, 3.0)):
        out[f"Mult_acc_{k}"] = multiclass_acc(np.clip(p, -bound, bound), np.clip(y, -bound, bound))
    out["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64))))
    out["Corr"] = _pearson(p, y)
    return out


# SIMS bin edges from MMSA `__eval_sims_regression`; class i is (edges[i], edges[i + 1]].
_SIMS_EDGES = {
    2: (-1.01, 0.0, 1.01),                     # [-1, 0], (0, 1]
    3: (-1.01, -0.1, 0.1, 1.01),               # [-1, -0.1], (-0.1, 0.1], (0.1, 1]
    5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),    # [-1, -0.7], (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]
}


def _sims_bin(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Class index per value, bin i = (edges[i], edges[i+1]]; compared in x's dtype like MMSA."""
    out = x.copy()
    for i in range(len(edges) - 1):
        out[np.logical_and(x > edges[i], x <= edges[i + 1])] = i
    return out


def sims_metrics(predictions: Any, labels: Any) -> dict[str, float]:
    """CH-SIMS regression metrics (MMSA `__eval_sims_regression`), labels in [-1, 1].

    p and y are first clipped to [-1, 1]; *all* metrics, MAE and Corr included, use the clipped values.
    Acc-2 bins [-1, 0], (0, 1]; Acc-3 bins [-1, -0.1], (-0.1, 0.1], (0.1, 1]; Acc-5 bins [-1, -0.7],
    (-0.7, -0.1], (-0.1, 0.1], (0.1, 0.7], (0.7, 1]. `F1_score` is the weighted F1 of the 2-class bins.
    `Mult_bal_acc_2` (ours) is `balanced_sign_accuracy` of the Acc-2 bins (any constant predictor: 0.5).
    """
    p, y = _as_float_array(predictions, "predictions"), _as_float_array(labels, "labels")
    _check_pair(p, y)
    p, y = np.clip(p, -1.0, 1.0), np.clip(y, -1.0, 1.0)
    bins = {k: (_sims_bin(p, e), _sims_bin(y, e)) for k, e in _SIMS_EDGES.items()}
    out = {f"Mult_acc_{k}": multiclass_acc(bp, by) for k, (bp, by) in bins.items()}
    out["F1_score"] = _weighted_f1(bins[2][1], bins[2][0])
    out["Mult_bal_acc_2"] = balanced_sign_accuracy(bins[2][1] == 1, bins[2][0] == 1)
    out["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64))))
    out["Corr"] = _pearson(p, y)
    return out


def classification_metrics(predictions: Any, labels: Any, label_names: Sequence[str] | None = None,
                           ) -> dict[str, float]:
    """Single-label classification (e.g. IEMOCAP happy/sad/angry/neutral in the CorrKD/HRLF protocol).

    `predictions` are logits (N, C) (argmax is taken) or class ids (N,). Returns `Accuracy`, weighted
    `F1_score`, one-vs-rest `F1_<name>` per class (names from `label_names`, else the class id), `WA`
    (weighted accuracy = overall accuracy) and `UA` (unweighted accuracy = mean per-class recall), the
    GCNet/MMIN pair, and beside them:

    - `Balanced_acc`: balanced accuracy, the mean recall over the classes present in the labels (the same number
      as `UA` and sklearn's `balanced_accuracy_score`; a class absent from the labels has no recall and is left
      out). Any constant predictor scores 1 / (number of classes present), 0.5 with two.
    - `Macro_F1`: the unweighted mean of the per-class F1 over the classes present in the labels or the
      predictions (sklearn's `f1_score(average="macro")` default; a class never true and never predicted has
      no F1 and is left out, one predicted but never true counts with F1 0).
    """
    raw = np.asarray(predictions.detach().cpu().numpy() if hasattr(predictions, "detach") else predictions)
    y = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels).reshape(-1)
    if raw.ndim == 2 and raw.shape[1] > 1:
        if raw.shape[0] and not np.isfinite(raw).all():
            raise ValueError("predictions (logits) contain NaN/inf values")
        num_classes = raw.shape[1]
        p = raw.argmax(axis=1)
    else:
        p = raw.reshape(-1)
        num_classes = None
    if p.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError(f"cannot compute metrics on empty arrays (predictions: {p.shape[0]}, labels: {y.shape[0]})")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"length mismatch: {p.shape[0]} predictions but {y.shape[0]} labels")
    for name, arr in (("predictions", p), ("labels", y)):
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} contain NaN/inf values")
            if not np.all(arr == np.round(arr)):
                raise ValueError(f"{name} must be integer class ids (or logits of shape (N, C))")
    p, y = p.astype(np.int64), y.astype(np.int64)
    if num_classes is None:
        num_classes = int(max(p.max(), y.max())) + 1 if label_names is None else len(label_names)
    if label_names is not None and len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label_names for {num_classes} classes")
    names = list(label_names) if label_names is not None else [str(i) for i in range(num_classes)]
    classes = list(range(num_classes))
    out = {
        "Accuracy": float(accuracy_score(y, p)),
        "F1_score": float(f1_score(y, p, labels=classes, average="weighted", zero_division=0)),
    }
    per_class = f1_score(y, p, labels=classes, average=None, zero_division=0)
    out.update({f"F1_{n}": float(v) for n, v in zip(names, per_class)})
    out["WA"] = out["Accuracy"]
    present = np.unique(y)  # recall is undefined for classes absent from the labels; average the others
    out["UA"] = float(recall_score(y, p, labels=present, average="macro", zero_division=0))
    out["Balanced_acc"] = out["UA"]
    out["Macro_F1"] = float(f1_score(y, p, labels=np.union1d(y, p), average="macro", zero_division=0))
    return out


def generic_regression_metrics(predictions: Any, labels: Any, neutral_band: Sequence[float] = (0.0, 0.0),
                               ) -> dict[str, float]:
    """Regression metrics for labels on any scale, relative to the data set's neutral band [a, b] (closed).

    - `Sign_acc_2` / `Sign_F1_score` (weighted): labels inside the band are left out (as MMSA's Non0 Acc-2 leaves
      out y == 0), then "label above b" vs "prediction above the band's centre (a + b) / 2". With the band [0, 0]
      these are exactly MMSA's `Non0_acc_2` / `Non0_F1_score`. NaN when every label is neutral.
    - `Sign_bal_acc_2`: `balanced_sign_accuracy` on the same rows and signs (any constant predictor: 0.5; NaN
      when one side has no row); with the band [0, 0] it is `regression_metrics`' `Non0_bal_acc_2`.
    - `Band_acc_3`: 3-class accuracy of below a / inside [a, b] / above b, the same classes for labels and
      predictions (the classes `predict` names negative / neutral / positive).
    - `MAE` = mean |p - y| and `Corr` = Pearson r (NaN if p or y is constant), on the unclipped values.
    """
    p, y = _as_float_array(predictions, "predictions"), _as_float_array(labels, "labels")
    _check_pair(p, y)
    a, b = (float(v) for v in neutral_band)
    if not a <= b:
        raise ValueError(f"neutral_band must be [a, b] with a <= b, got {list(neutral_band)}")
    out: dict[str, float] = {}
    polar = (y < a) | (y > b)
    if polar.any():
        truth, guess = y[polar] > b, p[polar] > (a + b) / 2
        out["Sign_acc_2"] = float(accuracy_score(truth, guess))
        out["Sign_F1_score"] = _weighted_f1(truth, guess)
        out["Sign_bal_acc_2"] = balanced_sign_accuracy(truth, guess)
    else:
        out["Sign_acc_2"] = out["Sign_F1_score"] = out["Sign_bal_acc_2"] = float("nan")

    def band(x):
        return np.where(x < a, 0, np.where(x > b, 2, 1))

    out["Band_acc_3"] = float(np.mean(band(p) == band(y)))
    out["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64))))
    out["Corr"] = _pearson(p, y)
    return out


_METRIC_FNS: dict[str, Callable[..., dict[str, float]]] = {
    "mmsa_pm3": regression_metrics,
    "mmsa_pm1": sims_metrics,
    "classification": classification_metrics,
    "generic_regression": generic_regression_metrics,
}

# The metrics each set is summarised by (train.py's printout, plot panels, benchmark summaries); the balanced
# accuracy beside each accuracy.
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "mmsa_pm3": ("Non0_acc_2", "Non0_bal_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"),
    "mmsa_pm1": ("Mult_acc_2", "Mult_bal_acc_2", "F1_score", "Mult_acc_5", "MAE", "Corr"),
    "classification": ("Accuracy", "Balanced_acc", "Macro_F1", "F1_score"),
    "generic_regression": ("Sign_acc_2", "Sign_bal_acc_2", "Sign_F1_score", "Band_acc_3", "MAE", "Corr"),
}


def metric_fn(metric_set: Any, label_names: Sequence[str] | None = None,
              neutral_band: Sequence[float] | None = None) -> Callable[[Any, Any], dict[str, float]]:
    """`fn(predictions, labels) -> {metric: value}` of a metric set.

    `metric_set` is a data-set spec (`hf_mmkd.data.spec.DatasetSpec`: its `metric_set`, class names and neutral
    band are used) or a key of `hf_mmkd.data.spec.METRIC_SETS` (`mmsa_pm3`, `mmsa_pm1`, `classification`,
    `generic_regression`), with `label_names` (classification) and `neutral_band` (generic regression, default
    [0, 0]) given here.
    """
    if hasattr(metric_set, "metric_set"):  # a DatasetSpec
        label_names, neutral_band, metric_set = metric_set.class_names, metric_set.neutral_band, metric_set.metric_set
    try:
        fn = _METRIC_FNS[str(metric_set)]
    except KeyError:
        raise ValueError(f"unknown metric set {metric_set!r}; expected one of {sorted(_METRIC_FNS)}") from None
    if label_names is not None and fn is not classification_metrics:
        raise ValueError(f"label_names only apply to classification, not {metric_set!r}")
    if fn is classification_metrics:
        names = None if label_names is None else list(label_names)
        return lambda predictions, labels: classification_metrics(predictions, labels, label_names=names)
    if fn is generic_regression_metrics:
        band = (0.0, 0.0) if neutral_band is None else tuple(neutral_band)
        return lambda predictions, labels: generic_regression_metrics(predictions, labels, band)
    return fn


def make_compute_metrics(metric_set: Any = "mmsa_pm3", label_names: Sequence[str] | None = None,
                         neutral_band: Sequence[float] | None = None) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` callable for `transformers.Trainer`, scoring with `metric_fn(metric_set, ...)` (pass
    the data set's spec).

    It takes an `EvalPrediction` (or a `(predictions, label_ids)` tuple). `predictions` may be an array of
    shape (B,) / (B, 1) (regression) or (B, C) (classification logits), or a tuple whose first element is
    that array (models that also return hidden states). The Trainer prefixes the keys with `eval_`.
    """
    fn = metric_fn(metric_set, label_names, neutral_band)
    key = getattr(metric_set, "metric_set", metric_set)

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            preds, labels = eval_pred.predictions, eval_pred.label_ids
        else:
            preds, labels = eval_pred
        if isinstance(preds, (tuple, list)):
            preds = preds[0]
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        if labels is None:
            raise ValueError("EvalPrediction has no label_ids; pass labels to the model inputs")
        return fn(preds, labels)

    compute_metrics.metric_set = key
    compute_metrics.__name__ = f"compute_metrics_{key}"
    return compute_metrics


def evaluate_module_path() -> str:
    """Folder of the bundled `evaluate` module: `evaluate.load(hf_mmkd.metrics.evaluate_module_path())`."""
    return str(Path(__file__).resolve().parent / "metrics_module" / "mmsa_sentiment")


# ------------------------------------------------------------------------------------------ conditions

_MODALITY_ALIASES = {
    "l": "l", "t": "l", "text": "l", "language": "l",
    "a": "a", "audio": "a", "acoustic": "a",
    "v": "v", "vision": "v", "video": "v", "visual": "v",
}
_ORDER = "lav"


def rate_condition(rate: float) -> str:
    """Condition name of a missing rate: `rate_condition(0.30000000000000004) == "r=0.3"`."""
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"missing rate must be in [0, 1], got {rate}")
    return f"r={round(rate, 6)!r}"


def set_condition(available: Iterable[str] | Sequence[int]) -> str:
    """Condition name of an availability set, e.g. `"{l,a}"`.

    `available` holds modality names (l/t/text, a/audio, v/vision/video) or a 0/1 mask in (text, audio, vision)
    order, e.g. `(1, 1, 0)` as in `tests/tiny.SUBSETS`.
    """
    items = list(available)
    if items and all(isinstance(i, (int, np.integer, bool)) for i in items):
        if len(items) != 3:
            raise ValueError(f"a modality mask needs 3 entries (text, audio, vision), got {items}")
        letters = {m for m, on in zip(_ORDER, items) if on}
    else:
        try:
            letters = {_MODALITY_ALIASES[str(i).lower()] for i in items}
        except KeyError as e:
            raise ValueError(f"unknown modality {e.args[0]!r}; use l/a/v or text/audio/vision") from None
    if not letters:
        raise ValueError("an availability set needs at least one modality")
    return "{" + ",".join(m for m in _ORDER if m in letters) + "}"


def parse_condition(condition: str) -> tuple[str, Any]:
    """`("rate", 0.3)` for `"r=0.3"`, `("set", "{l,a}")` for an availability set (normalised)."""
    c = condition.strip()
    if c.startswith("r="):
        try:
            return "rate", float(c[2:])
        except ValueError:
            raise ValueError(f"bad rate condition {condition!r}; expected e.g. 'r=0.3'") from None
    if c.startswith("{") and c.endswith("}"):
        return "set", set_condition([m.strip() for m in c[1:-1].split(",") if m.strip()])
    raise ValueError(f"unknown condition {condition!r}; expected 'r=<rate>' or an availability set like '{{l,a}}'")


COMPLETE_SET = "{l,a,v}"
P2_RATES = tuple(round(0.1 * i, 1) for i in range(10))  # LNLN test rates 0.0 ... 0.9
P4_RATES = tuple(round(0.1 * i, 1) for i in range(1, 8))  # IMDer missing rates MR = 0.1 ... 0.7
P3_SETS = ("{l}", "{a}", "{v}", "{l,a}", "{l,v}", "{a,v}")  # CorrKD/HRLF "Avg." sets; {l,a,v} separately
P5_SETS = P3_SETS + (COMPLETE_SET,)

# ----------------------------------------------------------------------------------------- aggregators

Results = Mapping[str, Mapping[str, float]]  # {condition: {metric: value}}


def _rate_curve(results: Results) -> list[tuple[float, Mapping[str, float]]]:
    curve = [(v, results[c]) for c in results for kind, v in [parse_condition(c)] if kind == "rate"]
    curve.sort(key=lambda t: t[0])
    rates = [r for r, _ in curve]
    if len(set(round(r, 6) for r in rates)) != len(rates):
        raise ValueError(f"duplicate missing rates in {list(results)}")
    return curve


def _common_metrics(rows: Sequence[Mapping[str, float]], metrics: Iterable[str] | None, where: str) -> list[str]:
    if metrics is not None:
        metrics = list(metrics)
        for i, row in enumerate(rows):
            missing = [m for m in metrics if m not in row]
            if missing:
                raise ValueError(f"metric(s) {missing} missing from {where} entry {i}")
        return metrics
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    if not keys:
        raise ValueError(f"no metric is shared by all {where} entries")
    return keys


def auilc(results: Results, metrics: Iterable[str] | None = None, normalize: bool = False) -> dict[str, float]:
    """P1 (TFR-Net / EMT-DLFR / MITR-DNet): area under each metric-vs-missing-rate curve, trapezoid rule.

    Uses every `"r=..."` condition in `results` (at least two), sorted by rate: `np.trapezoid(values, rates)`.
    The area is *not* divided by the rate range, as EMT-DLFR reports it: over r in [0, 1] (MOSI/MOSEI) it is close
    to the mean over rates; over [0, 0.5] (SIMS) it is about half of it (SIMS Acc-2 AUILC 39.3 means ~78%).
    `normalize=True` divides by the range instead. Metrics default to those present at every rate.
    """
    curve = _rate_curve(results)
    if len(curve) < 2:
        raise ValueError(f"AUILC needs at least two missing rates, got {[r for r, _ in curve]}")
    rates = np.array([r for r, _ in curve])
    out = {}
    for m in _common_metrics([row for _, row in curve], metrics, "rate"):
        area = float(np.trapezoid([row[m] for _, row in curve], rates))
        out[m] = area / float(rates[-1] - rates[0]) if normalize else area
    return out


def mean_over_rates(results: Results, rates: Sequence[float] = P2_RATES,
                    metrics: Iterable[str] | None = None) -> dict[str, float]:
    """P2 (LNLN / P-RMF / TF-Mamba / SemMSA) "overall": the plain mean over the test rates 0.0, 0.1, ..., 0.9.
    Also P4 (IMDer) with `rates=P4_RATES`: the mean over the missing rates MR = 0.1, ..., 0.7.

    Every rate in `rates` must be present (an "r=1.0" entry is ignored by default, as LNLN stops at 0.9).
    """
    by_rate = {round(r, 6): row for r, row in _rate_curve(results)}
    missing = [r for r in rates if round(float(r), 6) not in by_rate]
    if missing:
        raise ValueError(f"missing rate(s) {missing} in results; have {sorted(by_rate)}")
    rows = [by_rate[round(float(r), 6)] for r in rates]
    return {m: float(np.mean([row[m] for row in rows])) for m in _common_metrics(rows, metrics, "rate")}


def six_set_mean(results: Results, metrics: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """P3 (CorrKD / HRLF) inter-modality summary: `{"avg": mean over the six incomplete sets {l}, {a}, {v},
    {l,a}, {l,v}, {a,v}, "complete": the {l,a,v} row}` ("complete" only when present; it is never averaged in).
    """
    by_set = {parse_condition(c)[1]: row for c, row in results.items() if parse_condition(c)[0] == "set"}
    missing = [s for s in P3_SETS if s not in by_set]
    if missing:
        raise ValueError(f"availability set(s) {missing} missing from results; have {sorted(by_set)}")
    rows = [by_set[s] for s in P3_SETS]
    keys = _common_metrics(rows, metrics, "availability-set")
    out = {"avg": {m: float(np.mean([row[m] for row in rows])) for m in keys}}
    if COMPLETE_SET in by_set:
        out["complete"] = {m: float(by_set[COMPLETE_SET][m]) for m in keys if m in by_set[COMPLETE_SET]}
    return out


def seed_mean_std(per_seed: Mapping[Any, Mapping[str, Any]] | Sequence[Mapping[str, Any]], ddof: int = 0,
                  ) -> dict[str, Any]:
    """Mean and standard deviation over seeds, keeping the nesting of the per-seed dicts.

    `per_seed` is `{seed: tree}` or `[tree, ...]` where each tree is a (nested) dict ending in numbers, e.g.
    `{condition: {metric: value}}`. Returns the same tree with each number replaced by
    `{"mean": m, "std": s, "n": n_seeds}`. `ddof=0` (population std, `np.std`) as EMT-DLFR's and MMSA's run
    scripts print it. Every seed must have the same keys.
    """
    trees = list(per_seed.values()) if isinstance(per_seed, Mapping) else list(per_seed)
    if not trees:
        raise ValueError("no seeds to aggregate")

    def merge(nodes: list[Any], path: str) -> Any:
        if all(isinstance(n, Mapping) for n in nodes):
            keys = list(nodes[0])
            for i, n in enumerate(nodes[1:], 1):
                if set(n) != set(keys):
                    raise ValueError(f"seed {i} has keys {sorted(n)} at {path or 'top level'}, seed 0 has "
                                     f"{sorted(keys)}")
            return {k: merge([n[k] for n in nodes], f"{path}/{k}") for k in keys}
        if any(isinstance(n, Mapping) for n in nodes):
            raise ValueError(f"seeds disagree on the structure at {path}")
        vals = np.asarray(nodes, dtype=np.float64)
        std = float(np.std(vals, ddof=ddof)) if len(vals) > ddof else float("nan")
        return {"mean": float(np.mean(vals)), "std": std, "n": len(vals)}

    return merge(trees, "")
