"""Quality under missing modalities: teacher, the `none`/`logit` baselines and every KD method, per dataset.

    python benchmarks/quality.py --seeds 1111 1112 1113                       # CMU-MOSI -> results/quality_mosi.*
    python benchmarks/quality.py --dataset-name mmmo --seeds 1111 1112 1113   # ICT-MMMO -> results/quality_mmmo.*
    python benchmarks/quality.py --folds benchmarks/folds/mosi_folds.json    # MOSI, 5 speaker-independent folds
                                                                             #   -> results/quality_mosi_folds.*

One code path for every benchmark `NAME` (`--dataset-name`, default mosi; prepared folder data_prepared/NAME).
The name only names config files: configs/NAME_benchmark.yaml (test protocols, how to prepare the folder, torch
threads, work folder, optional targets) and the training configs. Per seed: the teacher (configs/NAME_teacher.yaml),
then each method's student from its YAML (configs/NAME_<method>.yaml, the same missing-modality training view
for all students of a dataset), model selection on the validation split only. Then every checkpoint is evaluated
on the TEST split, mask seed = run seed, with the benchmark's protocols (`--protocols` overrides them). What the
labels mean, hence the metrics, comes from the prepared folder's data-set spec (`dataset_spec.json`), and every
report has the constant reference row (the train median / majority class).
Writes, with NAME as above and P each protocol: quality_NAME.json (every number, the command, seeds, git
commit, versions, machine), quality_NAME_P.json / .md / .png (per-condition tables and the robustness plot),
and quality_NAME_targets.md when the benchmark config has targets, else quality_NAME_summary.md (each
checkpoint's protocol mean ± std in the metric set's key metrics). No number is typed in.

`--folds FOLDFILE` (`dataset_scripts/make_folds.py`): the same, once per fold instead of once per seed, on fold
k's data set (written from the prepared folder to WORK/fold<k>/data), every fold with the one seed of `--seeds`;
the reports are quality_NAME_folds*, means and stds are over folds (`n_folds` in every summary row), and the
targets are those of the benchmark config's `folds:` section. The same code trains and evaluates both modes.

`--fold-ids K ...` runs only those folds of the fold file. `--reuse-record RECORD`: take the seeds (with --folds,
the folds) that an earlier run's record holds from it instead of training and evaluating them, when nothing that
decides either (hf_mmkd/, modeling/, train.py, the training configs, --train-args, the data set, the fold file)
differs; so a benchmark can be run over several sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"  # the committed reports (the README's generated tables come from here)
METHODS = ("none", "logit", "corrkd", "mmckd", "mitr", "crossmodal")
MODALITIES = ("text", "audio", "vision")
LETTER = {"text": "l", "audio": "a", "vision": "v"}


def benchmarks() -> list[str]:
    """The benchmark names: one per configs/<name>_benchmark.yaml."""
    return sorted(p.name[: -len("_benchmark.yaml")] for p in (REPO / "configs").glob("*_benchmark.yaml"))


FOLD_KEYS = ("targets", "teacher_targets", "kd_vs_none", "sign_floor")  # what the `folds:` section replaces


def fold_config(config: dict) -> dict:
    """The benchmark config of the fold mode: the targets, teacher targets, KD-vs-`none` rules and sign floor of
    its `folds:` section (none where it has none), the rest as for the seeds. The standard split's targets do not
    carry over: the folds' test sets are other rows (and the sign floor needs one test split)."""
    return {**{k: v for k, v in config.items() if k not in FOLD_KEYS and k != "folds"},
            **{k: v for k, v in (config.get("folds") or {}).items() if k in FOLD_KEYS and k != "sign_floor"}}


def benchmark_config(name: str) -> dict:
    """configs/<name>_benchmark.yaml: protocols, prepare, threads, work, and optional targets / teacher_targets /
    kd_vs_none, sign_floor."""
    import yaml

    config = yaml.safe_load((REPO / "configs" / f"{name}_benchmark.yaml").read_text()) or {}
    config.setdefault("threads", None)
    config.setdefault("work", f"outputs/quality_{name}")
    return config


