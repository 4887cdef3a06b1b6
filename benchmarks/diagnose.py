"""Why does (or doesn't) distillation pay off? Measure the quantities that explain it, per method.

    python benchmarks/diagnose.py --teacher outputs/quality/seed1111/teacher/teacher            # short runs
    python benchmarks/diagnose.py --checkpoints none=outputs/quality/seed1111/none/student \\
        logit=outputs/quality/seed1111/logit/student --teacher outputs/quality/seed1111/teacher/teacher

Two parts, both printed as tables (and written as JSON with `--out`):

1. Training dynamics (`--methods`, default every KD method): each method's student trains `--steps` optimiser
   steps from its YAML (`configs/<dataset>_<method>.yaml`) with `--diagnostics_steps`, and the diagnostics the
   trainer logs (`hf_mmkd.trainer.diagnostics`) are summarised at the first and the last diagnosed step:
   per-term gradient norm at the student's parameters over the task loss's (`ratio_*`), representation norms,
   the teacher's fit on the rows the student trains on, and each method's own quantities (SCD's active
   negatives, MI estimates above their zero-information value, ...).
2. Predictions (`--checkpoints NAME=PATH ...` and `--teacher`): on `--split` (validation by default: tuning reads
   validation only) under P2 at r = 0.0 .. 0.9 (mask seed `--mask-seed`), the sign accuracy on rows with a
   non-zero label and the share of positive predictions per rate, next to the split's own positive share; and the
   teacher on the train split (complete inputs) against the same split, i.e. how much it knows beyond the labels
   it was trained on.
3. Selection rules (`--selection-runs NAME=RUN_DIR ...`, runs trained with every epoch kept, e.g.
   `--save_total_limit 10`): how well a rule that picks an epoch on validation generalises, measured on validation
   alone. The split's groups (`--group-pattern` over the row id, default `<group>_<part>`, or `--group-column`) are
   halved at random (`--selection-splits` times); each rule picks an epoch on one half (P2 mean over r = 0.0 .. 0.9,
   mask seed `--mask-seed`) and the pick is scored on the other half by the mean balanced sign accuracy
   (`Non0_bal_acc_2`), both ways round. Rules: the best `Non0_bal_acc_2` (the MOSI configs' rule), the best Corr,
   the lowest MAE, and the last epoch; regret is the held-out score of the best epoch in hindsight minus the pick's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KD_METHODS = ("logit", "corrkd", "mmckd", "mitr", "crossmodal")
RATES = tuple(round(0.1 * i, 1) for i in range(10))


# ----------------------------------------------------------------------------------------- 1. dynamics


def run_dynamics(method: str, args) -> list[dict]:
    """Train `method`'s student for `args.steps` steps with diagnostics on; return its diagnostics records."""
    from hf_mmkd.training import main as train_main

    out = Path(args.work) / method
    log = out / "diagnostics.jsonl"
    run = out / "student_run" / "diagnostics.jsonl"
    if not run.is_file():
        argv = ["--config", str(REPO / "configs" / f"{args.dataset_name}_{method}.yaml"), "--dataset", args.dataset,
                "--output_dir", str(out), "--stage", "student", "--teacher_name_or_path", args.teacher,
                "--max_steps", str(args.steps), "--diagnostics_steps", str(args.diagnostics_steps),
                "--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false",
                "--report_rates", "", "--seed", str(args.seed), *shlex.split(args.train_args)]
        print(f"[diagnose] train.py {shlex.join(argv)}", flush=True)
        if train_main(argv) != 0:
            raise SystemExit(f"diagnose.py: the {method} run failed")
    path = run if run.is_file() else log
    return [json.loads(line) for line in path.read_text().splitlines()]


