"""`run()`: the main job from arguments to results (see the package docstring); `main()`: train.py."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

from transformers import set_seed

from hf_mmkd import __version__ as hf_mmkd_version
from hf_mmkd.data.standardize import FeatureStandardizer
from hf_mmkd.distillation import DISTILLATION_LOSSES
from hf_mmkd.io import (
    MANIFEST,
    USER_ERRORS,
    OutputFolder,
    RunLockError,
    error_message,
    run_lock,
)
from hf_mmkd.metrics import make_compute_metrics
from hf_mmkd.provenance import training_record
from hf_mmkd.trainer import MMKDTrainingArguments
from hf_mmkd.training.arguments import DataArguments, ModelArguments, StageArguments, parse_args, teacher_epochs
from hf_mmkd.training.checks import (
    check_arguments,
    check_labels,
    check_method,
    check_metric_for_best_model,
    check_teacher_text_backbone,
    preflight,
)
from hf_mmkd.training.inputs import (
    add_length_column,
    leave_out_rows_without_modality,
    load_splits,
    model_config_kwargs,
    readable_modalities,
    teacher_model_args,
    trained_model_args,
    untrained_modalities,
)
from hf_mmkd.training.models import load_preprocessors
from hf_mmkd.training.processes import agree, on_every_process
from hf_mmkd.training.resume import check_resume_path, resume_stage_dirs
from hf_mmkd.training.stages import run_stages
from hf_mmkd.training.state import RunState

TRAIN_OUTPUTS = ("student", "teacher_run", "student_run", "results.json", "evaluation", "release")


def run(model_args: ModelArguments, data_args: DataArguments, stage: StageArguments,
        args: MMKDTrainingArguments) -> dict:
    """Both stages (see the package docstring). Arguments, data and method are checked before anything is written;
    then `output_dir` is locked (`hf_mmkd.io.run_lock`) and guarded (`hf_mmkd.io.OutputFolder`) for the run."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.get_process_log_level())
    set_seed(args.seed)
    state = plan_run(model_args, data_args, stage, args)  # which stages run, where the teacher is
    check_arguments(stage, args, state.teacher_stage, state.student_stage)
    check_resume_path(args, resume_stage_dirs(state.root, stage, args, state.teacher_stage, state.student_stage))
    preflight(args)  # after the local checks: the repo id is validated before the Hub is asked
    prepare_data(state)  # read and check the data set; the model's config from it
    prepare_models(state)  # the backbones' preprocessors, the teacher's provenance record
    return run_locked(state)  # the stages, inside the output folder's lock (stages.run_stages)


def plan_run(model_args: ModelArguments, data_args: DataArguments, stage: StageArguments,
             args: MMKDTrainingArguments) -> RunState:
    """Say how the run is spread over processes and its global batch; decide which stages run."""
    main_process = args.process_index == 0
    say = print if main_process else (lambda *a, **k: None)  # the normal output: what runs and what is skipped
    say(f"hf_mmkd: {args.world_size} process(es), distributed type {args.distributed_state.distributed_type}")
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    say(f"global batch {args.per_device_train_batch_size} per process x {args.world_size} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation step(s) = {batch}; learning rate {args.learning_rate:g} "
        "as given (never rescaled with the global batch)")
    root = Path(args.output_dir)
    needs_teacher = DISTILLATION_LOSSES[args.method].teacher_mode in ("frozen", "online")
    return RunState(
        model_args=model_args, data_args=data_args, stage=stage, args=args, say=say,
        teacher_dir=Path(args.teacher_name_or_path) if args.teacher_name_or_path else root / "teacher",
        teacher_stage=stage.stage == "teacher" or (stage.stage == "both" and needs_teacher),
        student_stage=stage.stage in ("student", "both"), needs_teacher=needs_teacher)


def prepare_data(state: RunState) -> None:
    """Read the splits (on every process), check labels, metric, backbones and method against them, leave out the
    rows the model cannot read, fit the standardisation on train, and build the model's config keyword arguments."""
    model_args, data_args, args = state.model_args, state.data_args, state.args
    splits, spec, state.fingerprint = on_every_process(args, load_splits, data_args, args.seed)
    check_labels(splits, data_args.dataset, spec.label_column,
                 spec.num_labels if spec.task == "classification" else None)
    check_metric_for_best_model(args, spec)
    check_teacher_text_backbone(model_args, args.method)
    config_kwargs = model_config_kwargs(model_args, splits, None, spec)  # refuses data no modality can train on
    # The rows the model cannot read are left out before the standardisation is fitted on train.
    untrained = untrained_modalities(model_args, splits)
    leave_out_rows_without_modality(splits, [m for m in readable_modalities(model_args, splits) if m not in untrained],
                                    args.eval_missing_availability)
    standardization = FeatureStandardizer.fit(splits["train"]).to_dict() if data_args.standardize else None
    config_kwargs["feature_standardization"] = standardization
    state.model_args = trained_model_args(model_args, splits)
    if state.student_stage:
        check_method(args, config_kwargs)
    state.splits, state.spec, state.config_kwargs = splits, spec, config_kwargs
    state.compute_metrics = make_compute_metrics(spec)


