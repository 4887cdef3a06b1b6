"""The data-set spec: what a prepared data set declares about its labels and modalities.

Every converter (`dataset_scripts/prepare_mmsa.py`, `prepare_media.py`, `make_demo.py`, and the in-memory demo
of `train.py`) writes one `DatasetSpec` as `dataset_spec.json` in the root of the prepared folder, beside
`README.md` and `data/`. Everything downstream reads label meaning from it and from nothing else: training (task,
number of outputs, label column, head bias, the label bins of CorrKD / MM-CKD, validation metrics), evaluation
(the metric set, the constant reference), reports, plots, model cards and `predict` (through the copy that every
trained model carries in `MMKDConfig.dataset_spec`). No data-set name or path ever selects behaviour.

The JSON keys are fixed (`SPEC_KEYS`):

| key | value |
|---|---|
| `version` | 1 |
| `name` | display name (titles, cards); never used to choose behaviour |
| `task` | `"regression"` or `"classification"` |
| `label_column` | the prepared column holding the target (`label` for scores, `classification_label` for classes) |
| `label_range` | regression: `[lo, hi]`, the annotation scale; classification: null |
| `neutral_band` | regression: `[a, b]`, the closed interval of scores the data set calls neutral; classification: null |
| `class_names` | classification: the class names in id order; regression: null |
| `modalities` | `{"text"|"audio"|"vision": {"kind": "features"|"raw_text"|"token_ids"|"waveform"|"frames", "dim": int or null}}` |
| `source` | provenance (input file and its SHA-256, generator and seed, ...) |
| `splits` | `{split: {"rows": n, "<modality>": rows having it, "left_out": [ids of rows dropped for having no modality]}}` |

Defaults, when a converter is not told (`build_spec`); none of them comes from a name or a path:

- task: from the labels the input carries (MMSA: `regression_labels` or `classification_labels`; both present is
  refused unless the task is chosen, because MMSA's own files carry both).
- label range: the smallest whole-number interval holding every label, [floor(min), ceil(max)] over all splits
  (CMU-MOSI's scores give [-3, 3], ICT-MMMO's ratings [1, 5]). The converter prints it; pass the scale the
  annotators used (`--label-range`) when the data do not reach both ends of it.
- neutral band (`default_neutral_band`): the neutral class of the 3-class accuracy of the range's metric set,
  where MMSA defines one, so that "neutral" in `predict` means what Acc-3 scores as neutral:
  [-3, 3] -> [-0.5, 0.5] (MMSA's Acc-3 clips to [-1, 1] and rounds: class 0 is [-0.5, 0.5]);
  [-1, 1] -> [-0.1, 0.1] (MMSA's CH-SIMS Acc-3 bins: neutral is (-0.1, 0.1]);
  any other [lo, hi] -> the middle seventh of the range, centre +- (hi - lo) / 12, which is the [-3, 3] rule
  carried over by the affine map of [lo, hi] onto [-3, 3] (e.g. ratings [1, 5] -> [2.667, 3.333]).
  `--neutral-band A B` overrides it (`0 0`: only the exact midpoint is neutral).
- class names: `"0"`, `"1"`, ... (pass `--class-names` to name them).

Derived properties read downstream: `num_labels`, `metric_set` (see `METRIC_SETS`), `neutral_point`,
`label_bin_mapping` (how CorrKD / MM-CKD map labels onto the 7 bins they are defined on), `label_description`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SPEC_FILE = "dataset_spec.json"
SPEC_VERSION = 1
SPEC_KEYS = ("version", "name", "task", "label_column", "label_range", "neutral_band", "class_names", "modalities",
             "source", "splits")
TASKS = ("regression", "classification")
MODALITIES = ("text", "audio", "vision")
MODALITY_KINDS = ("features", "raw_text", "token_ids", "waveform", "frames")
LABEL_COLUMNS = {"regression": "label", "classification": "classification_label"}  # the prepared schema's columns

# The metric set of a spec (`DatasetSpec.metric_set`), chosen by task and label range only.
METRIC_SETS = {
    "mmsa_pm3": "MMSA's regression metrics for scores in [-3, 3] (utils/metricsTop.py `__eval_mosei_regression`): "
                "Has0/Non0 Acc-2 and weighted F1, Acc-3/5/7 by clip-and-round, MAE, Pearson Corr; beside them, ours: "
                "Has0/Non0 balanced Acc-2 (mean of the recalls on the two signs; any constant predictor scores 50)",
    "mmsa_pm1": "MMSA's regression metrics for scores in [-1, 1] (utils/metricsTop.py `__eval_sims_regression`): "
                "Acc-2/3/5 on MMSA's bins, weighted F1, MAE and Corr on values clipped to [-1, 1]; beside them, ours: "
                "balanced Acc-2 (mean of the recalls on the two Acc-2 bins; any constant predictor scores 50)",
    "classification": "accuracy, balanced accuracy (the mean per-class recall), macro and weighted F1, per-class F1, "
                      "WA (weighted accuracy) and UA (unweighted accuracy: the balanced accuracy under GCNet/MMIN's "
                      "name)",
    "generic_regression": "MAE, Pearson Corr, sign accuracy and weighted F1 relative to the neutral band (labels "
                          "inside the band left out, as MMSA's Non0 Acc-2 leaves out 0), its balanced version (mean of "
                          "the recalls on the two signs; any constant predictor scores 50), and 3-class accuracy "
                          "below / inside / above the band",
}
_PM3, _PM1 = (-3.0, 3.0), (-1.0, 1.0)
_SPLIT_ORDER = ("train", "validation", "test")
_BIN_SCALE = _PM3  # CorrKD / MM-CKD's label bins are defined on [-3, 3] (7 classes, MMSA's Acc-7)


def label_range_flag(values: Sequence[float] | None, flag: str = "--label-range") -> tuple[float, float] | None:
    """A command's `--label-range LOW HIGH`: two finite numbers, LOW below HIGH (checked before any row is read,
    so that a reversed or NaN range is named as such, not as every label lying outside it); None when not given."""
    if not values:
        return None
    lo, hi = (float(v) for v in values)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{flag} {lo:g} {hi:g}: expected two finite numbers LOW HIGH with LOW below HIGH")
    return lo, hi


def default_neutral_band(label_range: Sequence[float]) -> tuple[float, float]:
    """The neutral band of a label range when none is given; see the module docstring for the rule and why."""
    lo, hi = float(label_range[0]), float(label_range[1])
    if (lo, hi) == _PM3:
        return (-0.5, 0.5)
    if (lo, hi) == _PM1:
        return (-0.1, 0.1)
    centre, half = (lo + hi) / 2, (hi - lo) / 12
    return (round(centre - half, 6), round(centre + half, 6))


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file (or object) and the key."""


