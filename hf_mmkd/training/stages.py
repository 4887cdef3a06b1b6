"""The stages of a run, inside its lock: the teacher, its cross-fitted folds, the student, the results."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import shutil
from pathlib import Path

from transformers import set_seed

from hf_mmkd import MMKDConfig
from hf_mmkd.data.collator import MMKDDataCollator
from hf_mmkd.data.missing import row_key
from hf_mmkd.distillation import DISTILLATION_LOSSES
from hf_mmkd.inference import build_processor, load_model
from hf_mmkd.io import _REASONS as WRITE_REASONS  # errno -> what it means for a write
from hf_mmkd.io import (
    atomic_folder,
    atomic_write,
    read_json,
    write_provenance,
)
from hf_mmkd.metrics import KEY_METRICS
from hf_mmkd.provenance import check_teacher
from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments, availability_patterns
from hf_mmkd.training.arguments import teacher_epochs
from hf_mmkd.training.cards import (
    evaluate_rates,
    printable_metrics,
    training_summary,
    warn_if_near_constant,
    write_card,
)
from hf_mmkd.training.inputs import teacher_model_args
from hf_mmkd.training.models import init_from_teacher, new_model, teacher_tokenizer_for
from hf_mmkd.training.resume import resume_point
from hf_mmkd.training.state import RunState

logger = logging.getLogger("hf_mmkd")

_RUN_TOKENIZER = object()  # default of `model_tokenizer`: the run's own tokenizer (state.tokenizer)


def stage_args(args: MMKDTrainingArguments, stage_dir: Path, **changes) -> MMKDTrainingArguments:
    # push_to_hub=False: the Trainer must not create or push to the repo mid-run; with --push_to_hub the final
    # release is published once at the end of run() (hf_mmkd.evaluation.publish_training_run).
    return dataclasses.replace(args, output_dir=str(stage_dir), push_to_hub=False, **changes)


@contextlib.contextmanager
def checkpoint_writes(folder: Path):
    """torch.save reports a full or read-only disk as a RuntimeError of its zip writer, save_pretrained as an
    OSError naming a file deep in a checkpoint (modeling_mmkd.py, say): make either one line naming `folder`."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_REASONS:
            raise
        raise OSError(err.errno, f"cannot write the checkpoints in {folder}: {WRITE_REASONS[err.errno]}") from None
    except RuntimeError as err:
        text = str(err)
        if not any(key in text for key in ("PytorchStreamWriter", "inline_container", "file write failed")):
            raise
        probe = folder
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        full = shutil.disk_usage(probe).free < (1 << 20)
        reason = "no space left on the device (disk full)" if full else "torch could not write the file"
        raise OSError(errno.ENOSPC if full else errno.EIO, f"cannot write the checkpoints in {folder}: {reason}") from None


def make_trainer(state: RunState, model, run_args: MMKDTrainingArguments, teacher=None, train_dataset=None,
                 fold_teachers=None, importance_model=None, model_tokenizer=_RUN_TOKENIZER, teacher_tokenizer=None):
    """An MMKDTrainer on the run's splits (train: `train_dataset` when given), with a collator for `model`."""
    model_tokenizer = state.tokenizer if model_tokenizer is _RUN_TOKENIZER else model_tokenizer
    collator = MMKDDataCollator(model[0].config if isinstance(model, list) else model.config,
                                tokenizer=model_tokenizer, teacher_tokenizer=teacher_tokenizer,
                                feature_extractor=state.feature_extractor, image_processor=state.image_processor,
                                max_text_length=state.data_args.max_text_length, label_column=state.spec.label_column,
                                return_row_keys=True)
    return MMKDTrainer(model=model, teacher=teacher, args=run_args,
                       train_dataset=state.splits["train"] if train_dataset is None else train_dataset,
                       eval_dataset=state.splits["validation"], data_collator=collator,
                       processing_class=model_tokenizer, compute_metrics=state.compute_metrics,
                       fold_teachers=fold_teachers, importance_model=importance_model)


