"""Robustness evaluation: checkpoints x missing-modality conditions x mask seeds -> a `hf_mmkd.report` structure.

`evaluate_checkpoints({"teacher": path, "student": path}, "/tmp/mosi_prepared", "p2")` loads each checkpoint with
`MMKDForSentiment.from_pretrained` (with its saved processor's tokenizer / feature extractor / image processor, or
its tokenizer, when it ships them), collates the split ONCE per input layout (tokenising included), and then, for every seed and every condition of the protocol, only re-runs the
`MissingModalitySimulator` on the cached tensors and the model in eval mode under `torch.inference_mode`.

Conditions per protocol (docs/protocols.md):

| protocol | conditions | summary (done by `hf_mmkd.report`) |
|---|---|---|
| p1 | token/frame drop rate r = 0.0, 0.1, ..., 1.0 | AUILC over r |
| p2 | the same r for every modality, r = 0.0, ..., 0.9 | mean over r = 0.0-0.9 |
| p3 | the six sets {l}, {a}, {v}, {l,a}, {l,v}, {a,v} plus {l,a,v} | mean of the six; {l,a,v} on its own |
| p4 | whole-modality drop at MR = 0.1, ..., 0.7 (IMDer's shares) | mean over MR |
| p5 | the seven CMAD patterns (the six sets and {l,a,v}) | mean over the patterns |

Sets only use the modalities that both the model and the split have: on the MMSA MOSI copy (text + audio, no
vision) P3/P5 evaluate {l}, {a} and {l,a}; on ICT-MMMO, whose train split has no text (so `train.py` builds no
text encoder), {a}, {v} and {a,v}. A note then names what each side lacks and the sets left out. P4 (IMDer)
removes whole modalities at missing rate MR = 0.1, ..., 0.7 with IMDer's shares of rows missing one or two
modalities, drawn per row and seed (deterministic), and is summarised by the mean over MR.

Seeds are the simulator's mask seeds (LNLN: mask seed = run seed, 1111-1113). The simulator draws per row from
(seed, row id), so results do not depend on the batch size. Conditions that draw nothing (r = 0, fixed sets) give
the same numbers for every seed; they are computed once and copied to each seed.

The metric set is the data set's (its spec's `metric_set`, `hf_mmkd.data.spec.METRIC_SETS`: by task and label
range, never by name): MMSA's metrics for scores in [-3, 3] or [-1, 1], classification metrics for classes, and
MAE / Corr / sign accuracy relative to the neutral band for any other range. Each checkpoint's own spec
(`config.dataset_spec`) must declare the same labels. Every report also holds a reference row, the constant
predictor (the train split's median label, or its majority class) scored on the same rows under the same
conditions, and a warning for each checkpoint whose predictions are near-constant (`near_constant`). Test rows
that have none of a checkpoint's modalities are left out of its evaluation, with a note naming their ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_mmkd.data.collator import DEFAULT_MAX_TEXT_LENGTH, MMKDDataCollator
from hf_mmkd.data.missing import PATTERNS, MissingModalitySimulator, model_inputs
from hf_mmkd.data.prepared import load_dataset_and_spec
from hf_mmkd.data.spec import DatasetSpec
from hf_mmkd.checkpoints import WEIGHT_FILES, check_checkpoint_dir  # noqa: F401  (part of this API)
from hf_mmkd.io import read_json
from hf_mmkd.metrics import (
    COMPLETE_SET,
    P2_RATES,
    P3_SETS,
    P4_RATES,
    P5_SETS,
    metric_fn,
    parse_condition,
    rate_condition,
    set_condition,
)
from hf_mmkd.report import PROTOCOLS, markdown_table, write_report

__all__ = [
    "DEFAULT_SEEDS",
    "EVAL_PROTOCOLS",
    "NEAR_CONSTANT",
    "P1_RATES",
    "check_checkpoint_dir",
    "checkpoint_names",
    "condition_plan",
    "constant_reference",
    "dataset_key",
    "default_stem",
    "evaluate_checkpoints",
    "load_checkpoint",
    "load_eval_split",
    "near_constant",
    "publish_training_run",
    "report_markdown",
    "write_evaluation_report",
]

EVAL_PROTOCOLS = tuple(PROTOCOLS)  # p1 ... p5: the protocols hf_mmkd.report can summarise
DEFAULT_SEEDS = (1111, 1112, 1113)  # LNLN's run seeds, used as mask seeds (docs/protocols.md#p2)
P1_RATES = P2_RATES + (1.0,)  # MMSA generate_m on MOSI/MOSEI: r = 0.0, 0.1, ..., 1.0 (docs/protocols.md#p1)
NEAR_CONSTANT = 0.01  # predictions whose std is below this share of the labels' std are "near-constant"
_LETTER = {"text": "l", "audio": "a", "vision": "v"}
_MODALITY_COLUMNS = {"text": ("text_features", "raw_text", "text_input_ids"), "audio": ("audio_features", "audio"),
                     "vision": ("vision_features", "frames")}


# ------------------------------------------------------------------------------------ reference, warnings


def constant_reference(spec: DatasetSpec, train_labels) -> tuple[str, float | int]:
    """`(row name, value)` of the constant predictor: the train split's median label (regression) or its majority
    class (classification, the lowest id on a tie)."""
    y = np.asarray([v for v in train_labels if v is not None], dtype=np.float64)
    if not len(y):
        raise ValueError("the train split has no label to take the constant reference from")
    if spec.task == "classification":
        value = int(np.bincount(y.astype(np.int64), minlength=spec.num_labels).argmax())
        return f"constant: majority class {spec.class_names[value]!r}", value
    value = float(np.median(y))
    return f"constant: train median {value:g}", value


def near_constant(predictions: np.ndarray, labels: np.ndarray, spec: DatasetSpec) -> str | None:
    """Why `predictions` count as near-constant, or None. Regression: their std is below `NEAR_CONSTANT` (1%) of
    the labels' std. Classification (logits or ids): one class is predicted for every row."""
    if spec.task == "classification":
        ids = np.unique(predictions.argmax(1) if predictions.ndim == 2 else predictions)
        if len(ids) == 1 and len(np.unique(labels)) > 1:
            return f"predicts class {spec.class_names[int(ids[0])]!r} for every row"
        return None
    p_std, y_std = float(np.std(predictions)), float(np.std(labels))
    if y_std > 0 and p_std < NEAR_CONSTANT * y_std:
        return f"prediction std {p_std:.3g} is {100 * p_std / y_std:.2g}% of the labels' std {y_std:.3g}"
    return None


