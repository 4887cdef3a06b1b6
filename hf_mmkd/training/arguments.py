"""The arguments of train.py: four HfArgumentParser dataclasses, a `--config` YAML file as defaults,
`None`/`null` for optional fields, and the `--report_rates` list.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser

from hf_mmkd.data.collator import DEFAULT_MAX_TEXT_LENGTH
from hf_mmkd.io import (
    parse_yaml,
)
from hf_mmkd.provenance import REUSE_TEACHER
from hf_mmkd.trainer import MMKDTrainingArguments


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
    parser = build_parser()
    several = {a.dest for a in parser._actions if a.nargs in ("+", "*")}  # list fields: one value per item
    cli = []
    for key, value in values.items():
        if isinstance(value, list) and key in several:
            if not value:
                raise ValueError(f"{key} in the config is an empty list; give at least one value or leave it out")
            cli += [f"--{key}", *(str(v) for v in value)]
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        cli += [f"--{key}", str(value)]
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


def teacher_epochs(stage: StageArguments, args: MMKDTrainingArguments) -> float:
    return args.num_train_epochs if stage.teacher_num_train_epochs is None else stage.teacher_num_train_epochs
