"""What refuses a run before anything is written or trained: the arguments, the labels, the metric for the
best model, the teacher's text backbone, the distillation method, the `--report_to` / `--push_to_hub` needs.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from hf_mmkd import MMKDConfig
from hf_mmkd.data.missing import MissingModalitySimulator
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.distillation import DISTILLATION_LOSSES, build_distillation_loss
from hf_mmkd.metrics import metric_fn
from hf_mmkd.trainer import MMKDTrainingArguments
from hf_mmkd.training.arguments import ModelArguments, StageArguments, teacher_epochs


def check_labels(splits, dataset: str, label_column: str = "label", num_classes: int | None = None) -> None:
    """Every train and validation row has a finite label in `label_column`, and with `num_classes` (classification)
    a class id in [0, num_classes): found now, naming the row's id, not at the batch that holds it (the model's own
    check can name only the batch's labels, and a half-trained run would be left behind)."""
    for name in ("train", "validation"):
        split = splits[name]
        if label_column not in split.column_names:
            raise ValueError(f"dataset {dataset!r}: the {name!r} split has no {label_column!r} column")
        labels = np.array([np.nan if y is None else y for y in split[label_column]], dtype=np.float64)
        checks = [(~np.isfinite(labels), "not a finite number")]
        if num_classes is not None:
            with np.errstate(invalid="ignore"):
                no_class = (labels < 0) | (labels >= num_classes) | (labels != np.round(labels))
            checks.append((np.isfinite(labels) & no_class,
                           f"not one of the data set's {num_classes} class ids 0..{num_classes - 1}"))
        for wrong, what in checks:
            bad = np.nonzero(wrong)[0]
            if bad.size:
                i = int(bad[0])
                row = split[i]["id"] if "id" in split.column_names else i
                raise ValueError(f"dataset {dataset!r}: {name} row {row!r} has label {labels[i]:g}, {what} "
                                 f"({bad.size} such row(s)); fix the data set")


def check_teacher_text_backbone(model_args: ModelArguments, method: str) -> None:
    """`teacher_text_backbone` needs a student text backbone, and a method with a separate teacher."""
    if model_args.teacher_text_backbone is None:
        return
    if model_args.text_backbone is None:
        raise ValueError("--teacher_text_backbone needs --text_backbone (the student's text backbone); without it "
                         "the student reads text features")
    if DISTILLATION_LOSSES[method].teacher_mode == "shared":
        raise ValueError(f"--teacher_text_backbone: method {method!r} runs teacher and student as one network, so "
                         "they cannot have different backbones")


def check_metric_for_best_model(args: MMKDTrainingArguments, spec: DatasetSpec) -> None:
    """`metric_for_best_model` must be a loss or a metric of the data set's metric set (e.g. MAE does not exist
    for classification)."""
    name = args.metric_for_best_model
    if not name:
        return
    key = name[len("eval_"):] if name.startswith("eval_") else name
    if key.startswith("loss"):
        return
    if spec.task == "classification":
        have = metric_fn(spec)(np.eye(spec.num_labels, dtype=np.float32), np.arange(spec.num_labels))
    else:
        lo, hi = spec.label_range
        have = metric_fn(spec)(np.array([lo, hi], np.float32), np.array([lo, hi], np.float32))
    if key not in have:
        raise ValueError(f"metric_for_best_model {name!r} is not a metric of this data set (metric set "
                         f"{spec.metric_set!r}: {', '.join(have)}, or a loss)")


INFINITE_ALLOWED = {"max_grad_norm"}  # float training arguments whose infinite value means "no limit"


