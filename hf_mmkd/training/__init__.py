"""The main job behind `accelerate launch train.py`: teacher stage, then student stage, on a prepared dataset.

One module per concern, in the order a run meets them (`job.run` reads top to bottom like this):
    arguments   the four argument groups, `--config` YAML, parse_args
    checks      everything that refuses a run before anything is written or trained
    inputs      the splits, rows no modality can read, feature widths, the MMKDConfig keyword arguments
    models      new teachers and students, the backbones' preprocessors
    resume      complete checkpoints and where each stage resumes
    state       `RunState`: what one run carries from its preparation through its stages
    stages      teacher, teacher folds, student, results and publishing, each a function of the RunState
    cards       validation at the report rates, printed metrics, training summaries and model cards
    processes   a user error on one process stops all of them
    job         `run()` and `main()` (train.py)

Argument groups (HfArgumentParser dataclasses, in this order): `ModelArguments`, `DataArguments`,
`StageArguments`, `MMKDTrainingArguments`. A YAML file given as `--config` supplies defaults; flags on the
command line override it. With no arguments the job trains on the synthetic demo set (`dataset=demo`).

Layout of `output_dir`:
    teacher/        the trained teacher (safetensors + config with auto_map + modeling and processing files, and
                    hf_mmkd_provenance.json: what produced it, see hf_mmkd/provenance.py)
    student/        the trained student, same format
    teacher_run/, student_run/   Trainer checkpoints of each stage (`--resume_from_checkpoint true` resumes from the
                    last; a PATH must be a checkpoint-N folder of these, written by the same stage and method:
                    a checkpoint of another run is refused before anything is written, see `check_resume_path`)
    results.json    validation metrics of each stage, complete and under the evaluation protocol
    .hf_mmkd_outputs.json   what train.py wrote there (hf_mmkd.io.OutputFolder): nothing else is ever replaced

Safety (hf_mmkd/io.py): arguments, data and method are checked before anything is written or trained; the run holds
a lock on `output_dir` (a second run into it is refused at start; a killed run's lock dies with it); an existing
teacher is reused only when its provenance record matches the run (`--reuse_teacher` overrides); every user error is
one line on stderr, never a traceback.

What the labels mean comes from the data set's spec (`hf_mmkd.data.spec`, `dataset_spec.json` of the prepared
folder; the demo's own spec for `dataset=demo`) and from nothing else: the task and the number of outputs, the
label column, where a regression head starts (the centre of the neutral band), the label bins of CorrKD / MM-CKD
(through `MMKDConfig.dataset_spec`, which teacher and student carry), and the validation metrics. Train and
validation rows that have none of the model's modalities are left out with a warning naming their ids.
"""

from hf_mmkd.training.arguments import (
    DEFAULTS,
    NEGATED_HELP,
    NULL_STRINGS,
    PARSER_TYPES,
    DataArguments,
    ModelArguments,
    StageArguments,
    accept_null_for_optional_fields,
    build_parser,
    parse_args,
    parse_rates,
    read_config,
    teacher_epochs,
)
from hf_mmkd.training.cards import (
    evaluate_rates,
    printable_metrics,
    training_summary,
    warn_if_near_constant,
    write_card,
)
from hf_mmkd.training.checks import (
    INFINITE_ALLOWED,
    check_arguments,
    check_labels,
    check_method,
    check_metric_for_best_model,
    check_teacher_text_backbone,
    preflight,
    tensorboard_available,
)
from hf_mmkd.training.inputs import (
    add_length_column,
    feature_dims,
    leave_out_rows_without_modality,
    load_splits,
    model_config_kwargs,
    readable_modalities,
    teacher_model_args,
    trained_model_args,
    untrained_modalities,
)
from hf_mmkd.training.job import TRAIN_OUTPUTS, main, plan_run, prepare_data, prepare_models, run, run_locked
from hf_mmkd.training.models import (
    MINILM_HUB_ID,
    backbone_name,
    init_from_teacher,
    load_preprocessors,
    minilm_path,
    new_model,
    teacher_tokenizer_for,
)
from hf_mmkd.training.processes import agree, on_every_process
from hf_mmkd.training.resume import (
    check_resume_checkpoint,
    check_resume_path,
    checkpoint_is_complete,
    last_complete_checkpoint,
    resume_point,
    resume_stage_dirs,
)
from hf_mmkd.training.stages import checkpoint_writes, run_stages, stage_args
from hf_mmkd.training.state import RunState

__all__ = [
    "DEFAULTS",
    "DataArguments",
    "INFINITE_ALLOWED",
    "MINILM_HUB_ID",
    "ModelArguments",
    "NEGATED_HELP",
    "NULL_STRINGS",
    "PARSER_TYPES",
    "RunState",
    "StageArguments",
    "TRAIN_OUTPUTS",
    "accept_null_for_optional_fields",
    "add_length_column",
    "agree",
    "backbone_name",
    "build_parser",
    "check_arguments",
    "check_labels",
    "check_method",
    "check_metric_for_best_model",
    "check_resume_checkpoint",
    "check_resume_path",
    "check_teacher_text_backbone",
    "checkpoint_is_complete",
    "checkpoint_writes",
    "evaluate_rates",
    "feature_dims",
    "init_from_teacher",
    "last_complete_checkpoint",
    "leave_out_rows_without_modality",
    "load_preprocessors",
    "load_splits",
    "main",
    "minilm_path",
    "model_config_kwargs",
    "new_model",
    "on_every_process",
    "parse_args",
    "parse_rates",
    "plan_run",
    "preflight",
    "prepare_data",
    "prepare_models",
    "printable_metrics",
    "read_config",
    "readable_modalities",
    "resume_point",
    "resume_stage_dirs",
    "run",
    "run_locked",
    "run_stages",
    "stage_args",
    "teacher_epochs",
    "teacher_model_args",
    "teacher_tokenizer_for",
    "tensorboard_available",
    "trained_model_args",
    "training_summary",
    "untrained_modalities",
    "warn_if_near_constant",
    "write_card",
]
