"""Ablations on CMU-MOSI (P2, test split): every method with each of its terms removed and each shared fix removed.

    python benchmarks/ablations.py --seeds 1111 1112 1113          # -> benchmarks/results/ablations_mosi.{json,md}

Each variant is the method's YAML (`configs/mosi_<method>.yaml`) plus the flags below: a term is removed by setting
its weight to 0 in `method_kwargs` (merged into the YAML's), a fix by switching its flag off. Every variant of a
seed distils the same teacher, the one `benchmarks/quality.py` trained for that seed (`--teachers`, trained here if
absent), and is selected on the validation split like the full method. Variants are tested like quality.py's
checkpoints (P2, r = 0.0 .. 0.9, mask seed = run seed) and compared to the full method and to the `none`
student of the same seed (paired differences: same teacher, same masks). The full-method and `none` checkpoints
are quality.py's (`--reference-work`); they are trained here if absent. Nothing here is used to choose a setting:
the settings were chosen on the validation split (docs/methods.md#shared-machinery).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality  # noqa: E402  (benchmarks/ is not a package)

FIXES = {  # fix -> the flags that remove it (shared machinery, hf_mmkd.trainer / train.py)
    "cross-fitted teacher": ["--teacher_folds", "0"],
    "term balancing": ["--balance_terms", "false"],
    "recoverability weights": ["--recoverability_floor", "null"],
}
TERMS = {  # method -> term -> method_kwargs that remove it
    "logit": {},
    "corrkd": {"SCD": {"scd_weight": 0.0}, "CPD": {"cpd_weight": 0.0}, "RCD": {"rcd_weight": 0.0}},
    "mmckd": {"MVSC": {"weight": 0.0}, "label positives": {"use_label_positives": False}},
    "mitr": {"SimSiam": {"attra_weight": 0.0}, "reconstruction": {"recon_weight": 0.0}, "KD group": {"kd_weight": 0.0}},
    "crossmodal": {"I(T;S)": {"ts_weight": 0.0}, "I(T;A)": {"alpha": 0.0}, "adversarial H(T|S)": {"beta": 0.0}},
}
METRICS = ("Non0_acc_2", "Non0_bal_acc_2", "MAE", "Corr", "Mult_acc_7")


def yaml_config(method: str) -> dict:
    return yaml.safe_load((REPO / "configs" / f"mosi_{method}.yaml").read_text()) or {}


def variants(method: str) -> list[tuple[str, list[str]]]:
    """(variant name, extra train.py flags) of a method: each term removed, then each fix the YAML uses removed."""
    config = yaml_config(method)
    kwargs = dict(config.get("method_kwargs") or {})
    out = []
    for term, change in TERMS[method].items():
        out.append((f"- {term}", ["--method_kwargs", json.dumps({**kwargs, **change})]))
    teacher_folds = yaml_config("teacher").get("teacher_folds", 0)
    uses = {"cross-fitted teacher": bool(config.get("teacher_folds", teacher_folds)) and method in ("logit", "corrkd"),
            "term balancing": bool(config.get("balance_terms")),
            "recoverability weights": config.get("recoverability_floor") is not None}
    out += [(f"- {fix}", flags) for fix, flags in FIXES.items() if uses[fix]]
    return out


def p2_mean(results: dict, name: str, seed: int) -> dict[str, float]:
    conditions = results["checkpoints"][name][str(seed)]
    return {m: float(np.mean([c[m] for c in conditions.values()])) for m in METRICS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
    parser.add_argument("--methods", nargs="+", default=list(TERMS), choices=list(TERMS))
    parser.add_argument("--dataset", default="data_prepared/mosi")
    parser.add_argument("--reference-work", default="outputs/quality",
                        help="quality.py's work folder: its teachers, full methods and `none` students")
    parser.add_argument("--work", default="outputs/ablations", help="where the variants' checkpoints go")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--train-args", default="", help="extra train.py flags for every run")
    parser.add_argument("--from-record", action="store_true",
                        help="train and evaluate nothing: rewrite OUT/ablations_mosi.md (and the README section) "
                             "from the stored OUT/ablations_mosi.json with the current table code")
    args = parser.parse_args(argv)
    if args.from_record:
        stored = Path(args.out) / "ablations_mosi.json"
        try:
            record = json.loads(stored.read_text())
        except (OSError, ValueError) as e:
            print(f"ablations.py: error: --from-record needs the run record {stored}: {e}", file=sys.stderr)
            return 2
        return write_table(record, Path(args.out), rewritten=True)
    if not Path(args.dataset).is_dir():
        print(f"ablations.py: error: no prepared dataset at {args.dataset}", file=sys.stderr)
        return 2
    from hf_mmkd.io import atomic_write

    started = time.time()
    extra = ["--dataset", args.dataset, *shlex.split(args.train_args)]
    rows: dict[str, dict[str, list[dict]]] = {}  # "method / variant" -> {"variant": [...], "full": [...], "none": [...]}
    for seed in args.seeds:
        ref = Path(args.reference_work) / f"seed{seed}"
        teacher = ref / "teacher" / "teacher"
        if not (teacher / "config.json").is_file():
            quality.train("mosi_teacher.yaml", seed, ref / "teacher", extra)
        for method in ["none", *args.methods]:
            if not (ref / method / "student" / "config.json").is_file():
                quality.train(f"mosi_{method}.yaml", seed, ref / method,
                              [*extra, "--teacher_name_or_path", str(teacher)])
        for method in args.methods:
            checkpoints = {"none": ref / "none" / "student", "full": ref / method / "student"}
            names = {}
            for i, (variant, flags) in enumerate(variants(method)):
                out = Path(args.work) / f"seed{seed}" / method / f"v{i}"
                if not (out / "student" / "config.json").is_file():
                    quality.train(f"mosi_{method}.yaml", seed, out,
                                  [*extra, "--teacher_name_or_path", str(teacher), *flags])
                checkpoints[f"v{i}"] = out / "student"
                names[f"v{i}"] = variant
            results = quality.evaluate_seed(checkpoints, args.dataset, "p2", seed,
                                            Path(args.work) / f"seed{seed}" / method / "evaluation_p2.json", "mosi")
            for key, variant in [("full", "full method"), *names.items()]:
                row = rows.setdefault(f"{method} | {variant}", {"variant": [], "full": [], "none": []})
                row["variant"].append(p2_mean(results, key, seed))
                row["full"].append(p2_mean(results, "full", seed))
                row["none"].append(p2_mean(results, "none", seed))

    record = {"command": "python benchmarks/ablations.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "git_commit": quality.git_commit(), "git_dirty": quality.git_dirty(), "seeds": args.seeds,
              "machine": quality.machine(), "wall_time_s": time.time() - started,
              "variants": {m: variants(m) for m in args.methods}, "rows": rows}
    atomic_write(Path(args.out) / "ablations_mosi.json", json.dumps(record, indent=2))
    return write_table(record, Path(args.out))


def write_table(record: dict, out: Path, rewritten: bool = False) -> int:
    """ablations_mosi.md from a run's record (and the README section when `out` is benchmarks/results). A metric
    the record lacks (a run made before the metric existed) shows `quality.NOT_IN_RUN`, never a made-up value.
    `rewritten`: the table is rewritten from a stored record (`--from-record`), which it says."""
    from hf_mmkd.io import atomic_write

    seeds = record["seeds"]
    lines = [f"# CMU-MOSI ablations (P2 mean over r = 0.0..0.9, test split, {len(seeds)} seed(s): "
             f"{' '.join(map(str, seeds))})", "",
             f"Command: `{record['command']}` (commit {record['git_commit'][:10]}). Paired differences per seed "
             "(same teacher, same test masks), mean ± std (population) over seeds; Non0 Acc-2 and its balanced "
             "version (Bal. Acc-2: mean of the recalls on the two signs, any constant predictor scores 50.00) in "
             "points, MAE as is.", ""]
    if rewritten:
        lines += [f"Table rewritten from that run's `ablations_mosi.json` by `python benchmarks/ablations.py "
                  f"--from-record` (commit {quality.git_commit()[:10]}; nothing retrained or re-evaluated); a metric "
                  f"that run did not compute shows \"{quality.NOT_IN_RUN}\".", ""]
    lines += ["| method | variant | Non0 Acc-2 | Bal. Acc-2 | MAE | Δ Acc-2 vs full | Δ Acc-2 vs none | "
              "Δ Bal. Acc-2 vs none | Δ MAE vs none |", "|---|---|---|---|---|---|---|---|---|"]

    def ms(values, scale=1.0, digits=2, sign="+"):
        return f"{scale * np.mean(values):{sign}.{digits}f} ± {scale * np.std(values):.{digits}f}"

    def column(data, metric, against=None):
        """The variant's values of `metric` per seed, or its per-seed differences to `against`; None if absent."""
        if any(metric not in v for v in data["variant"] + data.get(against, [])):
            return None
        if against is None:
            return [v[metric] for v in data["variant"]]
        return [v[metric] - o[metric] for v, o in zip(data["variant"], data[against])]

    for label, data in record["rows"].items():
        cells = []
        for metric, against, scale, digits, sign in (
                ("Non0_acc_2", None, 100, 2, ""), ("Non0_bal_acc_2", None, 100, 2, ""), ("MAE", None, 1.0, 3, ""),
                ("Non0_acc_2", "full", 100, 2, "+"), ("Non0_acc_2", "none", 100, 2, "+"),
                ("Non0_bal_acc_2", "none", 100, 2, "+"), ("MAE", "none", 1.0, 3, "+")):
            values = column(data, metric, against)
            cells.append(quality.NOT_IN_RUN if values is None else ms(values, scale, digits, sign))
        method, variant = label.split(" | ")
        cell = variant.replace("|", "\\|")  # a pipe in a term's name (H(T|S)) would split the Markdown cell
        lines.append(f"| {method} | {cell} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    atomic_write(out / "ablations_mosi.md", text)
    if out.resolve() == quality.RESULTS.resolve():
        quality.update_readme("ablations:mosi", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