def save(state: RunState, model, folder: Path, provenance: dict, model_tokenizer=_RUN_TOKENIZER) -> None:
    """Save `model` with its own preprocessing and provenance record into `folder` (main process only)."""
    model_tokenizer = state.tokenizer if model_tokenizer is _RUN_TOKENIZER else model_tokenizer
    if state.main_process:
        # Written to a temporary sibling and renamed into place: an interrupted save never leaves a
        # half-written teacher/ or student/ that looks complete (an older one is replaced only at the end).
        with atomic_folder(folder) as tmp:
            model.save_pretrained(tmp)
            # The checkpoint's own preprocessing (tokenizer, feature extractor, image processor, standardisation).
            build_processor(model.config, tokenizer=model_tokenizer, feature_extractor=state.feature_extractor,
                            image_processor=state.image_processor, max_text_length=state.data_args.max_text_length,
                            ).save_pretrained(tmp)
            write_provenance(tmp, provenance)


def train(trainer: MMKDTrainer, run_dir: Path, resume: str | None) -> None:
    """`trainer.train`, with write failures and a checkpoint of other model sizes as one line."""
    with checkpoint_writes(run_dir):
        try:
            trainer.train(resume_from_checkpoint=resume)
        except RuntimeError as err:  # the Trainer loads the checkpoint with load_state_dict: a page of these
            if resume is None or "size mismatch" not in str(err):
                raise
            first = next(line.strip() for line in str(err).splitlines() if "size mismatch" in line)
            raise ValueError(f"resume_from_checkpoint {resume} was saved by a run with other model sizes "
                             f"({first}); resume with the arguments that wrote it, or start over "
                             "(--resume_from_checkpoint false)") from None


def run_stages(state: RunState) -> dict:
    """The stages themselves, inside the run's lock: teacher (and its folds), student, then results and release."""
    results_path = state.root / "results.json"
    state.results = read_json(results_path) if results_path.is_file() else {}
    state.train_labels = (state.splits["train"][state.spec.label_column]
                          if state.model_args.head_bias_from_labels else None)
    teacher_stage(state)
    if state.student_stage:
        student_stage(state)
    else:
        state.say("student stage skipped: --stage teacher")
    write_results(state)
    publish(state)
    return state.results


def teacher_stage(state: RunState) -> None:
    """Train the teacher (unless a matching one is reused) and its cross-fitted folds (`--teacher_folds`)."""
    stage, args, teacher_dir = state.stage, state.args, state.teacher_dir
    if not state.teacher_stage:
        if stage.stage == "both":
            state.say(f"teacher stage skipped: method {args.method!r} trains no separate teacher")
        return
    train_teacher = True
    if (teacher_dir / "config.json").is_file() and stage.reuse_teacher != "never":
        accepted = check_teacher(teacher_dir, state.record, trains_teacher=True, reuse=stage.reuse_teacher,
                                 method=args.method, student_kwargs=state.student_kwargs)
        why = (f"used as it is (--reuse_teacher always) although {'; '.join(accepted)}" if accepted else
               "it was trained on the same data with the same arguments (--reuse_teacher never retrains it)")
        state.say(f"teacher stage skipped: reusing the teacher in {teacher_dir}: {why}")
        train_teacher = False
    if train_teacher:
        logger.info("teacher stage: complete inputs, no distillation")
        state.say(f"teacher stage: training a teacher on complete inputs into {teacher_dir}")
        state.record_outputs(state.teacher_guard, teacher_dir.name)
        trainer = fit_teacher(state, state.root / "teacher_run", teacher_dir, state.record)
        state.results["teacher"] = evaluate_rates(trainer, state.rates, "eval")
        warn_if_near_constant(trainer, state.spec, "teacher")
        write_card(teacher_dir, training_summary(trainer.args, None, state.results["teacher"]), args)
    for k in range(stage.teacher_folds):  # cross-fitting: fold k's teacher never sees fold k's rows
        fold_dir = state.fold_dir(k)
        if (fold_dir / "config.json").is_file():
            state.say(f"teacher fold {k + 1}/{stage.teacher_folds} skipped: {fold_dir} exists")
            continue
        state.say(f"teacher fold {k + 1}/{stage.teacher_folds}: training without fold {k} into {fold_dir}")
        rest = state.splits["train"].filter(lambda row: row_key(row["id"]) % stage.teacher_folds != k)
        trainer = fit_teacher(state, state.root / "teacher_run" / f"fold_{k}", fold_dir,
                              {**state.record, "fold": {"index": k, "folds": stage.teacher_folds}}, rest)
        write_card(fold_dir, training_summary(trainer.args, None, {}), args)