def check_arguments(stage: StageArguments, args: MMKDTrainingArguments, train_teacher_stage: bool,
                    student_stage: bool) -> None:
    """Everything about the arguments that can fail, checked before any data is read or any model trained."""
    if not str(args.output_dir).strip():
        raise ValueError("--output_dir is empty: give the folder to write the run into (train.py never writes "
                         "into the current folder by default)")
    for name in ("learning_rate", "teacher_learning_rate", "backbone_learning_rate"):
        owner = stage if name == "teacher_learning_rate" else args
        value = getattr(owner, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name} {value:g} must be a positive finite number (a rate of 0 would save an "
                             "untrained model, a NaN or infinite one a broken model)")
    for owner in (stage, args):
        for f in dataclasses.fields(owner):
            value = getattr(owner, f.name, None)
            if isinstance(value, float) and not math.isfinite(value) and f.name not in INFINITE_ALLOWED:
                raise ValueError(f"--{f.name} {value:g} must be a finite number")
    if args.gradient_accumulation_steps < 1:
        raise ValueError(f"--gradient_accumulation_steps {args.gradient_accumulation_steps} must be >= 1 (the number "
                         "of batches whose gradients add up to one optimiser step)")
    if args.max_steps is None or args.max_steps <= 0:
        lengths = []
        if train_teacher_stage:
            flag = "--num_train_epochs" if stage.teacher_num_train_epochs is None else "--teacher_num_train_epochs"
            lengths.append(("teacher", flag, teacher_epochs(stage, args)))
        if student_stage:
            lengths.append(("student", "--num_train_epochs", args.num_train_epochs))
        for what, flag, epochs in lengths:
            if not epochs > 0:
                raise ValueError(f"{flag} {epochs:g} trains nothing: the {what} would be saved untrained (and a later "
                                 "run could reuse it); give a positive number of epochs or --max_steps")
    if stage.reuse_teacher == "never" and not train_teacher_stage:
        raise ValueError("--reuse_teacher never retrains the teacher, but this run has no teacher stage "
                         f"(--stage {stage.stage}, method {args.method!r})")
    if student_stage:
        views = (("--missing_protocol", args.missing_protocol, dict(rate=args.missing_rate, training=True,
                                                                         train_rates=args.train_missing_rates)),
                 ("--eval_missing_protocol", args.eval_missing_protocol,
                  dict(rate=args.eval_missing_rate, availability=args.eval_missing_availability, training=False)))
        for flag, protocol, kwargs in views:
            try:
                MissingModalitySimulator(protocol, **kwargs)
            except ValueError as err:
                raise ValueError(f"{flag} {protocol}: {err}") from None
    if args.push_to_hub and student_stage:
        from hf_mmkd.hub import check_repo_id

        if not args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id OWNER/NAME (the Hub repository to publish to)")
        try:
            check_repo_id(args.hub_model_id)
        except ValueError as err:
            raise ValueError(f"--hub_model_id: {err}") from None


def check_method(args: MMKDTrainingArguments, config_kwargs: dict) -> None:
    """The distillation method's loss module builds for this model (unknown or bad --method_kwargs fail here,
    not after the teacher has trained)."""
    config = MMKDConfig(**{**config_kwargs, "role": "student", "distillation_method": args.method})
    try:
        build_distillation_loss(args.method, config, **args.method_kwargs)
    except TypeError as err:
        raise ValueError(f"--method_kwargs {json.dumps(args.method_kwargs)}: {err}") from None


def tensorboard_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def preflight(args: MMKDTrainingArguments) -> None:
    """Checks that must fail before any training: each `--report_to` integration needs its package (tensorboard,
    wandb, ...), `--push_to_hub` a token and a reachable Hub."""
    from transformers.integrations import get_available_reporting_integrations

    if "tensorboard" in (args.report_to or []) and not tensorboard_available():
        raise ValueError("--report_to tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                         "(or pip install tensorboard)")
    available = set(get_available_reporting_integrations()) | {"tensorboard"}  # tensorboard: checked above
    for name in args.report_to or []:
        if name not in available and name not in ("none", "all"):
            raise ValueError(f"--report_to {name} needs the {name} package, which is not installed (pip install "
                             f"{name.replace('_', '-')}), or pass --report_to none")
    if args.push_to_hub and args.process_index == 0:
        from hf_mmkd.hub import check_hub_access

        check_hub_access(args.hub_token)
