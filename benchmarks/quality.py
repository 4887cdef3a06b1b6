"""Quality under missing modalities: teacher, the `none`/`logit` baselines and every KD method, per dataset.

    python benchmarks/quality.py --seeds 1111 1112 1113                       # CMU-MOSI -> results/quality_mosi.*
    python benchmarks/quality.py --dataset-name mmmo --seeds 1111 1112 1113   # ICT-MMMO -> results/quality_mmmo.*

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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def code_changed_since(commit: str | None) -> bool:
    """Whether hf_mmkd/ or modeling/ in the working tree differ from `commit` (True when that cannot be told)."""
    if not commit or commit == "unknown":
        return True
    try:
        return subprocess.run(["git", "diff", "--quiet", commit, "--", "hf_mmkd", "modeling"], cwd=REPO,
                              capture_output=True).returncode != 0
    except OSError:
        return True


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
    return merged


def _cell(summary: dict, name: str, metric: str) -> tuple[float, float]:
    block = next(iter(summary[name]["summary"].values()))  # the protocol's one summary row
    return block[metric]["mean"], block[metric]["std"]


def targets_table(summary: dict, n_seeds: int, config: dict, protocol_title: str, reference: str | None) -> str:
    """The benchmark's targets against the main protocol's means (test split), met or not, and KD vs `none`."""
    targets = {m: tuple(v) for m, v in config["targets"].items()}
    lines = [f"{protocol_title}; test split, mean ± std over {n_seeds} seed(s).", "",
             "| checkpoint | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for name in summary:
        lines.append(f"| {name} | " + " | ".join("{:.4f} ± {:.4f}".format(*_cell(summary, name, m)) for m in targets)
                     + " |")
    lines += ["", "| target | " + " | ".join(f"{op} {v}" for op, v in targets.values()) + " |", ""]
    students = [n for n in summary if n not in ("teacher", reference)]
    if students:
        first = next(iter(targets))
        best = max(students, key=lambda n: _cell(summary, n, first)[0])
        hit = [m for m, (op, v) in targets.items() if met(_cell(summary, best, m)[0], op, v)]
        lines.append(f"Best student by mean {first}: **{best}**; targets met: {hit or 'none'}; "
                     f"not met: {[m for m in targets if m not in hit] or 'none'}.")
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


def paired_table(diffs: dict, config: dict) -> str:
    """Every KD student against `none`, paired per seed, against `kd_vs_none`'s targets (met or not)."""
    from hf_mmkd.report import _LOWER_IS_BETTER

    wanted = config.get("kd_vs_none") or {}
    if not diffs or not wanted:
        return ""
    metrics = list(wanted)
    head = ("Every KD student minus the `none` student of the same seed (same teacher, same test masks), main "
            "protocol mean; mean ± std (population) over seeds, then the per-seed differences and the seeds where "
            "KD is better. Accuracies and F1 in points, MAE and Corr as they are (MAE: lower is better).")
    lines = [head, "", "| student | " + " | ".join(metrics) + " | per-seed " + metrics[0] + " | KD better |",
             "|---|" + "---|" * (len(metrics) + 2)]
    improvement = {}
    for name, per_metric in diffs.items():
        cells = []
        for m in metrics:
            values = np.asarray(per_metric.get(m, [np.nan])) * _points(m)
            cells.append(f"{values.mean():+.2f} ± {values.std():.2f}" if _points(m) > 1 else
                         f"{values.mean():+.3f} ± {values.std():.3f}")
        first = np.asarray(per_metric[metrics[0]]) * _points(metrics[0])
        sign = -1.0 if metrics[0] in _LOWER_IS_BETTER else 1.0
        wins = int((sign * first > 0).sum())
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + ", ".join(f"{v:+.2f}" for v in first)
                     + f" | {wins}/{len(first)} |")
        improvement[name] = {m: (-1.0 if m in _LOWER_IS_BETTER else 1.0) * float(np.mean(per_metric[m])) * _points(m)
                             for m in metrics if m in per_metric}
    lines.append("")
    for m, rule in wanted.items():
        rule = rule or {}
        unit = "points" if _points(m) > 1 else ""
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


