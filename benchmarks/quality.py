"""Quality under missing modalities: teacher, the `none`/`logit` baselines and every KD method, per dataset.

    python benchmarks/quality.py --seeds 1111 1112 1113                       # CMU-MOSI -> results/quality_mosi.*
    python benchmarks/quality.py --dataset-name mmmo --seeds 1111 1112 1113   # ICT-MMMO -> results/quality_mmmo.*

One code path for every dataset `NAME` (`--dataset-name`, default mosi; prepared folder data_prepared/NAME).
Per seed: the teacher (configs/NAME_teacher.yaml), then each method's student from its YAML
(configs/NAME_<method>.yaml, the same missing-modality training view for all students of a dataset), model
selection on the validation split only. Then every checkpoint is evaluated on the TEST split, mask seed = run
seed, with the dataset's protocols (`--protocols` overrides them):
- mosi: P2 (LNLN): r = 0.0 .. 0.9, the same r for every modality; summary = mean over r. P1 masks (token/frame
  drop at r = 0.0 .. 1.0, MMSA's fixed per-modality seeds) on the same checkpoints; summary = AUILC. NOTE: the
  P1 literature trains one model per rate; here the P2-trained models are only *tested* with P1 masks, which is
  a different (harder to compare) quantity and is labelled as such. Students train with the P2 view.
- mmmo: P5 (CMAD): the seven fixed availability patterns {l} .. {l,a,v}; summary = mean over the patterns.
  Students train with the P5 view. ICT-MMMO's train split has no text, so train.py builds no text encoder and
  P5 evaluates the patterns the models read, {a}, {v}, {a,v}; the reports name the modality and the patterns
  left out (found from the data and the checkpoints, not typed in). Ratings 1..5 are shifted by -3 for MOSI's
  metrics (evaluation, and the validation metrics during training).
Writes, with NAME as above and P each protocol: quality_NAME.json (every number, the command, seeds, git
commit, versions, machine), quality_NAME_P.json / .md / .png (per-condition tables and the robustness plot),
and quality_NAME_targets.md for mosi (the issue's targets, met or not) or quality_NAME_summary.md for the
others (each checkpoint's protocol mean ± std). No number is typed in.
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
METHODS = ("none", "logit", "corrkd", "mmckd", "mitr", "crossmodal")
MODALITIES = ("text", "audio", "vision")
LETTER = {"text": "l", "audio": "a", "vision": "v"}
# Per dataset: the test protocols (the first is the one the summary refers to), the prepare_mmsa.py input, and
# torch's CPU threads (None: torch's default). ICT-MMMO's models are tiny (<= 20 feature steps, 220 rows): one
# thread is faster, and on a busy 2-core machine extra threads spin and slow a run down more than 10x.
DATASETS = {
    "mosi": {"protocols": ("p2", "p1"), "prepare": "../shared/data/mosi/mosi_text_audio.pkl", "threads": None},
    "mmmo": {"protocols": ("p5",), "prepare": "../shared/data/mmmo/mmmo_features.pkl --label-range 1 5",
             "threads": 1},
}
SUMMARY_METRICS = ("Non0_acc_2", "Non0_F1_score", "MAE", "Corr", "Mult_acc_7")
# Issue targets (P2 mean over r, test split) and the reference rows they come from.
TARGETS = {"Non0_acc_2": (">=", 0.740), "Non0_F1_score": (">=", 0.740), "MAE": ("<=", 1.00), "Corr": (">=", 0.56),
           "Mult_acc_7": (">=", 0.365)}
TEACHER_TARGETS = {"Non0_acc_2": (">=", 0.840), "MAE": ("<=", 0.80)}


def train(config: str, seed: int, out: Path, extra: list[str]) -> None:
    from hf_mmkd.training import main

    argv = ["--config", str(REPO / "configs" / config), "--seed", str(seed), "--output_dir", str(out), *extra]
    print(f"[quality] train.py {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"training failed: {config} seed {seed}")


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


def merge(per_seed: list[dict]) -> dict:
    """Join the per-seed evaluation results (same protocol) into one results structure."""
    merged = dict(per_seed[0])
    merged["checkpoints"], merged["modalities"], notes = {}, {}, []
    for results in per_seed:
        for name, seeds in results["checkpoints"].items():
            merged["checkpoints"].setdefault(name, {}).update(seeds)
        for name, mods in results.get("modalities", {}).items():  # what each checkpoint was evaluated on
            have = merged["modalities"].setdefault(name, [])
            have += [m for m in mods if m not in have]
        notes += [n for n in results.get("notes", []) if n not in notes]  # each seed's notes, once
    merged["notes"] = notes
    return merged


def targets_table(summary: dict, n_seeds: int) -> str:
    """The issue's targets against the P2 means (test split), met or not, and KD vs the `none` student."""
    def cell(name, metric):
        s = summary[name]["summary"]
        block = next(iter(s.values()))  # the protocol's one summary row (mean over r)
        return block[metric]["mean"], block[metric]["std"]

    lines = [f"P2 mean over r = 0.0..0.9 on the MOSI test split, mean ± std over {n_seeds} seed(s).", "",
             "| checkpoint | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for name in summary:
        cells = []
        for metric in TARGETS:
            mean, std = cell(name, metric)
            cells.append(f"{mean:.4f} ± {std:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| target | " + " | ".join(f"{op} {v}" for op, v in TARGETS.values()) + " |", ""]
    students = [n for n in summary if n not in ("teacher", "none")]
    if students and "none" in summary:
        best = max(students, key=lambda n: cell(n, "Non0_acc_2")[0])
        met = [m for m, (op, v) in TARGETS.items()
               if (cell(best, m)[0] >= v if op == ">=" else cell(best, m)[0] <= v)]
        delta = 100 * (cell(best, "Non0_acc_2")[0] - cell("none", "Non0_acc_2")[0])
        lines.append(f"Best KD student by mean Non0 Acc-2: **{best}**; targets met: {met or 'none'}; "
                     f"not met: {[m for m in TARGETS if m not in met] or 'none'}.")
        lines.append(f"Best KD student minus the `none` student, mean Non0 Acc-2: {delta:+.2f} points "
                     f"(target >= +1.0): {'met' if delta >= 1.0 else 'NOT met'}.")
    return "\n".join(lines) + "\n"


def teacher_complete_table(p2: dict) -> str:
    rows = [p2["checkpoints"]["teacher"][seed]["r=0.0"] for seed in p2["checkpoints"]["teacher"]]
    out = ["Teacher on the complete test split (r = 0):", "", "| metric | value | target | met |", "|---|---|---|---|"]
    for metric, (op, v) in TEACHER_TARGETS.items():
        value = float(np.mean([r[metric] for r in rows]))
        met = value >= v if op == ">=" else value <= v
        out.append(f"| {metric} | {value:.4f} | {op} {v} | {'yes' if met else 'no'} |")
    return "\n".join(out) + "\n"


def summary_table(summary: dict, metrics=SUMMARY_METRICS) -> str:
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


def constant_reference(dataset: str, name: str) -> dict:
    """Test metrics of a constant prediction equal to the train split's median label (a floor for MAE)."""
    from hf_mmkd.data.prepared import load_prepared
    from hf_mmkd.evaluation import metric_scheme

    splits = load_prepared(dataset)
    scheme = metric_scheme(name)
    train, test = (np.asarray(splits[s][scheme.label_column], dtype=np.float32) for s in ("train", "test"))
    median = float(np.median(train))
    metrics = scheme(np.full_like(test, median), test)
    return {"prediction": median, **{k: float(v) for k, v in metrics.items() if k != "Corr"}}


def machine() -> dict:
    import torch

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-name", default="mosi", choices=sorted(DATASETS),
                        help="which benchmark: configs/NAME_*.yaml, default folder data_prepared/NAME")
    parser.add_argument("--dataset", default=None, help="prepared folder (default: data_prepared/NAME)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--work", default=None, help="where checkpoints go (default: outputs/quality for mosi, "
                                                     "outputs/quality_NAME otherwise)")
    parser.add_argument("--out", default="benchmarks/results", help="where the reports go")
    parser.add_argument("--protocols", nargs="+", default=None, choices=["p1", "p2", "p3", "p5"],
                        help="test protocols (default: mosi p2 p1, mmmo p5; must include the dataset's main one, "
                             "which the summary refers to)")
    parser.add_argument("--num-threads", type=int, default=None,
                        help="torch CPU threads (default: 1 for mmmo, torch's default for mosi)")
    parser.add_argument("--train-args", default="", help="extra train.py flags for every run (e.g. fewer epochs); "
                                                         "write --train-args='--num_train_epochs 1'")
    args = parser.parse_args(argv)
    name = args.dataset_name
    spec = DATASETS[name]
    dataset = args.dataset or f"data_prepared/{name}"
    work = args.work or ("outputs/quality" if name == "mosi" else f"outputs/quality_{name}")
    protocols = list(dict.fromkeys(args.protocols or spec["protocols"]))
    main_protocol = spec["protocols"][0]
    if main_protocol not in protocols:
        parser.error(f"--protocols must include {main_protocol} (the {name} summary is a {main_protocol} mean)")
    if not Path(dataset).is_dir():
        print(f"quality.py: error: no prepared dataset at {dataset}; run dataset_scripts/prepare_mmsa.py "
              f"{spec['prepare']} {dataset}", file=sys.stderr)
        return 2
    import torch

    threads = args.num_threads or spec["threads"]
    if threads:
        torch.set_num_threads(threads)
    from hf_mmkd.evaluation import evaluate_checkpoints, write_evaluation_report
    from hf_mmkd.io import atomic_write
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
            if not (student / "config.json").is_file():
                train(f"{name}_{method}.yaml", seed, root / method, [*extra, "--teacher_name_or_path", str(teacher)])
            checkpoints[method] = student
        for protocol in evaluations:
            evaluations[protocol].append(evaluate_checkpoints(checkpoints, dataset, protocol, split="test",
                                                              seeds=(seed,), dataset_name=name))
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
    import transformers
    record = {
        "command": "python benchmarks/quality.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "git_commit": git_commit(), "git_dirty": git_dirty(), "dataset_name": name, "seeds": args.seeds,
        "methods": args.methods, "train_args": args.train_args, "dataset": dataset, "split": "test",
        "protocols": protocols, "wall_time_s": time.time() - started,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "machine": {**machine(), "torch_threads": torch.get_num_threads()},
        "modality_rows": rows, "untrained_modalities": untrained,
        "constant_train_median_on_test": constant_reference(dataset, name),
        "results": merged, f"{main_protocol}_summary": summary, "summaries": summaries,
    }
    atomic_write(out / f"quality_{name}.json", json.dumps(record, indent=2, default=float))
    title = DATASET_NAMES.get(name, name)
    text = (f"# {title} quality under missing modalities\n\n" + f"Command: `{record['command']}` (commit "
            f"{record['git_commit'][:10]}).\n\n")
    if name == "mosi":
        text += teacher_complete_table(merged["p2"]) + "\n" + targets_table(summary, len(args.seeds))
        report = out / f"quality_{name}_targets.md"
    else:
        text += (f"{PROTOCOLS[main_protocol]['title']}; {title} test split, mean ± std over {len(args.seeds)} "
                 f"seed(s) (population std), model selection on validation only (training and validation views: "
                 f"`configs/{name}_*.yaml`). Per-condition rows and the plot: `quality_{name}_{main_protocol}.md` / "
                 "`.png`.\n\n" + summary_table(summary))
        ref = record["constant_train_median_on_test"]
        text += (f"\nReference: predicting the train split's median label ({ref['prediction']:g}) for every test row "
                 f"gives MAE {ref['MAE']:.3f}, Acc-2 (Non0) {100 * ref['Non0_acc_2']:.2f}, Acc-7 "
                 f"{100 * ref['Mult_acc_7']:.2f}.\n")
        notes = list(dict.fromkeys(merged[main_protocol].get("notes", [])))
        text += "\nNotes:\n\n" + "".join(f"- {n}\n" for n in notes)
        report = out / f"quality_{name}_summary.md"
    atomic_write(report, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
