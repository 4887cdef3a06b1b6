"""What a stage reports: validation metrics at the report rates, a warning for near-constant predictions,
the printed metrics, and the training summary and model card saved beside each checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.io import (
    atomic_write,
    read_json,
)
from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments

logger = logging.getLogger("hf_mmkd")


def evaluate_rates(trainer: MMKDTrainer, rates: list[float], prefix: str) -> dict[str, float]:
    """Validation metrics under P2 at each rate (r = 0 is the complete data)."""
    results = {}
    for rate in rates:
        results.update(trainer.evaluate_view(trainer.eval_view(rate, "p2"), metric_key_prefix=f"{prefix}_r{rate:g}"))
    return results


def warn_if_near_constant(trainer: MMKDTrainer, spec: DatasetSpec, stage: str) -> None:
    """At the end of a stage: warn when the model's validation predictions on complete inputs are (nearly) one
    value or one class (`hf_mmkd.evaluation.near_constant`), as a small data set trained for too few steps leaves
    it; `hf-mmkd evaluate` would otherwise be the first to say so."""
    from hf_mmkd.evaluation import near_constant

    saved = trainer.eval_simulator
    try:
        trainer.eval_simulator = trainer.eval_view(0.0, "p2")
        out = trainer.predict(trainer.eval_dataset, metric_key_prefix=f"{stage}_check")
    finally:
        trainer.eval_simulator = saved
    predictions = np.asarray(out.predictions)
    predictions = predictions.reshape(-1) if spec.task == "regression" else predictions
    why = near_constant(predictions, np.asarray(out.label_ids).reshape(-1), spec)
    if why is not None and trainer.args.process_index == 0:
        logger.warning("%s: the validation predictions are near-constant (%s): the model has learned (almost) nothing "
                       "from the inputs. With a small data set, train for more steps (--num_train_epochs or "
                       "--max_steps; see docs/data.md, \"Small data sets\")", stage, why)


def printable_metrics(stage: str, metrics: dict, key_metrics=("Non0_acc_2", "Non0_bal_acc_2", "MAE", "Corr", "acc_7",
                                                                "Accuracy")) -> dict:
    """The printed validation numbers, labelled: the Trainer's `eval_*_loss` is the task loss (L1 = MAE for
    regression) for the teacher but the TOTAL loss (task + weighted distillation terms) for a student."""
    loss_name = "task_loss" if stage == "teacher" else "total_loss_task_plus_distillation"
    shown = {}
    for key, value in metrics.items():
        if key.endswith(tuple(key_metrics)):
            shown[key] = round(value, 4)
        elif key.endswith("_loss"):
            shown[key[: -len("loss")] + loss_name] = round(value, 4)
    return shown


def training_summary(args: MMKDTrainingArguments, teacher_dir: Path | None, metrics: dict,
                     teacher_folds: int = 0) -> dict:
    """What a checkpoint's card says about its training (saved as `training_summary.json` beside it): method and
    its kwargs, teacher (portable name), missing-modality protocol, schedule, validation numbers (r = 0 / r > 0)."""
    from hf_mmkd.hub import portable_name

    validation = {}
    for key, value in metrics.items():
        parts = key.split("_", 2)  # eval_r0.5_MAE -> r=0.5 MAE
        if len(parts) == 3 and parts[1].startswith("r") and key.endswith(
                ("Non0_acc_2", "Non0_bal_acc_2", "MAE", "Corr", "Accuracy", "Balanced_acc", "Macro_F1")):
            validation[f"{parts[1][0]}={parts[1][1:]} {parts[2]}"] = value
    teacher = {}
    if teacher_dir is not None:  # which teacher: where it was read from (a relative path or a Hub id), its figure
        from hf_mmkd.hub import TRAINING_SUMMARY

        own = Path(teacher_dir) / TRAINING_SUMMARY
        teacher = {"teacher_location": portable_name(teacher_dir) if os.path.isabs(teacher_dir) else str(teacher_dir),
                   "teacher_validation": (read_json(own).get("validation") or {}) if own.is_file() else {}}
    return {"method": args.method, "method_kwargs": dict(args.method_kwargs or {}),
            "teacher": portable_name(teacher_dir) if teacher_dir is not None else None, **teacher,
            "missing_protocol": args.missing_protocol, "missing_rate": args.missing_rate,
            "num_train_epochs": args.num_train_epochs, "learning_rate": args.learning_rate, "seed": args.seed,
            "teacher_folds": teacher_folds, "balance_terms": args.balance_terms,
            "balance_ratio": args.balance_ratio if args.balance_terms else None,
            "recoverability_floor": args.recoverability_floor,
            "recoverability_fallback": args.recoverability_fallback,
            "response_weight": args.response_weight,
            "eval_missing_rates": args.eval_missing_rates,
            "train_missing_rates": args.train_missing_rates,
            "validation": validation,
            "validation_note": f"validation split, P2 at the rates r shown, mask seed {args.missing_seed}"}


def write_card(folder: Path, summary: dict, args: MMKDTrainingArguments) -> None:
    """`training_summary.json` and a model card (README.md) in a saved teacher/ or student/ folder."""
    if args.process_index != 0:
        return
    from hf_mmkd.hub import TRAINING_SUMMARY, build_card
    from hf_mmkd.io import record_written

    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / TRAINING_SUMMARY, text)
    # The card is built from the summary as saved (keys sorted), as `hf-mmkd publish` reads it: the release card
    # then leads with the same validation figure as this one.
    card = build_card([], folder.name, repo_id=folder.name, config=folder / "config.json", summary=json.loads(text))
    atomic_write(folder / "README.md", str(card))
    record_written(folder, TRAINING_SUMMARY, "README.md")  # hf_mmkd's too, when the folder is next replaced
