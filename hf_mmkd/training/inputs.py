"""The data of a run: the splits of a prepared data set (or the demo), rows no modality of the model can
read, the feature widths and the MMKDConfig keyword arguments they give, the modalities that train.
"""

from __future__ import annotations

import dataclasses
import logging

from hf_mmkd.data.missing import availability_flags
from hf_mmkd.data.prepared import drop_rows_without_modality, load_dataset_and_spec
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.provenance import data_fingerprint
from hf_mmkd.training.arguments import DataArguments, ModelArguments

logger = logging.getLogger("hf_mmkd")


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
