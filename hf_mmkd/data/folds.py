"""Group-disjoint K folds of a prepared data set (`dataset_scripts/make_folds.py` is its command line).

A fold file (JSON) records how the rows of every split of a prepared folder, pooled, were dealt into K folds by
group (a speaker, a video: `group_by` is a column of the data or a regular expression over the row id, never the
data set's name): every group's row ids, each fold's test groups (fold k) and validation groups (drawn by group
from the other folds), the seed, and a SHA-256 of the rows' ids and labels. It depends only on the data and the
arguments, so rebuilding it gives the same bytes. `write_fold` writes fold k as a prepared folder (`train.py
--dataset`); `benchmarks/quality.py --folds` trains and evaluates every fold.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

FOLD_FILE_VERSION = 1
DEFAULT_GROUP_PATTERN = r"(.+)_[^_]+"  # `<group>_<part>`: everything before the id's last underscore


def pooled_rows(prepared):
    """`(pooled Dataset of every split, spec)`; row ids must be unique over all splits."""
    from datasets import concatenate_datasets

    from hf_mmkd.data.prepared import load_dataset_and_spec

    splits, spec = load_dataset_and_spec(prepared)
    names = list(splits)
    if any("id" not in splits[s].column_names for s in names):
        raise ValueError(f"{prepared}: every split needs an 'id' column to be split into folds")
    try:
        pooled = concatenate_datasets([splits[s] for s in names])
    except ValueError as err:
        raise ValueError(f"{prepared}: its splits {names} have different columns or types, so they cannot be pooled "
                         f"into folds ({err})") from None
    seen = set()
    for row_id in pooled["id"]:
        if row_id in seen:
            raise ValueError(f"{prepared}: row id {row_id!r} occurs in more than one row; folds need ids that are "
                             "unique over all splits")
        seen.add(row_id)
    return pooled, spec


def data_sha256(ids, labels) -> str:
    """SHA-256 of the (id, label) pairs, sorted by id: which rows, with which labels, the folds were built from."""
    h = hashlib.sha256()
    for row_id, label in sorted(zip(ids, labels), key=lambda p: p[0]):
        h.update(f"{row_id}\t{float(label)!r}\n".encode())
    return h.hexdigest()


def row_groups(pooled, pattern: str | None, column: str | None) -> list[str]:
    """Each row's group: `column`'s value, or the first group of `pattern` fully matched against the id."""
    if column is not None:
        if column not in pooled.column_names:
            raise ValueError(f"--group-column {column!r} is not a column of the data (columns: "
                             f"{', '.join(pooled.column_names)})")
        values = pooled[column]
        bad = next((i for i, v in enumerate(values) if v is None or str(v) == ""), None)
        if bad is not None:
            raise ValueError(f"--group-column {column!r}: row {pooled['id'][bad]!r} has no group")
        return [str(v) for v in values]
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--group-pattern {pattern!r} is not a regular expression: {err}") from None
    if regex.groups < 1:
        raise ValueError(f"--group-pattern {pattern!r} needs a capture group (the part of the id that is the group)")
    groups = []
    for row_id in pooled["id"]:
        match = regex.fullmatch(row_id)
        if match is None or not match.group(1):
            raise ValueError(f"--group-pattern {pattern!r} does not match row id {row_id!r} (expected the whole id to "
                             "match, its first group naming the row's group)")
        groups.append(match.group(1))
    return groups


def assign_folds(sizes: dict[str, int], k: int, seed: int, validation_fraction: float) -> list[dict]:
    """Deal the groups (`{group: rows}`) into `k` folds; see the module docstring. Returns, per fold, its
    `test` and `validation` groups (sorted)."""
    names = sorted(sizes)
    if len(names) < k + 1:
        raise ValueError(f"{len(names)} groups cannot make {k} folds with a validation split (need at least {k + 1})")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    order.sort(key=lambda g: -sizes[g])  # stable: groups of equal size keep their shuffled order
    folds, rows = [[] for _ in range(k)], [0] * k
    for g in order:
        f = min(range(k), key=lambda i: (rows[i], i))
        folds[f].append(g)
        rows[f] += sizes[g]
    out = []
    for f in range(k):
        rest = sorted(g for i in range(k) if i != f for g in folds[i])
        want = validation_fraction * sum(sizes[g] for g in rest)
        validation, have = [], 0
        for i in np.random.default_rng([seed, f]).permutation(len(rest)):
            if have >= want or len(validation) == len(rest) - 1:
                break
            validation.append(rest[i])
            have += sizes[rest[i]]
        out.append({"test": sorted(folds[f]), "validation": sorted(validation)})
    return out


def build_fold_file(prepared, folds: int, seed: int, validation_fraction: float, pattern: str | None,
                    column: str | None) -> dict:
    """The fold file's content (see the module docstring)."""
    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"--validation-fraction must lie in (0, 1), got {validation_fraction}")
    if column is None and pattern is None:
        pattern = DEFAULT_GROUP_PATTERN
    pooled, spec = pooled_rows(prepared)
    ids = [str(x) for x in pooled["id"]]
    groups = row_groups(pooled, pattern, column)
    members: dict[str, list[str]] = {}
    for row_id, g in zip(ids, groups):
        members.setdefault(g, []).append(row_id)
    parts = assign_folds({g: len(v) for g, v in members.items()}, folds, seed, validation_fraction)
    for fold in parts:
        test = sum(len(members[g]) for g in fold["test"])
        validation = sum(len(members[g]) for g in fold["validation"])
        fold["rows"] = {"train": len(ids) - test - validation, "validation": validation, "test": test}
    return {
        "version": FOLD_FILE_VERSION,
        "generator": "dataset_scripts/make_folds.py",
        "dataset": spec.name,
        "rows": len(ids),
        "data_sha256": data_sha256(ids, pooled[spec.label_column]),
        "group_by": {"column": column} if column is not None else {"id_pattern": pattern},
        "n_folds": folds,
        "seed": seed,
        "validation_fraction": validation_fraction,
        "groups": {g: sorted(members[g]) for g in sorted(members)},
        "folds": parts,
    }