# ----------------------------------------------------------------------------------------------- inputs


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None):
    """(model in eval mode on `device`, collator keyword arguments) of a checkpoint folder.

    A checkpoint with a saved processor (`processor_config.json`) is loaded with `hf_mmkd.inference.load_checkpoint`
    and its sub-processors (tokenizer, feature extractor, image processor) and limits (max_text_length,
    max_audio_seconds) are what the collator uses, as in training. Otherwise the tokenizer is loaded with
    `AutoTokenizer` when the model has a text backbone and the folder ships tokenizer files. `device` defaults to
    CUDA when available.
    """
    from transformers import AutoTokenizer

    from hf_mmkd.inference import load_model

    ckpt = check_checkpoint_dir(path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if (ckpt / "processor_config.json").is_file():
        from hf_mmkd.inference import load_checkpoint as load_with_processor

        model, proc = load_with_processor(ckpt, device)
        return model.eval(), {"tokenizer": proc.tokenizer, "feature_extractor": proc.feature_extractor,
                              "image_processor": proc.image_processor, "max_text_length": proc.max_text_length,
                              "max_audio_seconds": proc.max_audio_seconds}
    model = load_model(ckpt, device)
    tokenizer = None
    if model.config.encoder_kind("text") == "backbone" and (ckpt / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(ckpt)
    return model, {"tokenizer": tokenizer}


def dataset_key(dataset: Any, dataset_name: str | None = None) -> str:
    """The data set's display name in titles and report file names: `dataset_name` when given, else the name its
    spec declares (`hf_mmkd.data.prepared.dataset_spec`)."""
    if dataset_name:
        return dataset_name
    from hf_mmkd.data.prepared import dataset_spec

    return dataset_spec(dataset).name


def default_stem(dataset: Any, protocol: str, dataset_name: str | None = None) -> str:
    """The file name stem `write_evaluation_report` uses for `evaluate_checkpoints(dataset, protocol,
    dataset_name=...)`: `<display name>_<protocol>`, made file-name safe, known before the evaluation runs."""
    return _stem(dataset_key(dataset, dataset_name), protocol)


def _stem(name: str, protocol: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}_{str(protocol).lower()}")


def load_eval_split(dataset: Any, split: str = "test", spec: DatasetSpec | None = None):
    """`(Dataset, DatasetSpec, train labels or None)`: `dataset` is "demo", a prepared folder, a Hub dataset id, or
    a `DatasetDict` (see `hf_mmkd.data.prepared.load_dataset_and_spec`). An in-memory `DatasetDict` declares
    nothing itself: `spec` (e.g. the checkpoint's `config.dataset_spec`) says what its labels mean when given, else
    `build_spec`'s defaults do. The train labels give the constant reference (None without a train split)."""
    from datasets import DatasetDict

    if isinstance(dataset, (str, os.PathLike)) and str(dataset).startswith((".", "/", "~")) \
            and not Path(dataset).is_dir():
        raise FileNotFoundError(f"dataset folder {dataset} does not exist")
    if isinstance(dataset, DatasetDict) and spec is not None:
        splits = dataset
    else:
        splits, spec = load_dataset_and_spec(dataset)
    if split not in splits:
        raise ValueError(f"dataset {dataset if isinstance(dataset, (str, os.PathLike)) else spec.name!r} has no "
                         f"{split!r} split (splits: {', '.join(splits)})")
    if len(splits[split]) == 0:
        raise ValueError(f"the {split!r} split of {spec.name!r} is empty")
    train = splits["train"][spec.label_column] if "train" in splits else None
    return splits[split], spec, train


def checkpoint_names(paths: Sequence[str | os.PathLike], names: Sequence[str] | None = None) -> list[str]:
    """Display names: `names` if given (one per checkpoint, unique), else each folder's name, with parent folders
    prepended until they differ (`mosi_logit/student` vs `mosi_corrkd/student`)."""
    if names is not None:
        names = list(names)
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} names for {len(paths)} checkpoints")
        if len(set(names)) != len(names):
            raise ValueError(f"checkpoint names must be unique, got {names}")
        return names
    parts = [Path(os.path.abspath(p)).parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        out = ["/".join(p[-depth:]) for p in parts]
        if len(set(out)) == len(out):
            return out
    raise ValueError(f"the same checkpoint is listed twice: {[str(p) for p in paths]}")


# --------------------------------------------------------------------------------------------- conditions


def _available_letters(modalities: Sequence[str]) -> str:
    return "".join(_LETTER[m] for m in ("text", "audio", "vision") if m in modalities)


def condition_plan(protocol: str, modalities: Sequence[str], rates: Sequence[float] | None = None,
                   sets: Sequence[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """`[(condition, simulator kwargs)]` of a protocol, in report order.

    `modalities` are those both the model and the data have; P3/P5 keep the sets inside them (at least one set
    must remain). `rates` overrides P1/P2's rates; `sets` (e.g. "{l,a}" or "la") overrides P3/P5's sets.
    """
    protocol = protocol.lower()
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(EVAL_PROTOCOLS)}")
    if PROTOCOLS[protocol]["kind"] == "rate":
        if sets:
            raise ValueError(f"protocol {protocol} varies a missing rate; availability sets apply to p3/p5")
        default = {"p1": P1_RATES, "p2": P2_RATES, "p4": P4_RATES}[protocol]
        rates = list(default) if rates is None else [float(r) for r in rates]
        if not rates:
            raise ValueError("no missing rates given")
        if protocol == "p4" and not set(round(r, 6) for r in rates) <= set(P4_RATES):
            raise ValueError(f"p4 (IMDer) has missing rates MR in {list(P4_RATES)} only, got {rates}")
        plan = {rate_condition(r): {"rate": float(r)} for r in rates}  # rate_condition checks 0 <= r <= 1
        return list(plan.items())
    if rates:
        raise ValueError(f"protocol {protocol} evaluates fixed availability sets; missing rates apply to p1/p2")
    have = set(_available_letters(modalities))
    if sets is None:
        default = P3_SETS + (COMPLETE_SET,) if protocol == "p3" else P5_SETS
        wanted = [s for s in default if set(parse_condition(s)[1][1:-1].split(",")) <= have]
    else:
        wanted = []
        for s in sets:
            text = s if s.startswith("{") else "{" + ",".join(s) + "}"
            cond = parse_condition(text)[1]
            if not set(cond[1:-1].split(",")) <= have:
                raise ValueError(f"availability set {cond} needs a modality that the model or the data lack "
                                 f"(they share {set_condition(sorted(have))})")
            wanted.append(cond)
    if not wanted:
        raise ValueError(f"no availability set of {protocol} fits the modalities {list(modalities)}")
    return [(c, {"availability": c[1:-1].replace(",", "")}) for c in dict.fromkeys(wanted)]


def _draws_nothing(protocol: str, kwargs: Mapping[str, Any]) -> bool:
    """The simulator makes no random draw for this condition, so every seed gives the same numbers."""
    if protocol in ("p1", "p2", "p4"):
        return kwargs["rate"] <= 0.0
    return not kwargs.get("rate")


# ---------------------------------------------------------------------------------------- collation cache


def _input_signature(config, collate_kwargs: Mapping[str, Any], checkpoint: Path) -> str:
    """What determines the collated tensors: encoder kinds, feature widths, standardisation, limits, tokenizer and
    processor files."""
    sig = {m: (config.encoder_kind(m), getattr(config, f"{m}_feature_dim")) for m in ("text", "audio", "vision")}
    sig["standardization"] = config.feature_standardization
    sig["task"] = config.task
    sig["limits"] = {k: v for k, v in collate_kwargs.items() if k.startswith("max_")}
    if any(v is not None for k, v in collate_kwargs.items() if not k.startswith("max_")):
        h = hashlib.sha256()
        for f in sorted(checkpoint.glob("*")):
            if f.name.startswith(("tokenizer", "vocab", "merges", "special_tokens", "added_tokens", "preprocessor",
                                  "processor", "feature_extractor")):
                h.update(f.name.encode() + f.read_bytes())
        sig["processors"] = h.hexdigest()
    return json.dumps(sig, sort_keys=True, default=str)


def _collate(split, config, collate_kwargs: Mapping[str, Any], label_column: str,
             batch_size: int) -> tuple[list[dict], list[str]]:
    """(the split as a list of collated batches with `row_key`, ids of the rows left out): rows that have none of
    the model's modalities are left out (they cannot be predicted); the others are batched by length."""
    collator = MMKDDataCollator(config, label_column=label_column, return_row_keys=True,
                                allow_rows_without_modality=True, **collate_kwargs)
    rows = [split[i] for i in range(len(split))]
    whole = collator(rows)
    empty = ~whole["modality_mask"].any(1).numpy()
    left_out = [str(rows[i].get("id", i)) for i in np.flatnonzero(empty)]
    order = [i for i in np.argsort(_row_lengths(whole), kind="stable") if not empty[i]]
    return [collator([rows[i] for i in order[start:start + batch_size]])
            for start in range(0, len(order), batch_size)], left_out


_STEP_MASKS = ("attention_mask", "audio_attention_mask", "frame_mask")
_LENGTHS = ("text_lengths", "audio_lengths", "vision_lengths")


def _row_lengths(batch: dict) -> np.ndarray:
    """Valid steps per row over all modalities. Batching rows of similar length pads less (MOSI transcripts
    average ~15 tokens, the longest are cut at 50): a several-fold saving for text backbones. Order does not
    change any number: the simulator draws per row id and the metrics do not depend on the row order."""
    total = torch.zeros(batch["modality_mask"].shape[0], dtype=torch.long)
    for k in _STEP_MASKS:
        if batch.get(k) is not None:
            total += batch[k].long().sum(1)
    for k in _LENGTHS:
        if batch.get(k) is not None:
            total += batch[k].long()
    return total.numpy()


def _present_modalities(batches: list[dict], config) -> list[str]:
    """Modalities of the model that at least one row of the split has."""
    mask = torch.cat([b["modality_mask"] for b in batches]).any(0)
    return [m for i, m in enumerate(("text", "audio", "vision")) if mask[i] and m in config.modalities]


def _select_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The rows `rows` (bool (B,)) of a collated batch; every tensor is batch-first."""
    return {k: v[rows] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- running


@torch.inference_mode()
def _predict(model, batches: list[dict], simulator: MissingModalitySimulator) -> tuple[np.ndarray, np.ndarray, int]:
    """(predictions, labels, rows left out): the model on every batch's degraded view.

    With a fixed availability set, rows that keep no modality (e.g. an ICT-MMMO row without audio under {a}) cannot
    be predicted and are left out of the condition; their number is returned.
    """
    preds, labels, skipped = [], [], 0
    fixed = simulator.fixed_pattern
    for batch in batches:
        if fixed is not None:
            keeps = (batch["modality_mask"] & torch.tensor(fixed, dtype=torch.bool)).any(1)
            if not keeps.all():
                skipped += int((~keeps).sum())
                if not keeps.any():
                    continue
                batch = _select_rows(batch, keeps)
        inputs = model_inputs(simulator(batch))
        y = inputs.pop("labels")
        logits = model(**{k: v.to(model.device) for k, v in inputs.items()}).logits
        preds.append(logits[:, 0] if logits.shape[-1] == 1 and model.config.task == "regression" else logits)
        labels.append(y)
    if not preds:
        raise ValueError(f"{simulator} leaves no row with a modality to predict from")
    return torch.cat(preds).float().cpu().numpy(), torch.cat(labels).cpu().numpy(), skipped


def _process_share() -> tuple[int, int]:
    """(this process's index, number of processes) when `accelerate launch` started several, else (0, 1).

    `evaluate_checkpoints` then shards its conditions (checkpoint x mask seed x rate/set) over the processes and
    gathers them, so every process returns the whole, identical result. Nothing is initialised for a plain run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes


def _gather_conditions(done: dict, world: int) -> dict:
    """Every process's computed conditions, merged (a no-op for one process)."""
    if world == 1:
        return done
    from accelerate.utils import gather_object

    merged = {}
    for part in gather_object([done]):
        merged.update(part)
    return merged


def evaluate_checkpoints(checkpoints: Mapping[str, str | os.PathLike], dataset: Any, protocol: str,
                         split: str = "test", seeds: Sequence[int] = DEFAULT_SEEDS,
                         rates: Sequence[float] | None = None, batch_size: int = 64, *,
                         sets: Sequence[str] | None = None, dataset_name: str | None = None,
                         max_text_length: int | None = None, device: str | torch.device | None = None,
                         progress: Callable[[str], None] | None = None,
                         progress_bar: bool = False, bf16: bool = False,
                         shard_across_processes: bool = False) -> dict[str, Any]:
    """Evaluate each checkpoint under every condition of `protocol` and every mask seed.

    Args:
        checkpoints: `{name: save_pretrained folder}`.
        dataset: "demo", a prepared folder, a Hub dataset id, or a `DatasetDict`; its spec gives the metric set
            (a `DatasetDict` takes the first checkpoint's `config.dataset_spec`, else `build_spec`'s defaults).
        protocol: p1 | p2 | p3 | p5 (see the module docstring); split: the split to evaluate.
        seeds: mask seeds of the simulator; rates / sets: override the protocol's rates (p1/p2) or sets (p3/p5).
        dataset_name: display name for titles and file names (default: the spec's `name`); it changes nothing
            else, and the notes say so when it differs from the spec's name.
        max_text_length: token limit of the collator (default: the saved processor's, else `train.py`'s
            `--max_text_length`).
        device: where the model runs (default: CUDA when available); the masks are drawn on the CPU.
        progress: called with one line per finished (checkpoint, seed).
        progress_bar: a tqdm bar on stderr over (checkpoint, seed, condition); conditions that draw nothing
            (r = 0, fixed sets without frame drop) are computed once per checkpoint and copied to the other seeds.
        bf16: run the models under bf16 autocast (CPU or GPU); the weights stay as saved, the metrics in fp32.
        shard_across_processes: under `accelerate launch` with several processes (`hf-mmkd evaluate` sets it),
            each process computes its share of the conditions (checkpoint x mask seed x rate/set) and every
            process returns the same, whole result (`_process_share`). Every process must call it then.

    Returns the `hf_mmkd.report` structure (with the constant reference as one more row of `checkpoints`, named
    in `reference`), plus `dataset_path`, `dataset_spec`, `metric_set`, `seeds`, `modalities` (those evaluated),
    `n_rows`, `checkpoint_paths`, `rows_left_out` (P3/P5 rows that keep no modality under a set, per checkpoint
    and condition; only when there are any), `rows_without_modality` (per checkpoint, ids of rows that have none
    of its modalities; only when there are any), `warnings` (near-constant checkpoints) and `notes`.
    """
    if not checkpoints:
        raise ValueError("no checkpoints to evaluate")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    protocol = protocol.lower()
    condition_plan(protocol, ("text", "audio", "vision"), rates, None)  # fail on a bad protocol/rates early
    paths = {name: check_checkpoint_dir(p) for name, p in checkpoints.items()}
    declared = read_json(next(iter(paths.values())) / "config.json").get("dataset_spec")  # for a DatasetDict
    data, spec, train_labels = load_eval_split(dataset, split, None if declared is None else
                                               DatasetSpec.from_dict(declared, where="the first checkpoint's spec"))
    name = dataset_name or spec.name
    score = metric_fn(spec)
    reference, reference_value = constant_reference(spec, train_labels) if train_labels is not None else (None, None)
    if reference in paths:
        raise ValueError(f"checkpoint name {reference!r} is taken by the constant reference row; rename it")

    results: dict[str, Any] = {"dataset": name, "protocol": protocol, "split": split, "checkpoints": {}}
    bar = _progress_bar(progress_bar, f"evaluate {protocol}")
    notes = [f"Metric set `{spec.metric_set}` of the data set's spec ({spec.task}: {spec.label_description})."]
    if dataset_name and dataset_name != spec.name:
        notes.append(f"Shown as {dataset_name!r} (--dataset-name); the data set's spec names it {spec.name!r}. The "
                     "name changes titles and file names only; the metric set comes from the spec.")
    rank, world = _process_share() if shard_across_processes else (0, 1)
    if world > 1 and device is None:  # one device per process (its own GPU, or the CPU)
        from accelerate import PartialState

        device = PartialState().device
    cache: dict[str, tuple[list[dict], list[str], list[str]]] = {}
    left_out, no_modality, warnings, evaluated_modalities, model_modalities = {}, {}, [], {}, set()
    reference_labels: dict[str, np.ndarray] = {}
    fixed: set[str] = set()  # the conditions that draw nothing
    for ckpt_name, path in paths.items():
        model, collate_kwargs = load_checkpoint(path, device)
        if model.config.task != spec.task:
            raise ValueError(f"checkpoint {ckpt_name!r} is a {model.config.task} model, but {spec.name!r} is a "
                             f"{spec.task} data set ({spec.label_description})")
        spec.check_labels_match(model.config.dataset_spec, f"checkpoint {ckpt_name!r}")
        if max_text_length is not None:
            collate_kwargs["max_text_length"] = max_text_length
        collate_kwargs.setdefault("max_text_length", DEFAULT_MAX_TEXT_LENGTH)  # what train.py tokenises with
        tokenizer = collate_kwargs.get("tokenizer")
        key = _input_signature(model.config, collate_kwargs, path)
        if key not in cache:
            batches, empty = _collate(data, model.config, collate_kwargs, spec.label_column, batch_size)
            cache[key] = (batches, _present_modalities(batches, model.config) if batches else [], empty)
        batches, modalities, empty = cache[key]
        if empty:
            no_modality[ckpt_name] = empty
        if not modalities:
            raise ValueError(f"the {split!r} split has none of the modalities of checkpoint {ckpt_name!r} "
                             f"({', '.join(model.config.modalities)})")
        evaluated_modalities[ckpt_name] = modalities
        model_modalities.update(model.config.modalities)
        plan = condition_plan(protocol, modalities, rates, sets)
        fixed.update(c for c, kwargs in plan if _draws_nothing(protocol, kwargs))
        bar.total = (bar.total or 0) + len(plan) * len(seeds)
        bar.set_description(f"{ckpt_name} {protocol}")
        # dropped tokens become the tokenizer's [UNK], as in MMKDTrainer (else the simulator's BERT default)
        unk = {"unk_token_id": tokenizer.unk_token_id} if getattr(tokenizer, "unk_token_id", None) is not None else {}
        # The conditions to compute: a condition that draws nothing only once (first seed), copied to the others.
        tasks = [(seed, cond, kwargs) for seed in seeds for cond, kwargs in plan
                 if seed == seeds[0] or not _draws_nothing(protocol, kwargs)]
        done = {}
        for i, (seed, cond, kwargs) in enumerate(tasks):
            if i % world != rank:  # under `accelerate launch`: process k computes every world-th condition
                continue
            sim = MissingModalitySimulator(protocol, training=False, seed=seed, **unk, **kwargs)
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                preds, labels, skipped = _predict(model, batches, sim)
            first = seed == seeds[0]
            done[(seed, cond)] = (score(preds, labels), labels if first else None, skipped,
                                  near_constant(preds, labels, spec) if first else None)
            bar.update(len(seeds) if first and _draws_nothing(protocol, kwargs) else 1)
        done = _gather_conditions(done, world)
        per_seed, flat = {}, []
        for seed in seeds:
            rows = {}
            for cond, kwargs in plan:
                metrics, labels, skipped, why = done[(seeds[0] if _draws_nothing(protocol, kwargs) else seed, cond)]
                rows[cond] = dict(metrics)
                if seed != seeds[0]:
                    continue
                reference_labels.setdefault(cond, labels)
                if why:
                    flat.append((cond, why))
                if skipped:
                    left_out.setdefault(ckpt_name, {})[cond] = skipped
            per_seed[str(seed)] = rows
            if progress:
                progress(f"{ckpt_name} seed {seed}: {len(rows)} conditions")
        results["checkpoints"][ckpt_name] = per_seed
        if flat:
            where = "every condition" if len(flat) == len(plan) else ", ".join(c for c, _ in flat)
            warnings.append(f"{ckpt_name!r} makes near-constant predictions under {where} ({flat[0][0]}: "
                            f"{flat[0][1]}): it has learned (almost) nothing from the inputs; compare it with the "
                            "constant reference row.")
        del model
    bar.close()

    if reference is not None:
        rows = {}
        for cond, labels in reference_labels.items():
            if spec.task == "classification":
                rows[cond] = score(np.full(len(labels), reference_value, dtype=np.int64), labels)
            else:
                rows[cond] = score(np.full(len(labels), reference_value, dtype=labels.dtype), labels)
        results["checkpoints"][reference] = {str(seed): {c: dict(m) for c, m in rows.items()} for seed in seeds}
        notes.append(f"Reference row {reference!r}: the constant predictor taken from the train split, scored on the "
                     f"rows and conditions of {next(iter(paths))!r}.")
    else:
        notes.append("No train split: no constant reference row.")
    all_mods = sorted({m for ms in evaluated_modalities.values() for m in ms}, key=("text", "audio", "vision").index)
    real = {k: v for k, v in results["checkpoints"].items() if k != reference}
    if PROTOCOLS[protocol]["kind"] == "set" and len(all_mods) < len(PATTERNS[-1]):
        notes.append(_restriction_note(protocol, split, data, all_mods, model_modalities, real, sets))
    if no_modality:
        notes.append("Rows that have none of a checkpoint's modalities were left out of its evaluation: "
                     + "; ".join(f"{k}: {len(ids)} rows (ids {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})"
                                 for k, ids in no_modality.items()) + ".")
        results["rows_without_modality"] = no_modality
    if left_out:
        notes.append("Rows that keep no modality under an availability set were left out of that condition: "
                     + "; ".join(f"{c}: {n} rows ({k})" for k, d in left_out.items() for c, n in d.items()) + ".")
        results["rows_left_out"] = left_out
    results.update(dataset_path=str(dataset) if isinstance(dataset, (str, os.PathLike)) else None,
                   dataset_spec=spec.to_dict(), metric_set=spec.metric_set, reference=reference,
                   reference_value=reference_value, seeds=seeds, modalities=evaluated_modalities, n_rows=len(data),
                   checkpoint_paths={k: str(p) for k, p in paths.items()}, warnings=warnings, notes=notes)
    results["fixed_conditions"] = sorted(fixed)  # computed once, copied to every seed: the report counts one run
    return results


def _progress_bar(enabled: bool, description: str):
    """A tqdm bar on stderr (its total grows as checkpoints are loaded), or a silent stand-in."""
    from tqdm.auto import tqdm

    return tqdm(total=0, desc=description, unit="condition", disable=not enabled, file=sys.stderr)


def _restriction_note(protocol: str, split: str, data, shared: list[str], model_mods: set[str],
                      per_checkpoint: Mapping[str, Any], sets: Sequence[str] | None) -> str:
    """Why P3/P5 evaluated fewer sets: which modality the models or the split lack, and the sets left out."""
    reasons = []
    for m in ("text", "audio", "vision"):
        if m in shared:
            continue
        flag = f"has_{m}"
        if flag in data.column_names:
            in_data = bool(any(data[flag]))
        else:  # no flag (the column schema requires one): any column of the modality
            in_data = any(c in data.column_names for c in _MODALITY_COLUMNS[m])
        if in_data and m not in model_mods:
            reasons.append(f"the models have no {m} encoder")
        elif m in model_mods:
            reasons.append(f"the {split} split has no {m}")
        else:
            reasons.append(f"neither the models nor the {split} split have {m}")
    note = (f"The {split} split and the models share only {set_condition(shared)} ({'; '.join(reasons)}): the "
            "availability sets are restricted to those modalities")
    if sets is None:
        evaluated = {c for seeds in per_checkpoint.values() for conds in seeds.values() for c in conds}
        default = P3_SETS + (COMPLETE_SET,) if protocol == "p3" else P5_SETS
        left = [c for c in default if c not in evaluated]
        if left:
            note += f"; left out: {', '.join(left)}"
    return note + "."


# ----------------------------------------------------------------------------------------------- reports


def _report_view(results: dict[str, Any]) -> dict[str, Any]:
    """The structure handed to `hf_mmkd.report`.

    `report` summarises P3 by the mean of all six incomplete sets, which does not exist when the data lack a
    modality (MOSI without vision). Such P3 results are reported as fixed availability patterns (the P5 summary:
    the plain mean over the sets shown), with `requested_protocol` and a note saying so.
    """
    if str(results["protocol"]).lower() != "p3":
        return results
    conds = {c for seeds in results["checkpoints"].values() for conds in seeds.values() for c in conds}
    if all(s in conds for s in P3_SETS):
        return results
    view = dict(results, protocol="p5", requested_protocol="p3")
    view["notes"] = list(results.get("notes", [])) + [
        "Protocol P3 was requested, but its summary (the mean of the six sets {l}, {a}, {v}, {l,a}, {l,v}, {a,v}) "
        "needs all three modalities; the sets that exist here are reported with the fixed-pattern (P5) summary, "
        "the plain mean over the sets shown."]
    return view


def report_markdown(results: dict[str, Any]) -> str:
    """The report's Markdown table followed by its warnings (near-constant checkpoints) and notes (metric set,
    reference row, restrictions, rows left out)."""
    view = _report_view(results)
    text = markdown_table(view)
    for title, lines in (("Warnings", view.get("warnings")), ("Notes", view.get("notes"))):
        if lines:
            text += f"\n{title}:\n\n" + "".join(f"- {n}\n" for n in lines)
    return text


def write_evaluation_report(results: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None,
                            ) -> dict[str, Path]:
    """`report.write_report` (JSON + Markdown + PNG) with the notes appended to the Markdown file.

    The stem defaults to `<dataset>_<requested protocol>` (characters other than letters, digits, `.`, `_` and `-`
    replaced by `_`); returns `{"json", "markdown", "plot"}` paths.
    """
    view = _report_view(results)
    stem = stem or _stem(results["dataset"], results["protocol"])
    notes = view.get("notes") or view.get("warnings")
    return write_report(view, out_dir, stem=stem, markdown=report_markdown(results) if notes else None)


# --------------------------------------------------------------------------------------------- training


def publish_training_run(output_dir: str | os.PathLike, dataset: Any, repo_id: str, *, protocol: str = "p2",
                         seeds: Sequence[int] = (DEFAULT_SEEDS[0],), private: bool | None = None,
                         token: str | None = None, max_text_length: int | None = None,
                         hyperparameters: Mapping[str, Any] | None = None) -> Path:
    """`train.py --push_to_hub`: evaluate the run's student (and teacher, for comparison), then publish the student.

    Evaluates `OUTPUT/student` and `OUTPUT/teacher` (when present) on the test split (validation if the data have
    no test split) under `protocol` (p1/p2/p3/p5; anything else falls back to p2), writes the report to
    `OUTPUT/evaluation/`, builds the release folder `OUTPUT/release/` (replaced if present) with the card, the
    plot and the results JSON, and uploads it with `hf_mmkd.hub.upload`. Returns the release folder.
    """
    from hf_mmkd.hub import publish

    root = Path(output_dir)
    student = root / "student"
    if not (student / "config.json").is_file():
        found = sorted(p.name for p in root.glob("student_*") if (p / "config.json").is_file())
        raise ValueError(f"no single student checkpoint at {student} to publish"
                         + (f" (found per-pattern students {found}; publish one with 'hf-mmkd publish')" if found
                            else ""))
    checkpoints = {"student": student}
    if (root / "teacher" / "config.json").is_file():
        checkpoints = {"teacher": root / "teacher", "student": student}
    split = "test"
    try:
        load_eval_split(dataset, split)
    except ValueError as err:
        if f"has no {split!r} split" not in str(err):
            raise
        split = "validation"
    protocol = protocol.lower() if protocol.lower() in EVAL_PROTOCOLS else "p2"
    results = evaluate_checkpoints(checkpoints, dataset, protocol, split=split, seeds=seeds,
                                   max_text_length=max_text_length)
    paths = write_evaluation_report(results, root / "evaluation")
    view = read_json(paths["json"])["results"]
    release, _ = publish(student, repo_id, results=view, checkpoint_name="student", plot=paths["plot"],
                         extra_files=[paths["json"]], release_dir=root / "release", overwrite=True,
                         private=private, token=token, hyperparameters=hyperparameters)
    return release