def dynamics_table(records: dict[str, list[dict]]) -> str:
    """One row per (method, quantity): the value at the first and at the last diagnosed step."""
    lines = ["| method | quantity | first step | last step |", "|---|---|---|---|"]
    for method, recs in records.items():
        first, last = recs[0], recs[-1]
        keys = [k for k in first if k not in ("step", "method") and not k.startswith("grad_")]
        for key in sorted(keys, key=lambda k: (not k.startswith("ratio_"), k)):
            lines.append(f"| {method} | {key} | {first[key]:.4g} (step {first['step']}) | "
                         f"{last.get(key, float('nan')):.4g} (step {last['step']}) |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------- 2. predictions


def predictions(path: str, dataset: str, split: str, rate: float, seed: int, batch_size: int = 64):
    """(predictions (N,), labels (N,)) of a checkpoint on `split` under P2 at `rate` (deterministic masks)."""
    preds, labels = predictions_at_rates(path, dataset, split, (rate,), seed, batch_size)
    return preds[0], labels


def predictions_at_rates(path: str, dataset: str, split: str, rates, seed: int, batch_size: int = 64):
    """(predictions (R, N), labels (N,)) of a checkpoint on `split` under P2 at each of `rates`: the checkpoint is
    loaded and the split collated once, then every rate's deterministic masks are applied to the same batches."""
    import torch

    from hf_mmkd.data.collator import MMKDDataCollator
    from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs
    from hf_mmkd.data.prepared import load_prepared
    from hf_mmkd.evaluation import load_checkpoint

    model, collate = load_checkpoint(path, "cpu")
    data = load_prepared(dataset)[split]
    collator = MMKDDataCollator(model.config, return_row_keys=True,
                                **{k: v for k, v in collate.items() if v is not None})
    unk = getattr(collate.get("tokenizer"), "unk_token_id", None) or 100
    batches = [collator([data[i] for i in range(start, min(start + batch_size, len(data)))])
               for start in range(0, len(data), batch_size)]
    labels = np.concatenate([b["labels"].numpy() for b in batches])
    preds = np.zeros((len(rates), len(labels)), dtype=np.float32)
    with torch.inference_mode():
        for k, rate in enumerate(rates):
            simulator = MissingModalitySimulator("p2", rate, training=False, seed=seed, unk_token_id=unk)
            per_batch = []
            for batch in batches:
                inputs = model_inputs(simulator(batch))
                inputs.pop("labels")
                per_batch.append(model(**inputs).logits[:, 0].float().numpy())
            preds[k] = np.concatenate(per_batch)
    return preds, labels


def sign_stats(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Sign accuracy on rows with y != 0, plain and balanced over the two signs (hf_mmkd.metrics'
    `Non0_bal_acc_2`), share of positive predictions, MAE."""
    from hf_mmkd.metrics import balanced_sign_accuracy

    nz = y != 0
    return {"acc2_non0": float(((p[nz] > 0) == (y[nz] > 0)).mean()),
            "bal_acc2_non0": balanced_sign_accuracy(y[nz] > 0, p[nz] > 0), "pos_share": float((p[nz] > 0).mean()),
            "label_pos_share": float((y[nz] > 0).mean()), "mae": float(np.abs(p - y).mean()),
            "pred_std": float(p.std()), "label_std": float(y.std())}


def prediction_report(checkpoints: dict[str, str], args) -> tuple[dict, str]:
    results, lines = {}, []
    header = "| checkpoint | " + " | ".join(f"r={r:g}" for r in RATES) + " | mean |"
    sep = "|---|" + "---|" * (len(RATES) + 1)
    for name, path in checkpoints.items():
        preds, labels = predictions_at_rates(path, args.dataset, args.split, RATES, args.mask_seed)
        results[name] = {f"{rate:g}": sign_stats(p, labels) for rate, p in zip(RATES, preds)}
    for quantity, label, scale in (("acc2_non0", "Non0 Acc-2", 100), ("bal_acc2_non0", "Non0 balanced Acc-2", 100),
                                   ("pos_share", "share of positive predictions", 100),
                                   ("pred_std", "std of the predictions (label units; how far the answers spread "
                                                "around their mean)", 1), ("mae", "MAE", 1)):
        lines += [f"{label} on {args.split} under P2 (mask seed {args.mask_seed}):", "", header, sep]
        for name, per_rate in results.items():
            row = [scale * per_rate[f"{r:g}"][quantity] for r in RATES]
            digits = 1 if scale == 100 else 3
            cells = " | ".join(f"{v:.{digits}f}" for v in row)
            lines.append(f"| {name} | {cells} | {np.mean(row):.{digits + 1}f} |")
        lines.append("")
    first = next(iter(results.values()))["0"]
    lines.append(f"Positive share of the {args.split} labels (non-zero): {100 * first['label_pos_share']:.1f}%; "
                 f"std of its labels: {first['label_std']:.3f}.\n")
    return results, "\n".join(lines)


def out_of_fold_predictions(teacher: str, args):
    """(predictions, labels) on the train split from the cross-fitted fold teachers (`<teacher>/folds/fold_k`,
    fold k = the rows whose row key % K == k, the ones fold teacher k never saw), or None without folds."""
    from hf_mmkd.data.missing import row_key
    from hf_mmkd.data.prepared import load_prepared

    folds = sorted(Path(teacher, "folds").glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    if not folds:
        return None
    ids = load_prepared(args.dataset)["train"]["id"]
    fold_of = np.asarray([row_key(i) % len(folds) for i in ids])
    preds, labels = None, None
    for k, folder in enumerate(folds):
        p, y = predictions(str(folder), args.dataset, "train", 0.0, args.mask_seed)
        preds = p.copy() if preds is None else preds
        labels = y
        preds[fold_of == k] = p[fold_of == k]
    return preds, labels


def teacher_fit(teacher: str, args) -> tuple[dict, str]:
    """The teacher on complete train rows (what the student's targets are) against the evaluation split; with
    cross-fitted folds, also the out-of-fold predictions the student distils on its training rows."""
    from hf_mmkd.metrics import regression_metrics

    rows = {}
    for split in ("train", args.split):
        rows[f"full teacher, {split}"] = predictions(teacher, args.dataset, split, 0.0, args.mask_seed)
    oof = out_of_fold_predictions(teacher, args)
    if oof is not None:
        rows["out-of-fold teachers, train"] = oof
    out = {}
    for name, (p, y) in rows.items():
        m = regression_metrics(p, y)
        out[name] = {k: m[k] for k in ("MAE", "Corr", "Non0_acc_2", "Non0_bal_acc_2")}
    lines = ["Teacher, complete inputs:", "", "| predictions | MAE | Corr | Non0 Acc-2 | Bal. Acc-2 (Non0) |",
             "|---|---|---|---|---|"]
    lines += [f"| {s} | {v['MAE']:.3f} | {v['Corr']:.3f} | {100 * v['Non0_acc_2']:.2f} | "
              f"{100 * v['Non0_bal_acc_2']:.2f} |" for s, v in out.items()]
    return out, "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- 3. selection rules


SELECTION_RULES = ("best Non0_bal_acc_2", "best Corr", "lowest MAE", "last epoch")


def epoch_checkpoints(run: str) -> list[Path]:
    """The saved student of every epoch checkpoint of a `train.py` output folder, in training order."""
    steps = {int(m.group(1)): c for c in Path(run, "student_run").glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", c.name)) and (c / "student" / "config.json").is_file()}
    return [steps[k] / "student" for k in sorted(steps)]


def _mean_over_rates(p: np.ndarray, y: np.ndarray, rows: np.ndarray, metric: str) -> float:
    """P2 mean over the rates (rows of `p`, shape (R, N)) of `metric` on the rows `rows` (bool (N,))."""
    from hf_mmkd.metrics import balanced_sign_accuracy

    p, y = p[:, rows], y[rows]
    if metric == "MAE":
        return float(np.abs(p - y).mean())
    if metric == "Corr":
        return float(np.mean([np.corrcoef(q, y)[0, 1] for q in p]))
    nz = y != 0
    return float(np.mean([balanced_sign_accuracy(y[nz] > 0, q[nz] > 0) for q in p]))


def halvable_groups(groups: list[str]) -> np.ndarray:
    """The distinct groups, when there are at least two to halve."""
    unique = np.unique(np.asarray(groups))
    if len(unique) < 2:
        raise ValueError(f"the split has {len(unique)} group(s); halving it needs at least 2 (--group-pattern or "
                         "--group-column name each row's group)")
    return unique


def selection_regret(runs: dict[str, list[np.ndarray]], labels: np.ndarray, groups: list[str], splits: int,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Per rule: the mean held-out `Non0_bal_acc_2` of its pick and the mean regret (see the module docstring).
    `runs` maps a run to its epochs' predictions, each (R, N) over the rates and the split's rows."""
    names, unique = np.asarray(groups), halvable_groups(groups)
    rng = np.random.default_rng(seed)
    picked = {rule: [] for rule in SELECTION_RULES}
    regret = {rule: [] for rule in SELECTION_RULES}
    for _ in range(splits):
        half = np.isin(names, rng.choice(unique, len(unique) // 2, replace=False))
        for epochs in runs.values():
            # each half's metrics per epoch, once; a half is the chosen one in one direction, the held-out in the other
            by_half = [{m: [_mean_over_rates(p, labels, rows, m) for p in epochs]
                        for m in ("Non0_bal_acc_2", "Corr", "MAE")} for rows in (half, ~half)]
            for on, scored in ((by_half[0], by_half[1]), (by_half[1], by_half[0])):
                held = scored["Non0_bal_acc_2"]
                picks = {"best Non0_bal_acc_2": int(np.argmax(on["Non0_bal_acc_2"])),
                         "best Corr": int(np.argmax(on["Corr"])), "lowest MAE": int(np.argmin(on["MAE"])),
                         "last epoch": len(epochs) - 1}
                for rule, k in picks.items():
                    picked[rule].append(held[k])
                    regret[rule].append(max(held) - held[k])
    return {rule: {"held_out_bal_acc_2": float(np.mean(picked[rule])), "regret": float(np.mean(regret[rule]))}
            for rule in SELECTION_RULES}


def selection_report(runs: dict[str, str], args) -> tuple[dict, str]:
    from hf_mmkd.data.folds import DEFAULT_GROUP_PATTERN, row_groups
    from hf_mmkd.data.prepared import load_prepared

    data = load_prepared(args.dataset)[args.split]
    groups = row_groups(data, args.group_pattern or (None if args.group_column else DEFAULT_GROUP_PATTERN),
                        args.group_column)
    halvable_groups(groups)  # before any checkpoint is run
    predictions_of, lines, labels = {}, [], None
    header = "| run | " + " | ".join(f"epoch {k + 1}" for k in range(max(len(v) for v in runs.values()))) + " |"
    lines += [f"{args.split}, P2 mean over r of `Non0_bal_acc_2` per epoch (mask seed {args.mask_seed}, all rows):",
              "", header, "|---|" + "---|" * (header.count("|") - 2)]
    for name, folders in runs.items():
        epochs = []
        for folder in folders:
            preds, labels = predictions_at_rates(str(folder), args.dataset, args.split, RATES, args.mask_seed)
            epochs.append(preds)
        predictions_of[name] = epochs
        everything = np.ones(len(labels), dtype=bool)
        cells = " | ".join(f"{100 * _mean_over_rates(p, labels, everything, 'Non0_bal_acc_2'):.2f}" for p in epochs)
        lines.append(f"| {name} | {cells} |")
    result = selection_regret(predictions_of, labels, groups, args.selection_splits)
    lines += ["", f"Selection rules, {len(runs)} runs, {args.selection_splits} random halvings of the "
              f"{len(set(groups))} groups x 2 directions (held-out half: P2 mean `Non0_bal_acc_2`):", "",
              "| rule | held-out balanced Acc-2 of the pick | regret against the best epoch |", "|---|---|---|"]
    lines += [f"| {rule} | {100 * r['held_out_bal_acc_2']:.2f} | {100 * r['regret']:.2f} |"
              for rule, r in result.items()]
    return result, "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-name", default="mosi", help="configs/NAME_<method>.yaml (default mosi)")
    parser.add_argument("--dataset", default=None, help="prepared folder (default data_prepared/NAME)")
    parser.add_argument("--teacher", default=None, help="trained teacher checkpoint (the student runs distil it)")
    parser.add_argument("--methods", nargs="*", default=None, choices=KD_METHODS + ("none",),
                        help="methods whose training dynamics to measure (default: every KD method when "
                             "--teacher is given and no --checkpoints)")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per dynamics run")
    parser.add_argument("--diagnostics-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--train-args", default="", help="extra train.py flags for the dynamics runs")
    parser.add_argument("--work", default="outputs/diagnose", help="where the dynamics runs go")
    parser.add_argument("--checkpoints", nargs="*", default=[], metavar="NAME=PATH")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--mask-seed", type=int, default=1111)
    parser.add_argument("--selection-runs", nargs="*", default=[], metavar="NAME=RUN_DIR",
                        help="train.py output folders with every epoch's checkpoint kept (part 3)")
    parser.add_argument("--selection-splits", type=int, default=200, help="random halvings of the groups")
    parser.add_argument("--group-pattern", default=None, help="regular expression over the row id whose first group "
                        "names the row's group (default: everything before the id's last underscore)")
    parser.add_argument("--group-column", default=None, help="a column of the data naming each row's group")
    parser.add_argument("--out", default=None, help="write everything measured to this JSON file")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or f"data_prepared/{args.dataset_name}"
    if not Path(args.dataset).is_dir():
        print(f"diagnose.py: error: no prepared dataset at {args.dataset}", file=sys.stderr)
        return 2
    checkpoints = {}
    for item in args.checkpoints:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path, "config.json").is_file():
            print(f"diagnose.py: error: --checkpoints expects NAME=PATH of a checkpoint folder, got {item!r}",
                  file=sys.stderr)
            return 2
        checkpoints[name] = path
    selection_runs = {}
    for item in args.selection_runs:
        name, sep, path = item.partition("=")
        folders = epoch_checkpoints(path) if sep and name else []
        if len(folders) < 2:
            print(f"diagnose.py: error: --selection-runs expects NAME=RUN_DIR of a train.py output folder with at "
                  f"least two epoch checkpoints (student_run/checkpoint-*/student; train with --save_total_limit), "
                  f"got {item!r}", file=sys.stderr)
            return 2
        selection_runs[name] = folders
    if args.selection_splits < 1:
        print(f"diagnose.py: error: --selection-splits must be >= 1, got {args.selection_splits}", file=sys.stderr)
        return 2
    busy = checkpoints or selection_runs
    methods = args.methods if args.methods is not None else ([] if busy else list(KD_METHODS))
    if methods and not args.teacher:
        print("diagnose.py: error: the dynamics runs need --teacher", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    report = {"command": "python benchmarks/diagnose.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    text = [f"Command: `{report['command']}`\n"]
    if methods:
        records = {m: run_dynamics(m, args) for m in methods}
        report["dynamics"] = records
        text += ["Training dynamics (ratio_* = a term's gradient norm at the student's parameters over the task "
                 "loss's):", "", dynamics_table(records)]
    if args.teacher and (checkpoints or not methods):
        report["teacher_fit"], table = teacher_fit(args.teacher, args)
        text.append(table)
    if checkpoints:
        report["predictions"], table = prediction_report(checkpoints, args)
        text.append(table)
    if selection_runs:
        try:
            report["selection_rules"], table = selection_report(selection_runs, args)
        except ValueError as err:
            print(f"diagnose.py: error: {err}", file=sys.stderr)
            return 2
        text.append(table)
    print("\n".join(text))
    if args.out:
        from hf_mmkd.io import atomic_write

        atomic_write(args.out, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