def read_fold_file(path) -> dict:
    """A fold file, checked: every group in the test split of exactly one fold, no group in two splits of a fold."""
    from hf_mmkd.io import read_json

    data = read_json(path, "fold file")
    if not isinstance(data, dict) or data.get("version") != FOLD_FILE_VERSION or "folds" not in data:
        raise ValueError(f"{path} is not a fold file of dataset_scripts/make_folds.py (version {FOLD_FILE_VERSION})")
    groups = set(data["groups"])
    tested = [g for fold in data["folds"] for g in fold["test"]]
    if sorted(tested) != sorted(groups):
        raise ValueError(f"{path}: the folds' test splits do not hold every group exactly once")
    for k, fold in enumerate(data["folds"]):
        if set(fold["test"]) & set(fold["validation"]) or not set(fold["validation"]) <= groups:
            raise ValueError(f"{path}: fold {k}'s validation groups overlap its test groups or are unknown")
    return data


def fold_splits(folds: dict, k: int) -> dict[str, list[str]]:
    """`{"train"|"validation"|"test": [row ids]}` of fold `k`."""
    if not 0 <= k < len(folds["folds"]):
        raise ValueError(f"fold K={k} does not exist; the fold file has folds 0 .. {len(folds['folds']) - 1}")
    fold = folds["folds"][k]
    held = set(fold["test"]) | set(fold["validation"])
    parts = {"train": [g for g in folds["groups"] if g not in held], "validation": fold["validation"],
             "test": fold["test"]}
    return {split: [row_id for g in names for row_id in folds["groups"][g]] for split, names in parts.items()}


def write_fold(fold_file, prepared, k: int, out_dir, overwrite: bool = False) -> Path:
    """Fold `k` of `fold_file` as a prepared folder in `out_dir` (rows in PREPARED's order)."""
    from datasets import DatasetDict

    from hf_mmkd.data.prepared import output_folder, save_prepared
    from hf_mmkd.data.spec import build_spec, spec_markdown

    guard = output_folder(out_dir, "make_folds.py", overwrite, inputs=[prepared, fold_file])
    guard.check()
    folds = read_fold_file(fold_file)
    wanted = fold_splits(folds, k)
    pooled, spec = pooled_rows(prepared)
    ids = [str(x) for x in pooled["id"]]
    if data_sha256(ids, pooled[spec.label_column]) != folds["data_sha256"]:
        raise ValueError(f"{prepared}: its rows (ids and labels) are not the ones {fold_file} was built from "
                         f"({folds['rows']} rows of {folds['dataset']!r}; this folder has {len(ids)})")
    index = {row_id: i for i, row_id in enumerate(ids)}
    dsd = DatasetDict({split: pooled.select(sorted(index[r] for r in rows)) for split, rows in wanted.items()})
    name = f"{spec.name} fold {k} of {folds['n_folds']}"
    new_spec = build_spec(dsd, name=name, source=f"fold {k} of {Path(fold_file).name} (seed {folds['seed']}) over "
                                                 f"{spec.source}",
                          task=spec.task, label_column=spec.label_column, label_range=spec.label_range,
                          neutral_band=spec.neutral_band, class_names=spec.class_names)
    card = (f"# {name}\n\nFold {k} of the group-disjoint folds in `{Path(fold_file).name}` "
            f"(`dataset_scripts/make_folds.py`, seed {folds['seed']}, groups by {folds['group_by']}): test = fold "
            f"{k}, validation drawn by group from the other folds, train = the rest. No group is in two splits.\n\n"
            + spec_markdown(new_spec))
    return save_prepared(dsd, guard, card, new_spec)