def prepare_models(state: RunState) -> None:
    """Load the backbones' preprocessors (on every process), add the length column for `group_by_length`, and
    write down the teacher's provenance record and the student's config keyword arguments."""
    model_args, data_args, stage, args = state.model_args, state.data_args, state.stage, state.args
    splits = state.splits
    state.tokenizer, state.feature_extractor, state.image_processor = on_every_process(
        args, load_preprocessors, model_args)
    state.teacher_tokenizer = on_every_process(args, load_preprocessors, teacher_model_args(model_args))[0] \
        if model_args.teacher_text_backbone else state.tokenizer
    if args.train_sampling_strategy == "group_by_length":  # Trainer groups evaluation batches too
        for name in ("train", "validation"):
            splits[name] = add_length_column(splits[name], state.tokenizer)
    state.record = training_record(
        dataset=data_args.dataset, fingerprint=state.fingerprint, train_rows=len(splits["train"]),
        data_args=dataclasses.asdict(data_args),
        model_args={k: v for k, v in dataclasses.asdict(teacher_model_args(model_args)).items()
                    if k != "teacher_text_backbone"},  # the teacher's architecture
        epochs=teacher_epochs(stage, args),
        learning_rate=stage.teacher_learning_rate if stage.teacher_learning_rate is not None else args.learning_rate,
        training_args=args, version=hf_mmkd_version)
    state.student_kwargs = {**state.config_kwargs, "role": "student", "distillation_method": args.method}


def run_locked(state: RunState) -> dict:
    """Guard and lock the run's folders (the main process), agree on every process, and run the stages; a run
    folder this run created and left empty is removed."""
    root, teacher_dir, stage = state.root, state.teacher_dir, state.stage
    # The run's folders: the dataset (and a teacher that is only read) are inputs, never written over.
    own_teacher = os.path.realpath(teacher_dir) == os.path.realpath(root / "teacher")
    state.guard = OutputFolder(root, "train.py", flag="--output_dir", outputs=TRAIN_OUTPUTS,
                               inputs=[state.data_args.dataset] + ([] if own_teacher or state.teacher_stage
                                                                   else [teacher_dir]))
    state.teacher_guard = state.guard if own_teacher else OutputFolder(teacher_dir.parent, "train.py", outputs=[],
                                                                       flag="teacher folder")
    # A teacher written outside output_dir (a shared teacher run's folder) is locked there too, but only by a run
    # that will write it: runs that merely reuse a shared teacher may run side by side.
    writes_shared_teacher = state.teacher_stage and not own_teacher and (
        stage.reuse_teacher == "never" or not (teacher_dir / "config.json").is_file()
        or any(not (state.fold_dir(k) / "config.json").is_file() for k in range(stage.teacher_folds)))
    created = not root.exists()
    try:
        with contextlib.ExitStack() as locks:
            error = None
            if state.main_process:  # the only process that writes there (the others do not even probe the folders)
                try:
                    state.guard.check()
                    if writes_shared_teacher:
                        state.teacher_guard.check()
                    locks.enter_context(run_lock(root))
                    if writes_shared_teacher:
                        locks.enter_context(run_lock(teacher_dir.parent))
                except RunLockError as err:
                    error = str(err)
                except USER_ERRORS as err:
                    error = err
            agree(state.args, error)
            return run_stages(state)
    except BaseException:
        if created and state.main_process and root.is_dir() and {p.name for p in root.iterdir()} <= {MANIFEST}:
            shutil.rmtree(root, ignore_errors=True)  # nothing of this run is left: no empty run folder either
        raise


def main(argv: list[str] | None = None) -> int:
    """`train.py`: exit status 0, 2 for bad arguments, 1 for any other user error (one line on stderr, never a
    traceback; see `hf_mmkd.io.USER_ERRORS`)."""
    try:
        model_args, data_args, stage, args = parse_args(argv)
    except USER_ERRORS as err:
        print(f"train.py: error: {error_message(err)}", file=sys.stderr)
        return 2
    try:
        run(model_args, data_args, stage, args)
    except USER_ERRORS as err:  # bad data, a missing teacher, a full disk, a busy folder: one line
        print(f"train.py: error: {error_message(err)}", file=sys.stderr)
        return 1
    return 0