def fit_teacher(state: RunState, run_dir: Path, out_dir: Path, provenance: dict, train_dataset=None) -> MMKDTrainer:
    """Train a teacher on complete inputs (task loss only) into `out_dir`; return its trainer."""
    args = state.args
    teacher_args = stage_args(
        args, run_dir, method="none", method_kwargs={}, missing_protocol="none", eval_missing_protocol="none",
        eval_missing_availability=None,  # the student's P3/P5 evaluation set; the teacher sees complete inputs
        num_train_epochs=teacher_epochs(state.stage, args), learning_rate=state.record["training"]["learning_rate"],
        diagnostics_steps=0, balance_terms=False, recoverability_floor=None,  # student-stage machinery
        recoverability_fallback=0.0, response_weight=0.0, eval_missing_rates=None, train_missing_rates=None,
    )
    # pattern_embedding is a student option: the teacher only ever sees the complete pattern
    teacher = new_model(teacher_model_args(state.model_args), {**state.config_kwargs, "role": "teacher",
                                                               "pattern_embedding": False}, state.train_labels)
    resume = resume_point(args, run_dir, "teacher")
    state.record_outputs(state.guard, run_dir.relative_to(state.root).parts[0])  # the Trainer creates it as it starts
    trainer = make_trainer(state, teacher, teacher_args, train_dataset=train_dataset,
                           model_tokenizer=state.teacher_tokenizer)
    train(trainer, run_dir, resume)
    save(state, trainer.student, out_dir, {**provenance, "result": {"global_step": trainer.state.global_step}},
         model_tokenizer=state.teacher_tokenizer)
    return trainer


def load_teachers(state: RunState) -> tuple:
    """(the trained teacher the student distils from, or None; the cross-fitted fold teachers, or None)."""
    stage, args, teacher_dir = state.stage, state.args, state.teacher_dir
    teacher = None
    if state.needs_teacher:
        if not (teacher_dir / "config.json").is_file():
            where = f"{teacher_dir} has no config.json" if teacher_dir.is_dir() else f"none at {teacher_dir}"
            raise ValueError(f"method {args.method!r} needs a trained teacher; {where} "
                             "(run --stage teacher first, or pass --teacher_name_or_path)")
        if not state.teacher_stage:
            accepted = check_teacher(teacher_dir, state.record, trains_teacher=False, reuse=stage.reuse_teacher,
                                     method=args.method, student_kwargs=state.student_kwargs)
            if accepted:
                state.say(f"using the teacher in {teacher_dir} as it is (--reuse_teacher always) although "
                          f"{'; '.join(accepted)}")
        teacher = load_model(teacher_dir, device="cpu")
        state.spec.check_labels_match(teacher.config.dataset_spec, f"the teacher {teacher_dir}")
    fold_teachers = None
    if stage.teacher_folds and DISTILLATION_LOSSES[args.method].teacher_mode == "frozen":
        folds = [state.fold_dir(k) for k in range(stage.teacher_folds)]
        missing = [str(folder) for folder in folds if not (folder / "config.json").is_file()]
        if missing:
            raise ValueError(f"--teacher_folds {stage.teacher_folds} needs the cross-fitted teachers; missing "
                             f"{missing} (run the teacher stage with --teacher_folds {stage.teacher_folds})")
        fold_teachers = [load_model(folder, device="cpu") for folder in folds]
    return teacher, fold_teachers