def _fail(where: str, key: str, problem: str):
    raise SpecError(f"{where}: key {key!r}: {problem}")


def _pair(where: str, key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        _fail(where, key, f"expected [low, high], got {value!r}")
    try:
        lo, hi = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        _fail(where, key, f"expected two numbers, got {value!r}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        _fail(where, key, f"expected finite numbers, got {value!r}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a prepared data set declares about itself (the `dataset_spec.json` keys; see the module docstring).

    Build one with `build_spec` (converters) or `DatasetSpec.from_dict` (validated); `to_dict()` gives the JSON
    object, which `MMKDConfig.dataset_spec` stores.
    """

    name: str
    task: str
    label_column: str
    label_range: tuple[float, float] | None
    neutral_band: tuple[float, float] | None
    class_names: tuple[str, ...] | None
    modalities: Mapping[str, Mapping[str, Any]]
    source: str
    splits: Mapping[str, Mapping[str, Any]]
    version: int = SPEC_VERSION

    def __post_init__(self):
        checked = DatasetSpec.from_dict(self.to_dict(), where=f"data-set spec {self.name!r}")
        for f in dataclasses.fields(self):  # the normalised values (tuples of floats, plain dicts)
            object.__setattr__(self, f.name, getattr(checked, f.name))

    # ------------------------------------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in `SPEC_KEYS` order."""
        return {
            "version": self.version, "name": self.name, "task": self.task, "label_column": self.label_column,
            "label_range": None if self.label_range is None else [float(x) for x in self.label_range],
            "neutral_band": None if self.neutral_band is None else [float(x) for x in self.neutral_band],
            "class_names": None if self.class_names is None else list(self.class_names),
            "modalities": {m: dict(v) for m, v in self.modalities.items()},
            "source": self.source,
            "splits": {s: {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()}
                       for s, d in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = SPEC_FILE) -> DatasetSpec:
        """A validated spec from its JSON object; a problem raises `SpecError` naming `where` and the key."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            _fail(where, unknown[0], f"unknown key (the keys are {', '.join(SPEC_KEYS)})")
        missing = [k for k in SPEC_KEYS if k not in data]
        if missing:
            _fail(where, missing[0], "missing")
        if data["version"] != SPEC_VERSION:
            _fail(where, "version", f"this hf_mmkd reads version {SPEC_VERSION}, got {data['version']!r}")
        for key in ("name", "label_column", "source"):
            if not isinstance(data[key], str) or (key != "source" and not data[key].strip()):
                _fail(where, key, f"expected a non-empty string, got {data[key]!r}")
        task = data["task"]
        if task not in TASKS:
            _fail(where, "task", f"expected 'regression' or 'classification', got {task!r}")
        label_range = neutral_band = class_names = None
        if task == "regression":
            if data["label_range"] is None:
                _fail(where, "label_range", "a regression data set needs its label range [low, high]")
            label_range = _pair(where, "label_range", data["label_range"])
            if not label_range[0] < label_range[1]:
                _fail(where, "label_range", f"low must be below high, got {list(data['label_range'])}")
            if data["neutral_band"] is None:
                _fail(where, "neutral_band", "a regression data set needs its neutral band [a, b] (a == b allowed)")
            neutral_band = _pair(where, "neutral_band", data["neutral_band"])
            if not label_range[0] <= neutral_band[0] <= neutral_band[1] <= label_range[1]:
                _fail(where, "neutral_band", f"expected low <= a <= b <= high inside the label range "
                                             f"{list(label_range)}, got {list(data['neutral_band'])}")
            if data["class_names"] is not None:
                _fail(where, "class_names", "must be null for a regression data set")
        else:
            for key in ("label_range", "neutral_band"):
                if data[key] is not None:
                    _fail(where, key, "must be null for a classification data set")
            names = data["class_names"]
            if not isinstance(names, (list, tuple)) or len(names) < 2:
                _fail(where, "class_names", f"a classification data set needs at least 2 class names, got {names!r}")
            if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
                _fail(where, "class_names", f"expected distinct non-empty strings, got {list(names)}")
            class_names = tuple(names)
        modalities = data["modalities"]
        if not isinstance(modalities, Mapping) or not modalities:
            _fail(where, "modalities", f"expected a non-empty object {{modality: {{kind, dim}}}}, got {modalities!r}")
        for m, entry in modalities.items():
            if m not in MODALITIES:
                _fail(where, "modalities", f"unknown modality {m!r} (expected {', '.join(MODALITIES)})")
            if not isinstance(entry, Mapping) or set(entry) != {"kind", "dim"}:
                _fail(where, "modalities", f"{m}: expected {{'kind': ..., 'dim': ...}}, got {entry!r}")
            if entry["kind"] not in MODALITY_KINDS:
                _fail(where, "modalities", f"{m}: kind must be one of {', '.join(MODALITY_KINDS)}, got {entry['kind']!r}")
            dim = entry["dim"]
            if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0):
                _fail(where, "modalities", f"{m}: dim must be a positive integer or null, got {dim!r}")
        splits = data["splits"]
        if not isinstance(splits, Mapping) or not splits:
            _fail(where, "splits", f"expected a non-empty object {{split: counts}}, got {splits!r}")
        for split, counts in splits.items():
            if not isinstance(counts, Mapping) or "rows" not in counts or "left_out" not in counts:
                _fail(where, "splits", f"{split}: expected {{'rows': n, <modality>: n, 'left_out': [ids]}}")
            for k, v in counts.items():
                if k == "left_out":
                    if not isinstance(v, (list, tuple)) or not all(isinstance(i, str) for i in v):
                        _fail(where, "splits", f"{split}: left_out must be a list of row ids, got {v!r}")
                elif k == "rows" or k in MODALITIES:
                    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                        _fail(where, "splits", f"{split}: {k} must be a row count >= 0, got {v!r}")
                else:
                    _fail(where, "splits", f"{split}: unknown entry {k!r}")
        return cls.__new__(cls)._init(
            name=data["name"], task=task, label_column=data["label_column"], label_range=label_range,
            neutral_band=neutral_band, class_names=class_names,
            modalities={m: {"kind": modalities[m]["kind"], "dim": modalities[m]["dim"]}
                        for m in MODALITIES if m in modalities},  # canonical order (config.json sorts keys)
            source=data["source"],
            splits={s: {k: (list(v) if k == "left_out" else v) for k, v in splits[s].items()}
                    for s in sorted(splits, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else 3, s))})

    def _init(self, **fields) -> DatasetSpec:
        """Fill a validated instance without validating again (frozen dataclass)."""
        for k, v in {**fields, "version": SPEC_VERSION}.items():
            object.__setattr__(self, k, v)
        return self

    # ------------------------------------------------------------------------------------ what it means

    @property
    def num_labels(self) -> int:
        """Outputs of the model's head: 1 for regression, the number of classes for classification."""
        return 1 if self.task == "regression" else len(self.class_names)

    @property
    def metric_set(self) -> str:
        """The key of `METRIC_SETS` that scores this data set: by task and label range, never by name."""
        if self.task == "classification":
            return "classification"
        if tuple(self.label_range) == _PM3:
            return "mmsa_pm3"
        if tuple(self.label_range) == _PM1:
            return "mmsa_pm1"
        return "generic_regression"

    @property
    def neutral_point(self) -> float | None:
        """Regression: the centre of the neutral band (where a regression head starts); None for classes."""
        return None if self.neutral_band is None else (self.neutral_band[0] + self.neutral_band[1]) / 2

    @property
    def label_bin_mapping(self) -> tuple[float, float]:
        """`(shift, scale)` such that `(y + shift) * scale` maps the label range affinely onto [-3, 3], where
        CorrKD's and MM-CKD's label bins are defined (`hf_mmkd.distillation.functional.class_targets`): the
        identity (0, 1) for [-3, 3], so MOSI-scale data bin exactly as before; (-3, 1.5) for ratings [1, 5]."""
        if self.task != "regression":
            return (0.0, 1.0)
        lo, hi = self.label_range
        return (-(lo + hi) / 2 + 0.0, (_BIN_SCALE[1] - _BIN_SCALE[0]) / (hi - lo))

    @property
    def label_description(self) -> str:
        """What a label means, in words (cards, reports, errors)."""
        if self.task == "classification":
            return f"{len(self.class_names)} classes (" + ", ".join(
                f"{i} {n}" for i, n in enumerate(self.class_names)) + ")"
        (lo, hi), (a, b) = self.label_range, self.neutral_band
        return (f"a score in [{lo:g}, {hi:g}]; scores in [{a:g}, {b:g}] are neutral, below negative, above "
                "positive")

    def check_labels_match(self, other: Mapping[str, Any] | DatasetSpec | None, what: str) -> None:
        """Raise ValueError unless `other` (e.g. a checkpoint's `config.dataset_spec`, described by `what`) has the
        same label meaning: task, label range, class names. None (a checkpoint without a spec) passes."""
        if other is None:
            return
        theirs = other if isinstance(other, DatasetSpec) else DatasetSpec.from_dict(other, where=what)
        same = (theirs.task == self.task and theirs.label_range == self.label_range
                and theirs.class_names == self.class_names)
        if not same:
            raise ValueError(f"{what} was trained on {theirs.name!r}, whose labels are {theirs.label_description}, "
                             f"but {self.name!r} has labels that are {self.label_description}: its predictions "
                             "cannot be scored against these labels")


# ------------------------------------------------------------------------------------------ building one


def _modality_entry(dataset_dict, m: str) -> dict[str, Any] | None:
    """The spec entry of modality m from the prepared columns (the one the default model reads first)."""
    columns = set().union(*(set(d.column_names) for d in dataset_dict.values()))
    if f"{m}_features" in columns:
        dim = None
        for d in dataset_dict.values():
            shape = getattr(d.features.get(f"{m}_features"), "shape", None)
            if shape is not None and shape[-1] is not None:
                dim = int(shape[-1])
        return {"kind": "features", "dim": dim}
    kind = {"text": ("raw_text", "raw_text") if "raw_text" in columns else ("text_input_ids", "token_ids"),
            "audio": ("audio", "waveform"), "vision": ("frames", "frames")}[m]
    return {"kind": kind[1], "dim": None} if kind[0] in columns else None


def _labels(dataset, column: str) -> list:
    return [y for y in dataset[column] if y is not None] if column in dataset.column_names else []


def build_spec(dataset_dict, *, name: str, source: str, task: str | None = None, label_column: str | None = None,
               label_range: Sequence[float] | None = None, neutral_band: Sequence[float] | None = None,
               class_names: Sequence[str] | None = None,
               left_out: Mapping[str, Sequence[str]] | None = None) -> DatasetSpec:
    """The spec of a prepared `DatasetDict`, from its columns plus what the caller declares.

    `task` defaults to the label column the data have (`label`: regression, `classification_label`:
    classification; both: an error asking to choose). Label range, neutral band and class names default as the
    module docstring says. Modalities and per-split counts are read from the columns and `has_<modality>` flags;
    `left_out` lists the ids of rows a converter dropped for having no modality. Labels are checked: regression
    labels must lie in the range, class ids in [0, number of classes); an error names the split and the row id.
    """
    splits = list(dataset_dict)
    columns = set().union(*(set(dataset_dict[s].column_names) for s in splits))
    if task is None:
        have = [t for t in TASKS if LABEL_COLUMNS[t] in columns]
        if len(have) != 1:
            raise ValueError("the data set has " + ("both a regression 'label' and a 'classification_label' column"
                             if have else "no label column ('label' or 'classification_label')")
                             + ": say which task it is (task='regression' or 'classification')")
        task = have[0]
    if task not in TASKS:
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    label_column = label_column or LABEL_COLUMNS[task]
    for s in splits:
        if label_column not in dataset_dict[s].column_names:
            raise ValueError(f"split {s!r} has no label column {label_column!r}")
    values = {s: _labels(dataset_dict[s], label_column) for s in splits}
    every = [float(y) for v in values.values() for y in v]
    if not every:
        raise ValueError(f"no split has a label in column {label_column!r}")
    for s in splits:
        _check_values(dataset_dict[s], s, label_column, lambda y: math.isfinite(y) and abs(y) <= MAX_LABEL,
                      f"is not finite or beyond +-{MAX_LABEL:g} (a broken value, not a score on any scale)")
    if task == "regression":
        if class_names is not None:
            raise ValueError("class names only apply to classification")
        if label_range is None:
            label_range = (math.floor(min(every)), math.ceil(max(every)))
            if label_range[0] == label_range[1]:
                raise ValueError(f"every label is {label_range[0]:g}: give the label range of the scale")
        lo, hi = float(label_range[0]), float(label_range[1])
        band = default_neutral_band((lo, hi)) if neutral_band is None else tuple(float(x) for x in neutral_band)
        for s in splits:
            _check_values(dataset_dict[s], s, label_column, lambda y: lo <= y <= hi,
                          f"lies outside the label range [{lo:g}, {hi:g}]")
        label_range, neutral_band, class_names = (lo, hi), band, None
    else:
        if label_range is not None or neutral_band is not None:
            raise ValueError("a label range and a neutral band only apply to regression")
        if any(y != round(y) or y < 0 for y in every):
            bad = next(y for y in every if y != round(y) or y < 0)
            raise ValueError(f"class label {bad:g} is not a class id (a whole number >= 0)")
        n = int(max(every)) + 1
        class_names = [str(i) for i in range(n)] if class_names is None else [str(c) for c in class_names]
        for s in splits:
            _check_values(dataset_dict[s], s, label_column, lambda y: 0 <= y < len(class_names),
                          f"is not a class id in [0, {len(class_names) - 1}] ({len(class_names)} class names)")
    modalities = {m: e for m in MODALITIES if (e := _modality_entry(dataset_dict, m)) is not None
                  and any(any(d[f"has_{m}"]) for d in dataset_dict.values() if f"has_{m}" in d.column_names)}
    counts = {}
    for s in splits:
        d = dataset_dict[s]
        counts[s] = {"rows": len(d), **{m: int(sum(d[f"has_{m}"])) for m in modalities
                                        if f"has_{m}" in d.column_names},
                     "left_out": [str(i) for i in (left_out or {}).get(s, [])]}
    return DatasetSpec(name=name, task=task, label_column=label_column, label_range=label_range,
                       neutral_band=neutral_band, class_names=None if class_names is None else tuple(class_names),
                       modalities=modalities, source=source, splits=counts)


# Labels beyond this magnitude are broken values (a 1e30 from an overflow), not scores on any annotation scale.
MAX_LABEL = 1e6


def _check_values(dataset, split: str, column: str, ok, problem: str) -> None:
    ids = dataset["id"] if "id" in dataset.column_names else None
    for i, y in enumerate(dataset[column]):
        if y is not None and not ok(float(y)):
            row = f"id {ids[i]!r}" if ids is not None else f"row {i}"
            raise ValueError(f"split {split!r}, {row}: label {float(y):g} {problem}")


def spec_markdown(spec: DatasetSpec) -> str:
    """The dataset card's section on the spec: labels, metric set, modalities, rows per split, rows left out."""
    mods = list(spec.modalities)
    lines = ["## Labels and modalities (`dataset_spec.json`)", "",
             f"- Task: **{spec.task}**, label column `{spec.label_column}`: {spec.label_description}.",
             f"- Metric set `{spec.metric_set}`: {METRIC_SETS[spec.metric_set]}.",
             "- Modalities: " + ", ".join(f"{m} ({e['kind']}" + (f", {e['dim']}-d)" if e["dim"] else ")")
                                          for m, e in spec.modalities.items()) + ".",
             f"- Source: {spec.source}", "",
             "| split | rows | " + " | ".join(f"with {m}" for m in mods) + " | left out (no modality) |",
             "|---|---|" + "---|" * len(mods) + "---|"]
    for split, c in spec.splits.items():
        lines.append(f"| {split} | {c['rows']} | " + " | ".join(str(c.get(m, 0)) for m in mods)
                     + f" | {len(c['left_out'])} |")
    left = {s: c["left_out"] for s, c in spec.splits.items() if c["left_out"]}
    if left:
        lines += ["", "Rows left out because they have no modality at all (ids):", ""]
        lines += [f"- {s}: " + ", ".join(f"`{i}`" for i in ids[:50]) + (f" and {len(ids) - 50} more (all in "
                  f"`{SPEC_FILE}`)" if len(ids) > 50 else "") for s, ids in left.items()]
    return "\n".join(lines) + "\n"


def split_summary(spec: DatasetSpec) -> list[str]:
    """One line per split for a converter's stdout: rows, rows per modality, rows left out."""
    return [f"{s}: {c['rows']} rows, " + ", ".join(f"with {m} {c.get(m, 0)}" for m in spec.modalities)
            + f"; {len(c['left_out'])} left out (no modality)" for s, c in spec.splits.items()]


def add_spec_arguments(parser) -> None:
    """The converters' flags that declare what the labels mean (`dataset_scripts/prepare_*.py`)."""
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="what the labels are (default: the kind of labels the input has; required when it has "
                             "both)")
    parser.add_argument("--label-range", nargs=2, type=float, metavar=("LO", "HI"), default=None,
                        help="regression: the label scale [LO, HI] (e.g. -3 3, -1 1, 1 5); labels outside it are "
                             "refused, never clipped. Default: [floor(min), ceil(max)] of the labels")
    parser.add_argument("--neutral-band", nargs=2, type=float, metavar=("A", "B"), default=None,
                        help="regression: scores in [A, B] are neutral (default from the range: [-0.5, 0.5] for "
                             "[-3, 3], [-0.1, 0.1] for [-1, 1], else the middle seventh of the range)")
    parser.add_argument("--class-names", nargs="+", default=None, metavar="NAME",
                        help="classification: the class names in id order (default: 0, 1, ...)")
    parser.add_argument("--keep-rows-without-modality", action="store_true",
                        help="keep rows that have no modality at all (default: leave them out and list their ids "
                             "in the card and dataset_spec.json); training and evaluation then skip them")


# ----------------------------------------------------------------------------------------- file and loading


def save_spec(spec: DatasetSpec, folder: str | os.PathLike) -> Path:
    """Write `folder/dataset_spec.json` atomically (`hf_mmkd.io.atomic_write`); return its path."""
    from hf_mmkd.io import atomic_write

    return atomic_write(Path(folder) / SPEC_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")


def read_spec_file(path: str | os.PathLike) -> DatasetSpec:
    """The validated spec in a `dataset_spec.json` file; errors name the file and the key."""
    from hf_mmkd.io import read_json

    return DatasetSpec.from_dict(read_json(path), where=str(path))


def load_spec(dataset: Any) -> DatasetSpec:
    """The spec of `dataset`: a prepared folder (its `dataset_spec.json`), a Hub dataset id (the same file in the
    repository), a `DatasetDict` (`build_spec` with the defaults), or a spec / its JSON dict. The built-in demo is
    not known here (the spec layer sits below the data sets): `hf_mmkd.data.prepared.dataset_spec` adds it."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if isinstance(dataset, Mapping) and "task" in dataset:
        return DatasetSpec.from_dict(dataset, where="the given data-set spec")
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        return build_spec(dataset, name="dataset", source="a DatasetDict given in memory")
    folder = Path(dataset)
    if folder.is_dir():
        path = folder / SPEC_FILE
        if not path.is_file():
            raise SpecError(f"{folder} has no {SPEC_FILE} (it was prepared before data-set specs existed, or not by "
                            "dataset_scripts/): re-run the converter (dataset_scripts/prepare_mmsa.py, "
                            "prepare_media.py or make_demo.py) to write it")
        return read_spec_file(path)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(str(dataset), SPEC_FILE, repo_type="dataset")
    except Exception as err:  # not found, offline, no such repo
        raise SpecError(f"the folder {folder.resolve()} does not exist, and {SPEC_FILE} of a Hub dataset {dataset!r} "
                        f"cannot be read ({type(err).__name__}); prepare the folder first: python "
                        f"dataset_scripts/prepare_mmsa.py IN.pkl {dataset} (or prepare_media.py CSV {dataset}, "
                        f"make_demo.py {dataset})") from None
    return read_spec_file(path)


__all__ = ["DatasetSpec", "add_spec_arguments", "METRIC_SETS", "SPEC_FILE", "SPEC_KEYS", "SpecError", "build_spec",
           "default_neutral_band", "load_spec", "read_spec_file", "save_spec", "spec_markdown", "split_summary"]