def sign_floor_table(results: dict, spec, metric: str, reference: str | None) -> str:
    """No checkpoint below the best constant-sign prediction (the test split's majority sign) in `metric` at any
    condition (mean over seeds)."""
    from hf_mmkd.metrics import metric_fn
    from hf_mmkd.report import summarize

    if spec.task != "regression":
        return ""
    from hf_mmkd.data.prepared import load_prepared

    labels = np.asarray(load_prepared(results["dataset_path"])[results["split"]][spec.label_column], np.float32)
    fn = metric_fn(spec)
    lo, hi = spec.label_range
    floor = max(fn(np.full_like(labels, v), labels)[metric] for v in (lo, hi))
    lines = [f"Sign floor: predicting the test split's majority sign for every row gives {metric} "
             f"{100 * floor:.2f}; the lowest condition of each checkpoint (mean over seeds):", "",
             "| checkpoint | lowest condition | " + metric + " | at or above the floor |", "|---|---|---|---|"]
    for name, s in summarize(results).items():
        if name == reference:
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

    lines = ["| checkpoint | seeds | summary | " + " | ".join(METRIC_NAMES.get(m, m) for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name, s in summary.items():
        label, row = next(iter(s["summary"].items()))  # the protocol's one summary row
        lines.append(f"| {name} | {s['n_seeds']} | {label} | " + " | ".join(fmt(m, row[m]) for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def modality_rows(dataset: str) -> dict:
    """{split: {"rows": n, modality: rows that have it}} of a prepared folder (its `has_<modality>` columns)."""
    from hf_mmkd.data.prepared import load_prepared

    return {split: {"rows": len(data), **{m: int(sum(data[f"has_{m}"])) for m in MODALITIES
                                          if f"has_{m}" in data.column_names}}
            for split, data in load_prepared(dataset).items()}


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
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
    args = parser.parse_args(argv)
    name = args.dataset_name
    config = benchmark_config(name)
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
    import torch

    threads = args.num_threads or config["threads"]
    if threads:
        torch.set_num_threads(threads)
    from hf_mmkd.evaluation import write_evaluation_report
    from hf_mmkd.io import atomic_write
    from hf_mmkd.metrics import KEY_METRICS
    from hf_mmkd.report import DATASET_NAMES, PROTOCOLS, summarize

    extra = ["--dataset", dataset, *args.train_args.split()]
    started = time.time()
    evaluations = {p: [] for p in protocols}
    for seed in args.seeds:
        root = Path(work) / f"seed{seed}"
        teacher = root / "teacher" / "teacher"
        if not (teacher / "config.json").is_file():
            train(f"{name}_teacher.yaml", seed, root / "teacher", extra)
        checkpoints = {"teacher": teacher}
        for method in args.methods:
            student = root / method / "student"
            wanted = ["--config", str(REPO / "configs" / f"{name}_{method}.yaml"), "--seed", str(seed), *extra]
            if not (student / "config.json").is_file():
                train(f"{name}_{method}.yaml", seed, root / method, [*extra, "--teacher_name_or_path", str(teacher)])
            elif diffs := stale_settings(student, wanted):
                print(f"quality.py: error: {student} was trained with other settings than configs/{name}_{method}.yaml "
                      f"now asks for ({'; '.join(diffs)}); move {root / method} away or use another work folder",
                      file=sys.stderr)
                return 2
            checkpoints[method] = student
        for protocol in evaluations:
            evaluations[protocol].append(evaluate_seed(checkpoints, dataset, protocol, seed,
                                                       root / f"evaluation_{protocol}.json", name))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged = {p: merge(v) for p, v in evaluations.items()}
    if "p1" in merged:
        merged["p1"].setdefault("notes", []).append("P1 masks applied at test time to models trained with the P2 "
                                                    "view; the P1 literature trains one model per rate.")
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
        if untrained_note:
            results.setdefault("notes", []).append(untrained_note)
        write_evaluation_report(results, out, stem=f"quality_{name}_{protocol}")
    summaries = {p: summarize(r) for p, r in merged.items()}
    summary = summaries[main_protocol]
    main = merged[main_protocol]
    import transformers
    record = {
        "command": "python benchmarks/quality.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(), "git_dirty": git_dirty(), "dataset_name": name, "seeds": args.seeds,
        "methods": args.methods, "train_args": args.train_args, "dataset": dataset, "split": "test",
        "protocols": protocols, "wall_time_s": time.time() - started,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "modality_rows": rows, "untrained_modalities": untrained, "metric_set": main["metric_set"],
        "reference": main["reference"], "reference_value": main["reference_value"],
        "evaluated_at_commits": sorted({r.get("evaluated_at_commit", "unknown") for v in evaluations.values()
                                        for r in v}),
        "results": merged, f"{main_protocol}_summary": summary, "summaries": summaries,
        "paired_differences": paired_differences(main, main["reference"]),
    }
    atomic_write(out / f"quality_{name}.json", json.dumps(record, indent=2, default=float))
    title = DATASET_NAMES.get(name, name)
    text = (f"# {title} quality under missing modalities\n\n" + f"Command: `{record['command']}` (commit "
            f"{record['git_commit'][:10]}).\n\n")
    protocol_title = PROTOCOLS[main_protocol]["title"]
    if config.get("targets"):
        if config.get("teacher_targets"):
            text += teacher_complete_table(main, config) + "\n"
        text += targets_table(summary, len(args.seeds), config, protocol_title, main["reference"])
        report = out / f"quality_{name}_targets.md"
    else:
        text += (f"{protocol_title}; {title} test split, mean ± std over {len(args.seeds)} "
                 f"seed(s) (population std), model selection on validation only (training and validation views: "
                 f"`configs/{name}_*.yaml`). Per-condition rows and the plot: `quality_{name}_{main_protocol}.md` / "
                 "`.png`. The row `" + str(main["reference"]) + "` is the constant predictor (reference).\n\n"
                 + summary_table(summary, KEY_METRICS[main["metric_set"]]))
        report = out / f"quality_{name}_summary.md"
    text += "\n" + paired_table(record["paired_differences"], config)
    if config.get("sign_floor"):
        from hf_mmkd.data.spec import load_spec

        text += "\n" + sign_floor_table(main, load_spec(dataset), config["sign_floor"], main["reference"])
    notes = list(dict.fromkeys(main.get("warnings", []) + main.get("notes", [])))
    text += "\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes)
    atomic_write(report, text)
    if out.resolve() == RESULTS.resolve():  # the committed results: the README shows the same tables
        update_readme(f"quality:{name}", text)
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
    sys.exit(main())