def new_students(state: RunState):
    """The new student (or, for MM-CKD with `--students per_pattern`, one per availability pattern)."""
    args = state.args
    # The student starts from the seed itself, not from whatever the teacher's training left in the RNG: the
    # same seed gives the same student whether the teacher was trained in this run or reused.
    set_seed(args.seed)
    if args.method == "mmckd" and args.students == "per_pattern":
        modalities = MMKDConfig(**state.config_kwargs).modalities
        student = [new_model(state.model_args, {**state.student_kwargs, "student_modalities": list(p)},
                             state.train_labels) for p in availability_patterns(modalities)]
    else:
        student = new_model(state.model_args, state.student_kwargs, state.train_labels)
    if state.stage.student_init == "teacher":
        init_from_teacher(student if isinstance(student, list) else [student], state.teacher_dir)
    return student


def student_stage(state: RunState) -> None:
    """Distil the teacher into the student (or train it alone, for methods without a teacher) and save it."""
    args, root, teacher_dir = state.args, state.root, state.teacher_dir
    logger.info("student stage: method %s, student view %s", args.method, args.missing_protocol)
    teacher, fold_teachers = load_teachers(state)
    student = new_students(state)
    run_dir = root / "student_run"
    resume = resume_point(args, run_dir, "student", args.method)
    state.record_outputs(state.guard, run_dir.name)
    importance_model = None
    if (args.recoverability_floor is not None and teacher is None
            and (teacher_dir / "config.json").is_file()):  # a trained teacher measures modality importance
        importance_model = load_model(teacher_dir, device="cpu")
    own_ids = (teacher_tokenizer_for(teacher_dir, state.tokenizer)
               if (teacher or importance_model) is not None else None)
    trainer = make_trainer(state, student, stage_args(args, run_dir, teacher_name_or_path=str(teacher_dir)), teacher,
                           fold_teachers=fold_teachers, importance_model=importance_model, teacher_tokenizer=own_ids)
    state.say(f"student stage: method {args.method}, student view {args.missing_protocol}, into {root}")
    train(trainer, run_dir, resume)
    wrapper = trainer.accelerator.unwrap_model(trainer.model)
    students = {"student": wrapper.student} if len(wrapper.students) == 1 else {
        f"student_{'_'.join(s.config.student_modalities)}": s for s in wrapper.students}
    for name, model in students.items():
        state.record_outputs(state.guard, name)
        save(state, model, root / name,
             {**state.record, "model": {**state.record["model"], "text_backbone": state.model_args.text_backbone},
              "role": "student", "method": args.method, "result": {"global_step": trainer.state.global_step}})
    state.results["student"] = evaluate_rates(trainer, state.rates, "eval")
    warn_if_near_constant(trainer, state.spec, "student")
    for name in students:
        write_card(root / name, training_summary(args, teacher_dir if state.needs_teacher else None,
                                                 state.results["student"], teacher_folds=len(fold_teachers or [])),
                   args)


def write_results(state: RunState) -> None:
    """results.json (validation metrics of each stage) and the printed key metrics (main process)."""
    if not state.main_process:
        return
    state.record_outputs(state.guard, "results.json")
    atomic_write(state.root / "results.json", json.dumps(state.results, indent=2, sort_keys=True))
    for name, metrics in state.results.items():
        shown = printable_metrics(name, metrics, KEY_METRICS[state.spec.metric_set])
        print(f"[{name}] {json.dumps(shown, sort_keys=True)}")


def publish(state: RunState) -> None:
    """With `--push_to_hub`: evaluate the student and publish the release once, at the end of the run."""
    args = state.args
    if not (args.push_to_hub and state.main_process and state.student_stage):
        return
    from hf_mmkd.evaluation import publish_training_run

    state.record_outputs(state.guard, "evaluation", "release")
    release = publish_training_run(
        state.root, state.data_args.dataset,
        repo_id=args.hub_model_id, protocol=args.eval_missing_protocol,
        seeds=(args.missing_seed,), private=args.hub_private_repo, token=args.hub_token,
        max_text_length=state.data_args.max_text_length,
        hyperparameters={"method": args.method, "num_train_epochs": args.num_train_epochs,
                         "learning_rate": args.learning_rate, "seed": args.seed,
                         "missing_protocol": args.missing_protocol, "dataset": state.data_args.dataset})
    print(f"published {release} to https://huggingface.co/{args.hub_model_id}")
