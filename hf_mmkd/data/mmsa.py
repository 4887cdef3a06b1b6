"""MMSA-layout pickles -> `DatasetDict` in the prepared schema (see `hf_mmkd.data.prepared`).

The layout is that of `thuiar/MMSA` `unaligned_50.pkl` / `aligned_50.pkl` (docs/protocols.md#mmsa-layout):
`{"train"|"valid"|"test": {key: array with one row per utterance}}`. The conversion follows MMSA's
`data_loader.py`: audio `-inf` becomes 0, and each sequence keeps only its valid (right-padded) steps.

Lengths: `<mod>_lengths` when given; otherwise (aligned files) the `text_bert` attention-mask length when the
sequence has the same number of steps as `text_bert` (MMSA aligns audio/vision to the tokens), else all steps.
A modality absent from a split, or of length 0 in a row, is stored as null with `has_<mod>` False.
"""

from __future__ import annotations

import pickle

import numpy as np

from hf_mmkd.data.prepared import MODALITIES, check_steps

SPLIT_NAMES = {"train": "train", "valid": "validation", "validation": "validation", "dev": "validation", "test": "test"}
KNOWN_KEYS = frozenset(
    {"id", "raw_text", "text", "text_bert", "audio", "vision", "text_lengths", "audio_lengths", "vision_lengths",
     "regression_labels", "classification_labels", "annotations",
     "regression_labels_T", "regression_labels_A", "regression_labels_V"}
)