def met(value: float, op: str, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


def train(config: str, seed: int, out: Path, extra: list[str]) -> None:
    from hf_mmkd.training import main

    argv = ["--config", str(REPO / "configs" / config), "--seed", str(seed), "--output_dir", str(out), *extra]
    print(f"[quality] train.py {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"training failed: {config} seed {seed}")


SUMMARY_RESULT_KEYS = ("teacher", "validation", "validation_note")  # what a run measured, not what it was asked


def stale_settings(student: Path, argv: list[str]) -> list[str]:
    """How the settings recorded with a trained student (`training_summary.json`) differ from what `train.py
    argv` would use now, as "key: recorded -> wanted"; [] when they agree. A key the record lacks (written before
    the option existed) counts as the option's default. So an edited YAML retrains nothing silently: the run
    stops and names the folder instead of reporting an old checkpoint under the new settings."""
    from hf_mmkd.training import StageArguments, parse_args, training_summary

    def summary(flags: list[str]) -> dict:
        parsed = parse_args(flags)
        stage = next(p for p in parsed if isinstance(p, StageArguments))
        return json.loads(json.dumps(training_summary(parsed[-1], None, {}, teacher_folds=stage.teacher_folds)))

    recorded = json.loads((student / "training_summary.json").read_text())
    wanted, defaults = summary(argv), summary([])
    diffs = []
    for key, value in wanted.items():
        if key in SUMMARY_RESULT_KEYS:
            continue
        old = recorded.get(key, defaults.get(key))
        if old != value:
            diffs.append(f"{key}: {old} -> {value}")
    return diffs


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_dirty() -> bool | None:
    """Whether the working tree differs from the commit, untracked files included (then `git_commit` alone does
    not reproduce the run). The reports under benchmarks/results/, which this script writes, do not count."""
    try:
        return bool(subprocess.run(["git", "status", "--porcelain", "--", ".", ":!benchmarks/results"], cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.json")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def evaluate_seed(checkpoints: dict, dataset: str, protocol: str, seed: int, cache: Path, name: str) -> dict:
    """`evaluate_checkpoints` on the test split for one mask seed, cached in `cache` (a JSON file next to the
    seed's checkpoints). The cache is used only when the protocol, the data-set folder's spec and every
    checkpoint's files (weights and configs, by SHA-256) are the same, so a retrained checkpoint is re-evaluated;
    it keeps the commit that computed it and is not used once the code that evaluates (hf_mmkd/, modeling/)
    differs from that commit's, so no report mixes numbers of two metric implementations. Evaluation is a third
    of a seed's time on CPU; the cache lets runs that split the seeds over processes be joined by one call that
    only reads them."""
    from hf_mmkd.evaluation import evaluate_checkpoints
    from hf_mmkd.io import atomic_write

    spec = Path(dataset) / "dataset_spec.json"
    key = {"protocol": protocol, "seed": seed, "split": "test", "dataset_name": name,
           "dataset_spec": spec.read_text() if spec.is_file() else None,
           "checkpoints": {n: _digest(Path(p)) for n, p in checkpoints.items()}}
    if cache.is_file():
        stored = json.loads(cache.read_text())
        if stored.get("key") == key and not code_changed_since(stored["results"].get("evaluated_at_commit")):
            return stored["results"]
    results = evaluate_checkpoints(checkpoints, dataset, protocol, split="test", seeds=(seed,), dataset_name=name)
    results = json.loads(json.dumps(results, default=_plain))
    results["evaluated_at_commit"] = git_commit()
    atomic_write(cache, json.dumps({"key": key, "results": results}, default=_plain))
    return results


def files_changed_since(commit: str | None, *pathspecs: str) -> list[str] | None:
    """The files matching `pathspecs` that differ in the working tree from `commit`; None when git cannot tell
    (no repository, or the commit is unknown or not in it)."""
    if not commit or commit == "unknown":
        return None
    try:
        done = subprocess.run(["git", "diff", "--name-only", commit, "--", *pathspecs], cwd=REPO,
                              capture_output=True, text=True)
    except OSError:
        return None
    return sorted(done.stdout.split()) if done.returncode == 0 else None


def code_changed_since(commit: str | None) -> bool:
    """Whether hf_mmkd/ or modeling/ in the working tree differ from `commit` (True when that cannot be told)."""
    changed = files_changed_since(commit, "hf_mmkd", "modeling")
    return changed is None or bool(changed)


def configs_changed_since(commit: str | None, name: str) -> list[str] | None:
    """The training configs (configs/NAME_*.yaml, not the benchmark config, which is read as it is now) that differ
    in the working tree from `commit`, the commit a stored run was made at; None when git cannot tell."""
    changed = files_changed_since(commit, f"configs/{name}_*.yaml")
    return None if changed is None else [f for f in changed if f != f"configs/{name}_benchmark.yaml"]


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return float(value)


def merge(per_seed: list[dict]) -> dict:
    """Join the per-seed evaluation results (same protocol) into one results structure."""
    merged = dict(per_seed[0])
    merged["checkpoints"], merged["modalities"], notes, warnings = {}, {}, [], []
    for results in per_seed:
        for name, seeds in results["checkpoints"].items():
            merged["checkpoints"].setdefault(name, {}).update(seeds)
        for name, mods in results.get("modalities", {}).items():  # what each checkpoint was evaluated on
            have = merged["modalities"].setdefault(name, [])
            have += [m for m in mods if m not in have]
        notes += [n for n in results.get("notes", []) if n not in notes]  # each seed's notes, once
        warnings += [f"seed {next(iter(results['seeds']))}: {w}" for w in results.get("warnings", [])]
    merged["notes"], merged["warnings"] = notes, warnings
    merged["seeds"] = [s for results in per_seed for s in results["seeds"]]
    if isinstance(merged.get("reference_value"), dict):  # folds: each fold's constant (`as_fold`)
        merged["reference_value"] = {k: v for results in per_seed for k, v in results["reference_value"].items()}
        merged["notes"] = fold_notes(merged)
    return merged


def fold_notes(results: dict) -> list[str]:
    """The notes of merged fold results with the per-fold ones said once: each fold's evaluation names its own data
    set ("Shown as ... 'NAME fold k of K'") and its own constant ("Reference row 'constant: train median x'"), which
    would otherwise repeat once per fold. A fold taken from an earlier record (`--reuse-record`) brings that
    record's one merged note, which the new one replaces. Idempotent (also applied to stored records)."""
    per_fold = re.compile(r"^(Shown as .* names it '.* fold \d+ of (\d+)'|Reference row 'constant: )")
    merged = re.compile(r"^Each fold's data set \(spec name ")
    notes = results.get("notes", [])
    values = results.get("reference_value") or {}
    if not values or not any(per_fold.match(n) for n in notes):
        return list(notes)  # nothing per fold left to say once (a stored record's notes are already merged)
    constants = ", ".join(f"{k} {float(v):.4g}" for k, v in values.items())
    # K from the spec names: a --fold-ids run holds fewer folds than its fold file has
    counts = {m.group(2) for n in notes if (m := per_fold.match(n)) and m.group(2)}
    of = counts.pop() if len(counts) == 1 else "K"
    return [n for n in notes if not per_fold.match(n) and not merged.match(n)] + [
        f"Each fold's data set (spec name '... fold k of {of}') is shown under one name. The reference row "
        f"'{FOLD_REFERENCE}' is each fold's constant predictor taken from that fold's train split ({constants}), "
        "scored on its test rows."]


# A metric a stored run did not compute (results written before the metric existed): shown as this, never filled in.
NOT_IN_RUN = "n/a: not in this run"


def _cell(summary: dict, name: str, metric: str) -> tuple[float, float] | None:
    """(mean, std) of `metric` in checkpoint `name`'s protocol summary row; None when the run did not compute it."""
    block = next(iter(summary[name]["summary"].values()))  # the protocol's one summary row
    return (block[metric]["mean"], block[metric]["std"]) if metric in block else None


def targets_table(summary: dict, over: str, config: dict, protocol_title: str, reference: str | None,
                  metrics=()) -> str:
    """The benchmark's targets against the main protocol's means (test split), met or not, and KD vs `none`;
    `over` says what the means are over ("5 seed(s)", "5 folds (seed 1111 each)"). Columns: `metrics` (the metric
    set's key metrics), then any other target's metric; "-" where no target."""
    targets = {m: tuple(v) for m, v in config["targets"].items()}
    columns = list(dict.fromkeys([*metrics, *targets]))
    lines = [f"{protocol_title}; test split, mean ± std over {over}.", "",
             "| checkpoint | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in summary:
        cells = [_cell(summary, name, m) for m in columns]
        lines.append(f"| {name} | " + " | ".join(NOT_IN_RUN if c is None else "{:.4f} ± {:.4f}".format(*c)
                                                 for c in cells) + " |")
    lines += ["", "| target | " + " | ".join(f"{targets[m][0]} {targets[m][1]}" if m in targets else "-"
                                              for m in columns) + " |", ""]
    students = [n for n in summary if n not in ("teacher", reference)]
    if students:
        first = next(iter(targets))
        best = max(students, key=lambda n: (_cell(summary, n, first) or (-np.inf,))[0])
        hit = [m for m, (op, v) in targets.items() if _cell(summary, best, m) and met(_cell(summary, best, m)[0], op, v)]
        absent = [m for m in targets if _cell(summary, best, m) is None]
        lines.append(f"Best student by mean {first}: **{best}**; targets met: {hit or 'none'}; "
                     f"not met: {[m for m in targets if m not in hit and m not in absent] or 'none'}"
                     + (f"; {NOT_IN_RUN}: {absent}." if absent else "."))
    return "\n".join(lines) + "\n"


def _points(metric: str) -> float:
    """Accuracies and F1 are printed in points (x100), MAE and Corr as they are."""
    return 1.0 if metric in ("MAE", "Corr") else 100.0


def paired_differences(results: dict, reference: str | None) -> dict:
    """{method: {metric: [per-seed difference to `none`]}} of the main protocol's per-seed summary (the same seed:
    the same teacher and the same test masks, so the difference is paired), for every KD student."""
    from hf_mmkd.report import per_seed_summaries

    per_seed = per_seed_summaries(results)
    if "none" not in per_seed:
        return {}
    base = per_seed["none"]
    out = {}
    for name, seeds in per_seed.items():
        if name in ("teacher", "none", reference):
            continue
        common = [s for s in seeds if s in base]
        out[name] = {}
        for seed in common:
            row = next(iter(seeds[seed]["summary"].values()))
            ref = next(iter(base[seed]["summary"].values()))
            for metric, value in row.items():
                if metric in ref:
                    out[name].setdefault(metric, []).append(float(value) - float(ref[metric]))
    return out


def paired_table(diffs: dict, config: dict, unit: str = "seed") -> str:
    """Every KD student against `none`, paired per seed (or per fold: `unit`), against `kd_vs_none`'s targets."""
    from hf_mmkd.report import _LOWER_IS_BETTER

    wanted = config.get("kd_vs_none") or {}
    if not diffs or not wanted:
        return ""
    metrics = list(wanted)
    head = (f"Every KD student minus the `none` student of the same {unit} (same teacher, same test masks), main "
            f"protocol mean; mean ± std (population) over {unit}s, then the per-{unit} differences and the {unit}s "
            "where KD is better. Accuracies and F1 in points, MAE and Corr as they are (MAE: lower is better).")
    lines = [head, "", "| student | " + " | ".join(metrics) + f" | per-{unit} " + metrics[0] + " | KD better |",
             "|---|" + "---|" * (len(metrics) + 2)]
    improvement = {}
    for name, per_metric in diffs.items():
        cells = []
        for m in metrics:
            values = np.asarray(per_metric.get(m, [np.nan])) * _points(m)
            cells.append(NOT_IN_RUN if m not in per_metric else f"{values.mean():+.2f} ± {values.std():.2f}"
                         if _points(m) > 1 else f"{values.mean():+.3f} ± {values.std():.3f}")
        if metrics[0] in per_metric:
            first = np.asarray(per_metric[metrics[0]]) * _points(metrics[0])
            sign = -1.0 if metrics[0] in _LOWER_IS_BETTER else 1.0
            wins = int((sign * first > 0).sum())
            per_seed, better = ", ".join(f"{v:+.2f}" for v in first), f"{wins}/{len(first)}"
        else:
            per_seed = better = NOT_IN_RUN
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {per_seed} | {better} |")
        improvement[name] = {m: (-1.0 if m in _LOWER_IS_BETTER else 1.0) * float(np.mean(per_metric[m])) * _points(m)
                             for m in metrics if m in per_metric}
    lines.append("")
    for m, rule in wanted.items():
        rule = rule or {}
        unit = "points" if _points(m) > 1 else ""
        if rule and not any(m in imp for imp in improvement.values()):
            lines.append(f"- KD vs `none` on {m}: {NOT_IN_RUN} (the stored results predate the metric).")
            continue
        if "every" in rule:
            below = [n for n, imp in improvement.items() if imp.get(m, -np.inf) < rule["every"]]
            lines.append(f"- Every KD student improves {m} over `none` by >= {rule['every']:g} {unit} (paired mean): "
                         + ("met." if not below else f"NOT met ({', '.join(below)} below)."))
        if "best" in rule:
            best = max(improvement, key=lambda n: improvement[n].get(m, -np.inf))
            value = improvement[best].get(m, -np.inf)
            lines.append(f"- The best KD student ({best}) improves {m} over `none` by {value:+.2f} {unit} (target "
                         f">= {rule['best']:g}): {'met' if value >= rule['best'] else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def sign_floor_table(results: dict, spec, metric: str, reference: str | None, dataset: str | None = None) -> str:
    """No checkpoint below the best constant-sign prediction (the test split's majority sign) in `metric` at any
    condition (mean over seeds). For a balanced sign accuracy the floor is 50.00 (any constant scores that).
    `dataset`: the prepared folder the labels are read from (default: the one the results name)."""
    from hf_mmkd.metrics import metric_fn
    from hf_mmkd.report import summarize

    if spec.task != "regression":
        return ""
    from hf_mmkd.data.prepared import load_prepared

    labels = np.asarray(load_prepared(dataset or results["dataset_path"])[results["split"]][spec.label_column],
                        np.float32)
    fn = metric_fn(spec)
    lo, hi = spec.label_range
    floor = max(fn(np.full_like(labels, v), labels)[metric] for v in (lo, hi))
    lines = [f"Sign floor: the better constant prediction (the lowest or the highest score for every row; for plain "
             f"Acc-2 the test split's majority sign) gives {metric} {100 * floor:.2f}; the lowest condition of each "
             "checkpoint (mean over seeds):", "",
             "| checkpoint | lowest condition | " + metric + " | at or above the floor |", "|---|---|---|---|"]
    for name, s in summarize(results).items():
        if name == reference:
            continue
        if any(metric not in m for m in s["conditions"].values()):
            lines.append(f"| {name} | - | {NOT_IN_RUN} | - |")
            continue
        cond, cell = min(((c, m[metric]) for c, m in s["conditions"].items()), key=lambda x: x[1]["mean"])
        lines.append(f"| {name} | {cond} | {100 * cell['mean']:.2f} | {'yes' if cell['mean'] >= floor else 'NO'} |")
    return "\n".join(lines) + "\n"


def teacher_complete_table(results: dict, config: dict) -> str:
    """The teacher on the complete test split (the main protocol's complete condition) against teacher_targets."""
    seeds = results["checkpoints"]["teacher"]
    complete = next(c for c in ("r=0.0", "{l,a,v}") if c in next(iter(seeds.values())))
    rows = [seeds[seed][complete] for seed in seeds]
    out = [f"Teacher on the complete test split ({complete}):", "", "| metric | value | target | met |",
           "|---|---|---|---|"]
    for metric, (op, v) in config["teacher_targets"].items():
        if any(metric not in r for r in rows):
            out.append(f"| {metric} | {NOT_IN_RUN} | {op} {v} | - |")
            continue
        value = float(np.mean([r[metric] for r in rows]))
        out.append(f"| {metric} | {value:.4f} | {op} {v} | {'yes' if met(value, op, v) else 'no'} |")
    return "\n".join(out) + "\n"


def summary_table(summary: dict, metrics) -> str:
    """One row per checkpoint: its protocol summary row (e.g. the P5 mean over patterns), mean ± std over seeds;
    accuracies and F1 in %, MAE and Corr as they are (the convention of the per-condition tables)."""
    from hf_mmkd.report import METRIC_NAMES

    def fmt(metric, cell):
        scale, digits = (1.0, 3) if metric in ("MAE", "Corr") else (100.0, 2)
        return f"{scale * cell['mean']:.{digits}f} ± {scale * cell['std']:.{digits}f}"

    over = "folds" if any("n_folds" in s for s in summary.values()) else "seeds"
    lines = [f"| checkpoint | {over} | summary | " + " | ".join(METRIC_NAMES.get(m, m) for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name, s in summary.items():
        label, row = next(iter(s["summary"].items()))  # the protocol's one summary row
        lines.append(f"| {name} | {s.get('n_folds', s['n_seeds'])} | {label} | "
                     + " | ".join(fmt(m, row[m]) if m in row else NOT_IN_RUN for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def modality_rows(dataset: str) -> dict:
    """{split: {"rows": n, modality: rows that have it}} of a prepared folder (its `has_<modality>` columns)."""
    from hf_mmkd.data.prepared import load_prepared

    return {split: {"rows": len(data), **{m: int(sum(data[f"has_{m}"])) for m in MODALITIES
                                          if f"has_{m}" in data.column_names}}
            for split, data in load_prepared(dataset).items()}


def unit_results(results: dict, unit: int | str) -> dict:
    """One seed's (or, in a fold run, one fold's) part of a merged results structure, the inverse of `merge` for
    it: its checkpoints' figures, its own warnings and constant, the notes every unit shares."""
    one = dict(results)
    one["checkpoints"] = {n: {k: v for k, v in per_unit.items() if k == str(unit)}
                          for n, per_unit in results["checkpoints"].items()}
    one["seeds"] = [unit]
    if isinstance(results.get("reference_value"), dict):  # folds: each fold's own constant
        one["reference_value"] = {str(unit): results["reference_value"][str(unit)]}
    one["warnings"] = [w.split(": ", 1)[1] for w in results.get("warnings", []) if w.startswith(f"seed {unit}: ")]
    return one


def reusable_units(path: Path, name: str, units: list, run: dict, data_for, protocols: list[str],
                   ) -> tuple[str | None, dict]:
    """The units (seeds, or folds `fold<k>` of a fold run) of `units` that an earlier run's record
    (`--reuse-record`, a quality_NAME.json or quality_NAME_folds.json) holds, as `{unit: {protocol: its
    results}}`, so a benchmark can be completed over several sessions without keeping checkpoints. `run` holds this
    run's `train_args`, and for a fold run its `folds` (the fold file) and `seed`; `data_for(unit)` is the data-set
    folder of a unit (a record keeps the rows and spec of its first unit, which are checked against it). Returns
    (why not, {}) unless the record is of the same benchmark and mode (and fold file, by SHA-256), has every
    protocol asked for, was trained with the same --train-args from a clean tree, on a data set with the same spec
    and rows, and nothing that decides training or evaluation (hf_mmkd/, modeling/, train.py, configs/NAME_*.yaml)
    differs between its commits and the working tree."""
    try:
        record = json.loads(path.read_text())
        held = record["results"].get(protocols[0], {}).get("seeds", [])  # the units: seeds, or fold0.. of a fold run
        stored = {str(u) for u in held}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"--reuse-record {path}: not a readable run record of quality.py ({e})", {}
    mode = "a fold run" if run.get("folds") else "a seed run"
    if record.get("dataset_name") != name or bool(record.get("folds")) != bool(run.get("folds")):
        what = f"a {'fold' if record.get('folds') else 'seed'} run of {record.get('dataset_name')!r}"
        return f"--reuse-record {path} is {what}, not {mode} of {name!r}", {}
    if run.get("folds") and (record.get("fold_file_sha256") != _file_sha256(Path(run["folds"]))
                             or record.get("seeds") != [run["seed"]]):
        return (f"--reuse-record {path} was run on another fold file than {run['folds']} or with another seed "
                f"than {run['seed']} (or before fold runs recorded their fold file's SHA-256)"), {}
    if missing := [p for p in protocols if p not in record.get("results", {})]:
        return f"--reuse-record {path} has no {', '.join(missing)} results (it has {', '.join(record['results'])})", {}
    if record.get("train_args", "") != run["train_args"]:
        return (f"--reuse-record {path} was trained with --train-args {record.get('train_args')!r}, this run with "
                f"{run['train_args']!r}"), {}
    if record.get("git_dirty") is not False:
        return (f"--reuse-record {path} was made from a tree with uncommitted changes (git_dirty: "
                f"{record.get('git_dirty')}), so what trained its units cannot be told"), {}
    for commit in dict.fromkeys([record.get("git_commit"), *record.get("evaluated_at_commits", [])]):
        code = files_changed_since(commit, "hf_mmkd", "modeling", "train.py")
        configs = configs_changed_since(commit, name)  # the training configs, not the benchmark config
        if code is None or configs is None:
            return f"--reuse-record {path}: commit {str(commit)[:10]} is not in this repository", {}
        if changed := code + configs:
            return (f"--reuse-record {path}: {', '.join(changed)} changed since its commit {commit[:10]}; its runs "
                    "would not be those of the current code and configs"), {}
    if not stored & {str(u) for u in units}:
        return f"--reuse-record {path} holds {', '.join(sorted(stored)) or 'nothing'}, none of this run's units", {}
    dataset = str(data_for(held[0]))
    if record.get("modality_rows") != modality_rows(dataset):
        return f"--reuse-record {path} was run on other rows than {dataset} has ({record.get('modality_rows')})", {}
    spec = Path(dataset) / "dataset_spec.json"
    for protocol in protocols:
        if record["results"][protocol].get("dataset_spec") != json.loads(spec.read_text()):
            return f"--reuse-record {path}: its {protocol} run read another data-set spec than {spec}", {}
    return None, {u: {p: unit_results(record["results"][p], u) for p in protocols} for u in units if str(u) in stored}


def train_unit(name: str, methods: list[str], root: Path, seed: int, extra: list[str]) -> dict | None:
    """Train (or reuse) the teacher and each method's student of one seed or fold into `root`; return
    `{checkpoint: folder}`, or None (after one line on stderr) when a student was trained with other settings."""
    teacher = root / "teacher" / "teacher"
    if not (teacher / "config.json").is_file():
        train(f"{name}_teacher.yaml", seed, root / "teacher", extra)
    checkpoints = {"teacher": teacher}
    for method in methods:
        student = root / method / "student"
        wanted = ["--config", str(REPO / "configs" / f"{name}_{method}.yaml"), "--seed", str(seed), *extra]
        if not (student / "config.json").is_file():
            train(f"{name}_{method}.yaml", seed, root / method, [*extra, "--teacher_name_or_path", str(teacher)])
        elif diffs := stale_settings(student, wanted):
            print(f"quality.py: error: {student} was trained with other settings than configs/{name}_{method}.yaml "
                  f"now asks for ({'; '.join(diffs)}); move {root / method} away or use another work folder",
                  file=sys.stderr)
            return None
        checkpoints[method] = student
    return checkpoints


def fold_count(fold_file: str) -> int:
    from hf_mmkd.data.folds import read_fold_file

    return len(read_fold_file(fold_file)["folds"])


def fold_dataset(fold_file: str, dataset: str, k: int, work: Path) -> Path:
    """Fold k of `fold_file` over the prepared folder `dataset`, written once to work/fold<k>/data and reused
    after. work/fold<k>/fold.json records which fold file made it: a work folder of another fold file is refused
    (its checkpoints were trained on other rows), never reused or replaced silently."""
    from hf_mmkd.data.folds import write_fold
    from hf_mmkd.io import OutputFile

    folder, marker = work / f"fold{k}" / "data", work / f"fold{k}" / "fold.json"
    wanted = json.dumps({"fold_file_sha256": _file_sha256(Path(fold_file)), "fold": k}, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted and (folder / "dataset_spec.json").is_file():
        return folder
    if marker.is_file() or folder.exists():
        raise ValueError(f"{work / f'fold{k}'} holds fold {k} of another fold file than {fold_file} (or an "
                         "unfinished one); move it away or use another --work")
    write_fold(fold_file, dataset, k, folder)
    OutputFile(marker, "quality.py").write(wanted)
    return folder


def _file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_fold(results: dict, key: str) -> dict:
    """One fold's evaluation, keyed by the fold instead of the run seed (every fold trains with the same seed), so
    that `merge`, `summarize` and the paired differences treat folds as they treat seeds. The constant reference
    (each fold's own train median / majority) gets one name over all folds; its values are kept per fold."""
    results = dict(results)
    reference = results.get("reference")
    checkpoints = {}
    for name, per_seed in results["checkpoints"].items():
        (metrics,) = per_seed.values()
        checkpoints[FOLD_REFERENCE if name == reference else name] = {key: metrics}
    modalities = results.get("modalities", {})
    if reference in modalities:
        modalities = {FOLD_REFERENCE if n == reference else n: v for n, v in modalities.items()}
    # fixed_conditions []: a condition that draws nothing (r = 0) ran once per seed and was copied to the others,
    # but each fold evaluates its own test rows, so over folds it is five runs with a std like any other condition.
    results.update(checkpoints=checkpoints, modalities=modalities, seeds=[key], unit="fold", fixed_conditions=[],
                   reference=FOLD_REFERENCE if reference else None,
                   reference_value={key: results.get("reference_value")})
    return results


FOLD_REFERENCE = "constant (each fold's train median or majority class)"


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-name", default="mosi", choices=benchmarks(),
                        help="which benchmark: configs/NAME_benchmark.yaml and configs/NAME_*.yaml, default folder "
                             "data_prepared/NAME")
    parser.add_argument("--dataset", default=None, help="prepared folder (default: data_prepared/NAME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="run seeds (default 1111 1112 1113; with --folds one seed for every fold, default 1111)")
    parser.add_argument("--folds", metavar="FOLDFILE", default=None,
                        help="speaker-independent folds (dataset_scripts/make_folds.py) over the prepared folder: "
                             "train and evaluate each fold with one seed; reports go to quality_NAME_folds.*")
    parser.add_argument("--fold-ids", type=int, nargs="+", default=None, metavar="K",
                        help="with --folds: only these folds (0-based) of the fold file, e.g. part of the folds in "
                             "one session; --reuse-record on their record completes the run later")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--work", default=None, help="where checkpoints go (default: the benchmark config's work)")
    parser.add_argument("--out", default="benchmarks/results", help="where the reports go")
    parser.add_argument("--protocols", nargs="+", default=None, choices=["p1", "p2", "p3", "p5"],
                        help="test protocols (default: the benchmark config's; must include its main one, the "
                             "first, which the summary refers to)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch CPU threads (default: the benchmark config's threads)")
    parser.add_argument("--train-args", default="", help="extra train.py flags for every run (e.g. fewer epochs); "
                                                         "write --train-args='--num_train_epochs 1'")
    parser.add_argument("--reuse-record", metavar="RECORD", default=None,
                        help="an earlier run's quality_NAME.json (with --folds, quality_NAME_folds.json): the seeds "
                             "(folds) of this run that it holds are taken from it, not trained or evaluated, when the "
                             "code and training configs are the same as at its commit (so a benchmark can be run "
                             "over several sessions)")
    parser.add_argument("--from-record", action="store_true",
                        help="train and evaluate nothing: rewrite the summary report (and the README section) from "
                             "the stored OUT/quality_NAME.json with the current benchmark config and table code")
    args = parser.parse_args(argv)
    name = args.dataset_name
    config = benchmark_config(name)
    if args.seeds is None:
        args.seeds = [1111] if args.folds else [1111, 1112, 1113]
    if args.fold_ids is not None and not args.folds:
        parser.error("--fold-ids selects folds of --folds FOLDFILE; give --folds too")
    if args.folds and len(args.seeds) != 1:
        parser.error("--folds trains every fold with one seed: give one value to --seeds")
    if args.folds:
        config = fold_config(config)
    stem = f"{name}_folds" if args.folds else name  # the reports' names
    dataset = args.dataset or f"data_prepared/{name}"
    work = args.work or config["work"]
    protocols = list(dict.fromkeys(args.protocols or config["protocols"]))
    main_protocol = config["protocols"][0]
    if main_protocol not in protocols:
        parser.error(f"--protocols must include {main_protocol} (the {name} summary is a {main_protocol} mean)")
    if not Path(dataset).is_dir():
        print(f"quality.py: error: no prepared dataset at {dataset}; run dataset_scripts/prepare_mmsa.py "
              f"{config['prepare']} {dataset}", file=sys.stderr)
        return 2
    if args.reuse_record and args.from_record:
        parser.error("--reuse-record completes a run by training what its record lacks; --from-record trains nothing")
    if args.from_record:
        stored = Path(args.out) / f"quality_{stem}.json"
        try:
            record = json.loads(stored.read_text())
        except (OSError, ValueError) as e:
            print(f"quality.py: error: --from-record needs the run record {stored}: {e}", file=sys.stderr)
            return 2
        status = write_summary_report(record, config, name, dataset, Path(args.out), rewritten=True)
        from hf_mmkd.evaluation import write_evaluation_report

        for protocol, results in record["results"].items():  # the per-condition reports, in the same wording
            write_evaluation_report(results, Path(args.out), stem=f"quality_{stem}_{protocol}")
        return status
    import torch

    threads = args.num_threads or config["threads"]
    if threads:
        torch.set_num_threads(threads)
    from hf_mmkd.evaluation import write_evaluation_report
    from hf_mmkd.io import atomic_write
    from hf_mmkd.report import summarize

    started = time.time()
    evaluations = {p: [] for p in protocols}
    # One unit per seed (the prepared folder's splits), or per fold of --folds (one seed; fold k's data set).
    units = [(f"seed{seed}", seed, dataset) for seed in args.seeds]
    if args.folds:
        count = fold_count(args.folds)
        if bad := [k for k in args.fold_ids or [] if not 0 <= k < count]:
            print(f"quality.py: error: --fold-ids {' '.join(map(str, bad))}: {args.folds} has folds 0 to {count - 1}",
                  file=sys.stderr)
            return 2
        units = [(f"fold{k}", args.seeds[0], fold_dataset(args.folds, dataset, k, Path(work)))
                 for k in (dict.fromkeys(args.fold_ids) if args.fold_ids is not None else range(count))]
    ids = [key if args.folds else seed for key, seed, _ in units]  # how a record names each unit
    reused = {}
    if args.reuse_record:
        run = {"train_args": args.train_args, "folds": args.folds, "seed": args.seeds[0]}
        def data_for(unit):  # a seed's data set is the prepared folder; fold k's is written from it (once)
            return fold_dataset(args.folds, dataset, int(str(unit)[4:]), Path(work)) if args.folds else dataset

        problem, reused = reusable_units(Path(args.reuse_record), name, ids, run, data_for, protocols)
        if problem:
            print(f"quality.py: error: {problem}", file=sys.stderr)
            return 2
    for unit, (key, seed, data) in zip(ids, units):
        if unit in reused:
            print(f"[quality] {key}: taken from {args.reuse_record} (--reuse-record)", flush=True)
            for protocol in evaluations:
                evaluations[protocol].append(reused[unit][protocol])
            continue
        root = Path(work) / key
        extra = ["--dataset", str(data), *args.train_args.split()]
        checkpoints = train_unit(name, args.methods, root, seed, extra)
        if checkpoints is None:
            return 2
        for protocol in evaluations:
            results = evaluate_seed(checkpoints, str(data), protocol, seed, root / f"evaluation_{protocol}.json", name)
            evaluations[protocol].append(results if not args.folds else as_fold(results, key))
    if args.folds:
        dataset = str(units[0][2])  # the modality counts and the report's data path: fold 0's
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged = {p: merge(v) for p, v in evaluations.items()}
    if reused:
        earlier = json.loads(Path(args.reuse_record).read_text())
        for results in merged.values():
            results["notes"].append(
                f"{'Folds' if args.folds else 'Seeds'} {', '.join(map(str, reused))}: trained and evaluated by "
                f"`{earlier['command']}` at commit {earlier['git_commit'][:10]}, taken from its record with "
                f"--reuse-record {args.reuse_record} (hf_mmkd/, modeling/, train.py and configs/{name}_*.yaml are "
                "the same there and here).")
    extra_notes = {"p1": "P1 masks applied at test time to models trained with the P2 view; the P1 literature "
                         "trains one model per rate."}
    rows = modality_rows(dataset)
    # Modalities that no training row has but the test split has: train.py builds no encoder for them.
    untrained = [m for m in MODALITIES if rows.get("train", {}).get(m, 0) == 0 and rows.get("test", {}).get(m, 0) > 0]
    untrained_note = None
    if untrained:
        where = "; ".join(f"{m}: 0 of {rows['train']['rows']} train rows, {rows['test'][m]} of {rows['test']['rows']} "
                          "test rows" for m in untrained)
        letters = "/".join(LETTER[m] for m in untrained)
        untrained_note = (f"Modalities absent from the train split ({where}): train.py builds no encoder for them, "
                          f"so no model reads {letters} and the patterns that keep {letters} are not evaluated.")
    for protocol, results in merged.items():
        for note in (extra_notes.get(protocol), untrained_note):  # once, also when a reused seed brought it
            if note and note not in results.setdefault("notes", []):
                results["notes"].append(note)
        write_evaluation_report(results, out, stem=f"quality_{stem}_{protocol}")
    summaries = {p: summarize(r) for p, r in merged.items()}
    if args.folds:  # one seed per fold: the means and stds are over folds
        for per_checkpoint in summaries.values():
            for row in per_checkpoint.values():
                row.update(n_folds=row["n_seeds"], n_seeds=1)
    summary = summaries[main_protocol]
    main = merged[main_protocol]
    import transformers
    record = {
        "command": "python benchmarks/quality.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(), "git_dirty": git_dirty(), "dataset_name": name, "seeds": args.seeds,
        "methods": args.methods, "train_args": args.train_args, "dataset": dataset, "split": "test",
        **({"folds": args.folds, "fold_file_sha256": _file_sha256(Path(args.folds)), "n_folds": len(units),
            "fold_datasets": [str(u[2]) for u in units]}
           if args.folds else {}),
        "protocols": protocols, "wall_time_s": time.time() - started,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        **({"reused": {"record": args.reuse_record, "units": list(reused)}} if reused else {}),
        "modality_rows": rows, "untrained_modalities": untrained, "metric_set": main["metric_set"],
        "reference": main["reference"], "reference_value": main["reference_value"],
        "evaluated_at_commits": sorted({r.get("evaluated_at_commit", "unknown") for v in evaluations.values()
                                        for r in v}),
        "results": merged, f"{main_protocol}_summary": summary, "summaries": summaries,
        "paired_differences": paired_differences(main, main["reference"]),
    }
    atomic_write(out / f"quality_{stem}.json", json.dumps(record, indent=2, default=float))
    return write_summary_report(record, config, name, dataset, out)


def write_summary_report(record: dict, config: dict, name: str, dataset: str, out: Path, rewritten: bool = False,
                         ) -> int:
    """quality_NAME_targets.md (the benchmark config has targets) or quality_NAME_summary.md from a run's record
    (what quality_NAME.json holds; quality_NAME_folds* for a fold run, whose record has `n_folds`), and the
    README's generated section when `out` is benchmarks/results. Columns are the metric set's key metrics; one the
    record lacks (a run made before the metric existed) shows `NOT_IN_RUN`. `rewritten`: the report is rewritten
    from a stored record (`--from-record`), which it says."""
    from hf_mmkd.io import atomic_write
    from hf_mmkd.metrics import KEY_METRICS
    from hf_mmkd.report import DATASET_NAMES, PROTOCOLS

    main_protocol = config["protocols"][0]
    main, summary = record["results"][main_protocol], record[f"{main_protocol}_summary"]
    folds = record.get("n_folds")
    if folds:  # records written before the fold wording: the same figures, said per fold
        for results in record["results"].values():
            results.update(unit="fold", notes=fold_notes(results), fixed_conditions=[])  # see `as_fold`
    stem = f"{name}_folds" if folds else name
    over = f"{folds} folds (seed {record['seeds'][0]} each)" if folds else f"{len(record['seeds'])} seed(s)"
    title = DATASET_NAMES.get(name, name)
    text = (f"# {title} quality under missing modalities\n\n" + f"Command: `{record['command']}` (commit "
            f"{record['git_commit'][:10]}).\n\n")
    if rewritten:
        text += (f"Tables rewritten from that run's `quality_{stem}.json` by `python benchmarks/quality.py "
                 f"--dataset-name {name}{' --folds FOLDFILE' if folds else ''} --from-record` (commit {git_commit()[:10]}; nothing retrained or re-evaluated) "
                 f"with the current benchmark config; a metric that run did not compute shows \"{NOT_IN_RUN}\".")
        changed = configs_changed_since(record["git_commit"], name)
        if changed is None:
            text += (f" Whether `configs/{name}_*.yaml` changed since that run could not be checked (commit "
                     f"{record['git_commit'][:10]} is not in this repository).")
        elif changed:
            text += (f" The training configs changed since that run ({', '.join(f'`{c}`' for c in changed)}): the "
                     f"figures are those of the configs at commit {record['git_commit'][:10]}, not of the current "
                     "ones; rerun the benchmark to measure these.")
        text += "\n\n"
    protocol_title = PROTOCOLS[main_protocol]["title"]
    if config.get("targets"):
        if config.get("teacher_targets"):
            text += teacher_complete_table(main, config) + "\n"
        text += targets_table(summary, over, config, protocol_title, main["reference"],
                              KEY_METRICS[main["metric_set"]])
        report = out / f"quality_{stem}_targets.md"
    else:
        text += (f"{protocol_title}; {title} test split{'s of the folds' if folds else ''}, mean ± std over "
                 f"{over} (population std), model selection on validation only (training and validation views: "
                 f"`configs/{name}_*.yaml`). Per-condition rows and the plot: `quality_{stem}_{main_protocol}.md` / "
                 "`.png`. The row `" + str(main["reference"]) + "` is the constant predictor (reference).\n\n"
                 + summary_table(summary, KEY_METRICS[main["metric_set"]]))
        report = out / f"quality_{stem}_summary.md"
    text += "\n" + paired_table(record["paired_differences"], config, "fold" if folds else "seed")
    if config.get("sign_floor"):
        from hf_mmkd.data.spec import load_spec

        text += "\n" + sign_floor_table(main, load_spec(dataset), config["sign_floor"], main["reference"], dataset)
    notes = list(dict.fromkeys(main.get("warnings", []) + main.get("notes", [])))
    text += "\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write(report, text)
    if out.resolve() == RESULTS.resolve():  # the committed results: the README shows the same tables
        update_readme(f"quality:{stem}", text)
    print(text)
    return 0


def update_readme(section: str, text: str, readme: Path = REPO / "README.md") -> None:
    """Put a generated report (without its title line) between the README's `<!-- <section>:start -->` and
    `<!-- <section>:end -->` markers (when it has them), so that the README's tables are the generated ones."""
    from hf_mmkd.io import atomic_write

    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    current = readme.read_text(encoding="utf-8")
    if start not in current or end not in current:
        return
    body = text.split("\n", 2)[2].strip()  # without the report's title line
    head, rest = current.split(start, 1)
    atomic_write(readme, f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    from hf_mmkd.io import run_main

    sys.exit(run_main("quality.py", main))