# What an MMSA pickle is made of: numpy arrays, dtypes and scalars (as numpy pickles them, old and new module
# names), Python containers, and `_codecs.encode` (how protocol-2 pickles store bytes). Nothing else is loaded.
SAFE_PICKLE_GLOBALS = frozenset({
    *((mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *(("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "complex", "slice")),
    ("collections", "OrderedDict"), ("_codecs", "encode"),
})


class _MMSAUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that admits only `SAFE_PICKLE_GLOBALS` (Python's "restricting globals" recipe)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which an MMSA pickle never holds")
        return super().find_class(module, name)


def load_mmsa_pickle(path) -> object:
    """The object in the MMSA pickle at `path`, read with a restricted unpickler: numpy arrays, dtypes and scalars
    and Python containers only, so loading it cannot run code; anything else is refused in one line naming the
    file and the type."""
    with open(path, "rb") as f:
        try:
            return _MMSAUnpickler(f).load()
        except pickle.UnpicklingError as err:
            if "which an MMSA pickle never holds" in str(err):
                raise ValueError(f"refused to load {path}: {err} (only numpy arrays and Python containers are "
                                 "loaded, so that reading a pickle cannot run code)") from None
            raise ValueError(f"cannot read {path} as a pickle: {err}") from None
        except Exception as err:  # truncated, not a pickle at all
            raise ValueError(f"cannot read {path} as a pickle: {err}") from None


def _text(split: str, ids: list[str], i: int, value) -> str | None:
    """A `raw_text` cell as text: str as is, bytes (object or `S` dtype) decoded as UTF-8; empty -> None."""
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            _fail(split, "raw_text", f"row {i} (id {ids[i]!r}) is bytes that are not UTF-8 text ({err.reason} at "
                                     f"byte {err.start})")
    text = str(value)
    return text if text.strip() else None


def _fail(split: str, key: str, problem: str):
    raise ValueError(f"MMSA pickle, split {split!r}, key {key!r}: {problem}")


NUMERIC_KEYS = ("text", "audio", "vision", "text_bert", "text_lengths", "audio_lengths", "vision_lengths",
                "regression_labels", "classification_labels", "regression_labels_T", "regression_labels_A",
                "regression_labels_V")


def _check_split_names(data: dict) -> None:
    """Two keys that mean the same split (`valid` and `dev`) would silently drop one of them: refuse."""
    by_name: dict[str, list[str]] = {}
    for key in data:
        by_name.setdefault(SPLIT_NAMES[key], []).append(key)
    for name, keys in by_name.items():
        if len(keys) > 1:
            raise ValueError(f"MMSA pickle: split keys {keys} all mean the {name!r} split (their rows would be "
                             "mixed up or lost); keep one of them")


def _check_numeric(split: str, key: str, value) -> None:
    """An array of numbers with one row per utterance (not strings, not a scalar)."""
    if np.ndim(value) == 0:
        _fail(split, key, f"must be an array with one row per utterance, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype.kind in "iuf":
        return
    if arr.dtype.kind == "O":  # numbers stored as Python objects are fine, anything else is not
        try:
            np.asarray(value, dtype=np.float64)
            if all(not isinstance(x, (str, bytes)) for x in arr.reshape(-1)[:1000]):
                return
        except (TypeError, ValueError):
            pass
    first = arr.reshape(-1)[0].item() if arr.size else None
    _fail(split, key, f"must hold numbers, got {arr.dtype} values (e.g. {first!r})")


def _check_lengths(split: str, arrays: dict, m: str) -> None:
    """`<m>_lengths`: one whole number in [0, steps] per row."""
    key = f"{m}_lengths"
    if m not in arrays:
        _fail(split, key, f"given without {m!r}")
    lengths = np.asarray(arrays[key])
    steps = np.asarray(arrays[m]).shape[1]
    if lengths.ndim != 1:
        _fail(split, key, f"must be a 1-D array of one length per row, got shape {lengths.shape}")
    fractional = np.nonzero(lengths != np.round(lengths))[0]
    if fractional.size:
        row = int(fractional[0])
        _fail(split, key, f"row {row} has length {lengths[row]}, which is not a whole number of steps")
    bad = np.nonzero((lengths < 0) | (lengths > steps))[0]
    if bad.size:
        row = int(bad[0])
        _fail(split, key, f"row {row} has length {lengths[row]:g} outside [0, {steps}] (the {m} array has {steps} steps)")


LABEL_KEYS = {"regression": "regression_labels", "classification": "classification_labels"}


def mmsa_task(data: dict, task: str | None = None) -> str:
    """The task of an MMSA pickle: `task` if given, else the one label kind its splits carry. MMSA's own files
    carry both `regression_labels` and `classification_labels`; then the task must be chosen (no guess)."""
    if not isinstance(data, dict) or not all(isinstance(a, dict) for a in data.values()):
        return task or "regression"  # convert_mmsa reports the malformed pickle
    present = [t for t, key in LABEL_KEYS.items() if any(key in a for a in data.values())]
    if task is not None:
        if task not in LABEL_KEYS:
            raise ValueError(f"--task must be regression or classification, got {task!r}")
        if task not in present:
            raise ValueError(f"--task {task}: the pickle has no {LABEL_KEYS[task]!r} key in any split")
        return task
    if len(present) == 2:
        raise ValueError("the pickle holds both 'regression_labels' and 'classification_labels': choose which one "
                         "the model learns with --task regression or --task classification")
    return present[0] if present else "regression"


def _check_split(split: str, arrays: dict, label_key: str = "regression_labels") -> int:
    """Validate keys, row counts and shapes of one split; return its number of rows."""
    if not isinstance(arrays, dict):
        raise ValueError(f"MMSA pickle, split {split!r}: expected a dict of arrays, got {type(arrays).__name__}")
    unknown = sorted(set(arrays) - KNOWN_KEYS)
    if unknown:
        raise ValueError(
            f"MMSA pickle, split {split!r}: unknown key(s) {unknown}; known keys are {sorted(KNOWN_KEYS)}"
        )
    if label_key not in arrays:
        _fail(split, label_key, "missing (every split needs the labels of the task)")
    for key in NUMERIC_KEYS:
        if key in arrays and arrays[key] is not None:
            _check_numeric(split, key, arrays[key])
    for key, value in arrays.items():
        if np.ndim(value) == 0:
            _fail(split, key, f"must be an array with one row per utterance, got {type(value).__name__}")
    n = len(arrays[label_key])
    if n == 0:
        _fail(split, label_key, "has 0 rows; every split needs at least one row (leave an empty split out)")
    for key, value in arrays.items():
        if len(value) != n:
            _fail(split, key, f"has {len(value)} rows but {label_key} has {n} (length mismatch between arrays)")
    for key in ("text", "audio", "vision"):
        if key in arrays and np.asarray(arrays[key]).ndim != 3:
            _fail(split, key, f"must be (N, steps, dim), got shape {np.asarray(arrays[key]).shape}")
        if key in arrays:
            check_steps(np.asarray(arrays[key]).shape[1], f"MMSA pickle, split {split!r}, key {key!r}")
    if "text_bert" in arrays:
        shape = np.asarray(arrays["text_bert"]).shape
        if len(shape) != 3 or shape[1] != 3:
            _fail(split, "text_bert", f"must be (N, 3, L) (ids, mask, segments), got shape {shape}")
    for m in MODALITIES:
        if f"{m}_lengths" in arrays:
            _check_lengths(split, arrays, m)
    if "id" in arrays:
        ids = [str(x) for x in arrays["id"]]
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            _fail(split, "id", f"id {dup!r} occurs more than once (ids must be unique within a split)")
    return n


def _lengths(arrays: dict, m: str) -> np.ndarray:
    x = np.asarray(arrays[m])
    if f"{m}_lengths" in arrays:
        return np.asarray(arrays[f"{m}_lengths"]).astype(np.int64)
    if "text_bert" in arrays:
        tb = np.asarray(arrays["text_bert"])
        if tb.shape[2] == x.shape[1]:
            return tb[:, 1, :].sum(1).astype(np.int64)  # the attention mask of the (aligned) tokens
    return np.full(len(x), x.shape[1], dtype=np.int64)


def _check_labels(split: str, arrays: dict, n: int, label_range: tuple[float, float] | None) -> None:
    """Labels must be finite, classes whole and >= 0, and regression scores inside `label_range` if given."""
    ids = [str(x) for x in arrays["id"]] if "id" in arrays else None
    for key in ("regression_labels", "regression_labels_T", "regression_labels_A", "regression_labels_V",
                "classification_labels"):
        if arrays.get(key) is None:
            continue
        y = np.asarray(arrays[key], dtype=np.float64).reshape(n)
        problems = [(~np.isfinite(y), "is not finite")]
        if key == "classification_labels":
            problems.append((np.isfinite(y) & ((y < 0) | (y != np.round(y))), "is not a class index (a whole number >= 0)"))
        elif label_range is not None:
            lo, hi = label_range
            problems.append((np.isfinite(y) & ((y < lo) | (y > hi)), f"lies outside the label range [{lo:g}, {hi:g}]"))
        for bad, what in problems:
            if bad.any():
                i = int(np.nonzero(bad)[0][0])
                row = f"row {i}" + (f" (id {ids[i]!r})" if ids else "")
                _fail(split, key, f"{row}: label {y[i]:g} {what} ({int(bad.sum())} such row(s))")


def convert_mmsa(data: dict, label_range: tuple[float, float] | None = None,
                 task: str = "regression") -> tuple[dict, dict]:
    """Convert a loaded MMSA pickle to `{split: {column: list}}` plus a report of what was done.

    `task` (see `mmsa_task`) names the labels every split must have: `regression_labels` (column `label`) or
    `classification_labels` (column `classification_label`); the other kind, when present, is kept as a column.

    Raises ValueError naming the split and key for unknown keys, row-count mismatches, bad shapes or lengths,
    feature widths that differ between splits, and bad labels: non-finite labels, classification labels that
    are not whole numbers >= 0, and (with `label_range=(lo, hi)`, e.g. (-3, 3) for CMU-MOSI/MOSEI, (-1, 1) for
    CH-SIMS, (1, 5) for ICT-MMMO) regression labels outside the range. Labels are never clipped: a score
    outside its corpus's annotation scale means a broken file, not a value to repair.
    """
    if not isinstance(data, dict) or not data:
        raise ValueError(f"MMSA pickle must hold a dict of splits, got {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(f"MMSA pickle: unknown split key(s) {unknown}; expected 'train', 'valid', 'test'")
    _check_split_names(data)
    sizes = {s: _check_split(s, arrays, LABEL_KEYS[task]) for s, arrays in data.items()}
    for s, arrays in data.items():
        _check_labels(s, arrays, sizes[s], label_range)

    # Feature widths must agree across splits (one Array2D feature per column).
    dims: dict[str, int] = {}
    for s, arrays in data.items():
        for m in MODALITIES:
            if m in arrays:
                d = np.asarray(arrays[m]).shape[2]
                if dims.setdefault(m, d) != d:
                    _fail(s, m, f"has feature width {d} but another split has {dims[m]}")
    present_keys = set().union(*(set(a) for a in data.values()))

    columns_out: dict[str, dict] = {}
    report = {"splits": {}, "feature_dims": dims, "audio_neg_inf_set_to_0": 0, "non_finite_set_to_0": {}}
    for split, arrays in data.items():
        n = sizes[split]
        name = SPLIT_NAMES[split]
        cols: dict[str, list] = {}
        cols["id"] = [str(x) for x in arrays["id"]] if "id" in arrays else [f"{name}_{i}" for i in range(n)]
        has = {m: np.zeros(n, dtype=bool) for m in MODALITIES}
        if "raw_text" in present_keys:
            raw = arrays.get("raw_text")
            cols["raw_text"] = [None] * n if raw is None else [_text(split, cols["id"], i, t) for i, t in enumerate(raw)]
            has["text"] |= np.array([t is not None for t in cols["raw_text"]], dtype=bool)
        if "text_bert" in present_keys:
            if "text_bert" in arrays:
                tb = np.asarray(arrays["text_bert"]).astype(np.int64)
                lens = tb[:, 1, :].sum(1)
                cols["text_input_ids"] = [tb[i, 0, : lens[i]].tolist() if lens[i] > 0 else None for i in range(n)]
                has["text"] |= lens > 0
            else:
                cols["text_input_ids"] = [None] * n
        for m in MODALITIES:
            col = f"{m}_features"
            if m not in present_keys:
                continue
            if m not in arrays:
                cols[col] = [None] * n
                continue
            x = np.asarray(arrays[m], dtype=np.float32)
            if m == "audio":
                neg_inf = np.isneginf(x)
                report["audio_neg_inf_set_to_0"] += int(neg_inf.sum())
                x = np.where(neg_inf, 0.0, x).astype(np.float32)  # MMSA data_loader: audio[audio == -inf] = 0
            bad = ~np.isfinite(x)
            if bad.any():
                report["non_finite_set_to_0"][f"{split}/{m}"] = int(bad.sum())
                x = np.where(bad, 0.0, x).astype(np.float32)
            lens = _lengths(arrays, m)
            cols[col] = [x[i, : lens[i]] if lens[i] > 0 else None for i in range(n)]  # (len_i, D) per row
            has[m] |= lens > 0
        for m in MODALITIES:
            cols[f"has_{m}"] = has[m].tolist()
        if "regression_labels" in present_keys:
            y = arrays.get("regression_labels")
            cols["label"] = [None] * n if y is None else np.asarray(y, dtype=np.float32).reshape(n).tolist()
        if "classification_labels" in present_keys:
            y = arrays.get("classification_labels")
            if y is None:
                cols["classification_label"] = [None] * n
            else:
                y = np.asarray(y, dtype=np.float64).reshape(n)
                cols["classification_label"] = y.astype(np.int64).tolist()
        for u in "TAV":
            key = f"regression_labels_{u}"
            if key in present_keys:
                y = arrays.get(key)
                cols[f"label_{u}"] = [None] * n if y is None else np.asarray(y, dtype=np.float32).reshape(n).tolist()
        if "annotations" in present_keys:
            a = arrays.get("annotations")
            cols["annotation"] = [None] * n if a is None else [None if v is None else str(v) for v in a]
        columns_out[name] = cols
        report["splits"][name] = {"rows": n, **{f"has_{m}": int(has[m].sum()) for m in MODALITIES}}
    return columns_out, report


def mmsa_features(columns: dict, dims: dict):
    """The `datasets.Features` of the converted columns (the same for every split)."""
    from datasets import Array2D, Features, List, Value

    spec = {"id": Value("string"), "raw_text": Value("string"), "text_input_ids": List(Value("int64"))}
    for m, d in dims.items():
        spec[f"{m}_features"] = Array2D(shape=(None, d), dtype="float32")
    for m in MODALITIES:
        spec[f"has_{m}"] = Value("bool")
    spec.update({"label": Value("float32"), "classification_label": Value("int64"), "label_T": Value("float32"),
                 "label_A": Value("float32"), "label_V": Value("float32"), "annotation": Value("string")})
    return Features({k: v for k, v in spec.items() if k in columns})


def mmsa_to_dataset_dict(data: dict, label_range: tuple[float, float] | None = None, task: str = "regression"):
    """Loaded MMSA pickle -> (`DatasetDict` with train/validation/test, report dict); see `convert_mmsa`."""
    from datasets import Dataset, DatasetDict

    columns, report = convert_mmsa(data, label_range, task)
    first = next(iter(columns.values()))
    features = mmsa_features(first, report["feature_dims"])
    dsd = DatasetDict({split: Dataset.from_dict(cols, features=features) for split, cols in columns.items()})
    return dsd, report
