"""Inference with a saved hf_mmkd checkpoint: one example from raw media / features, or a whole prepared split.

Public API (`hf-mmkd predict` in hf_mmkd/cli.py calls the first two):

    predict(checkpoint, text=None, audio=None, video=None, features=None, *, start=None, end=None,
            use_video_audio=False, fps=None, max_frames=None, device=None) -> dict
        One example. `checkpoint`: a save_pretrained folder or Hub id (or what `load_checkpoint` returned).
        `text`: a transcript; `audio`: an audio file (decoded to 16 kHz mono) or a 16 kHz mono waveform;
        `video`: a video file, read for its frames only (at the processor's rate), as the shipped pipeline reads
        it, so that one input gets one answer; to use its audio track too, give the same file as `audio` (or
        `use_video_audio=True`); `features`: `{"text"|"audio"|"vision": (steps, D) array}` or an .npz file
        with those keys, for the modalities the model takes as pre-extracted features. `start`/`end` cut the
        media files to a segment (seconds). Modalities not given are marked missing.
        Returns {"score": float, "label": str, "modalities_used": [...], "modalities_missing": [...],
        "task": "regression"|"classification"} (+ "probabilities": {label: p} for classification).
        Labels come from `MMKDConfig.prediction_label`, i.e. from the training data's spec
        (`config.dataset_spec`): regression "negative" / "neutral" / "positive" around its neutral band;
        classification the arg-max class name ("score" is then its probability).

    predict_dataset(checkpoint, dataset_folder, split="test", out_path="predictions.json", batch_size=32,
                    *, overwrite=False, device=None) -> pathlib.Path
        Every row of one split of a prepared dataset (`hf_mmkd.data.load_prepared` folder or Hub id), batched
        with `MMKDDataCollator` and the checkpoint's own sub-processors. Writes `out_path` (.json: a list of
        objects; .jsonl: one object per line; .csv: one line per row) atomically, with id, score, label,
        modalities_used and reference (the data set's label, from the column its spec names, if any). A row
        without any modality the model has gets empty score and label. Returns `out_path`.
        `out_path` follows `hf_mmkd.io.OutputFile`, checked before the model is loaded: it is not a folder, the
        checkpoint or the dataset (nor inside them); an existing file is replaced only with `overwrite=True`
        (`hf-mmkd predict --overwrite`) and only if hf_mmkd wrote it, i.e. it is listed in the
        `.hf_mmkd_outputs.json` manifest of its folder, where every prediction file written is recorded. A file
        that hf_mmkd did not write is never replaced.

    build_processor(config, tokenizer=None, feature_extractor=None, image_processor=None, **kwargs) -> MMKDProcessor
        The processor to save with a checkpoint (`build_processor(model.config, tokenizer=tok).save_pretrained(dir)`).

    load_checkpoint(checkpoint, device=None) -> LoadedCheckpoint(model, processor)
        Load once, then pass the result as `checkpoint` to `predict` to avoid reloading in a loop.

A modality that the model takes only as pre-extracted features (GloVe text, openSMILE/COVAREP audio, Facet
vision) cannot be computed from a raw file: giving such a file raises an error that says so and points to
`features=`. Nothing given for the model is silently dropped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from hf_mmkd.data.prepared import check_steps, is_builtin_demo
from hf_mmkd.io import OutputFile, read_json
from hf_mmkd.modeling.configuration_mmkd import MODALITIES, MMKDConfig
from hf_mmkd.modeling.modeling_mmkd import MMKDForSentiment
from hf_mmkd.modeling.processing_mmkd import PROCESSOR_NAME, MMKDProcessor

logger = logging.getLogger(__name__)

_FEATURE_EXAMPLES = {"text": "e.g. GloVe / BERT vectors", "audio": "e.g. openSMILE / COVAREP", "vision": "e.g. Facet / OpenFace"}
_RAW_ARGUMENT = {"text": "text", "audio": "audio", "vision": "video"}


class LoadedCheckpoint(NamedTuple):
    """A checkpoint's model (eval mode) and processor, as `load_checkpoint` returns them."""

    model: MMKDForSentiment
    processor: MMKDProcessor


def build_processor(config: MMKDConfig, tokenizer=None, feature_extractor=None, image_processor=None,
                    **kwargs) -> MMKDProcessor:
    """The `MMKDProcessor` of a model: its encoder kinds and feature widths, plus the
    sub-processors that training used (None where training fed the raw modality, as `MMKDDataCollator` does).

    kwargs: `max_text_length`, `max_audio_seconds`, `video_fps`, `max_frames` (use the training values).
    Save it next to the model: `build_processor(model.config, tokenizer=tok).save_pretrained(checkpoint_dir)`.
    """
    return MMKDProcessor.from_config(config, tokenizer=tokenizer, feature_extractor=feature_extractor,
                                     image_processor=image_processor, **kwargs)


def _has_file(checkpoint, filename: str) -> bool:
    if Path(checkpoint).is_dir():
        return (Path(checkpoint) / filename).is_file()
    from transformers.utils import cached_file

    return cached_file(str(checkpoint), filename, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False) is not None


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """`{tensor name: shape}` from the header of a safetensors file; a truncated or corrupt file raises a
    ValueError naming it (the header and the file length must agree)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors.SafetensorError is no OSError/ValueError
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt: {err})") from None


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (one file, or the shards of an index)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        from hf_mmkd.io import read_json

        weight_map = read_json(index).get("weight_map") or {}
        shards = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint {folder} is missing weight shard(s) {missing} listed in {index.name}")
        return shards
    raise FileNotFoundError(f"{folder} has no file named model.safetensors (not a complete checkpoint folder)")


def check_weight_files(folder: str | os.PathLike) -> None:
    """A local checkpoint folder has config.json and readable weight files (their safetensors headers agree with
    the files' lengths): cheap, no model is built. A ValueError / FileNotFoundError names what is wrong."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a checkpoint folder (no config.json)")
    for path in _weight_files(folder):
        safetensors_shapes(path)


@contextlib.contextmanager
def _no_load_report():
    """transformers logs a multi-page table of the keys before it raises on a bad checkpoint: `load_model`
    reports the problem in one line instead."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _is_repo_id(name: str) -> bool:
    """`name` could be a Hub model id (`name` or `owner/name`); a path with more parts or a leading ./, / or ~
    cannot."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "/", "~"))


def load_model(checkpoint, device: str | torch.device | None = None, model_class=None, **kwargs):
    """`model_class.from_pretrained(checkpoint)` (default `MMKDForSentiment`) in eval mode on `device` (default CUDA
    when available). Every loader of a saved model goes through here (predict, evaluate, train.py's teacher, the
    check of a release folder), so that a bad checkpoint is a one-line ValueError naming it: no weights, a
    truncated or corrupt weight file, or a config.json whose sizes or modalities do not match its weights (the
    first differing tensor is named)."""
    if Path(checkpoint).is_dir():
        check_weight_files(checkpoint)
        config = read_json(Path(checkpoint) / "config.json", f"checkpoint {checkpoint}: config.json")
        if not isinstance(config, dict):
            raise ValueError(f"checkpoint {checkpoint}: config.json must hold a JSON object of settings, got a "
                             f"{type(config).__name__}")
    elif Path(checkpoint).exists():
        raise ValueError(f"{checkpoint} is not a checkpoint folder (no config.json)")
    elif not _is_repo_id(str(checkpoint)):  # a mistyped folder: not worth asking the Hub about
        raise FileNotFoundError(f"checkpoint folder {checkpoint} does not exist")
    model_class = model_class or MMKDForSentiment
    try:
        with _no_load_report():
            model, info = model_class.from_pretrained(checkpoint, output_loading_info=True,
                                                      ignore_mismatched_sizes=True, **kwargs)
    except RuntimeError as err:
        raise ValueError(f"cannot load checkpoint {checkpoint}: {str(err).splitlines()[0]}") from None
    except (ValueError, TypeError) as err:  # MMKDConfig refuses a bad setting ("hidden_size": "8")
        raise ValueError(f"cannot load checkpoint {checkpoint}: {str(err).splitlines()[0]}") from None
    problems = [f"{k} is {tuple(have)} in the weights but {tuple(want)} for the config"
                for k, have, want in sorted(info["mismatched_keys"])]
    problems += [f"{k} is in the weights but not in the model of the config" for k in sorted(info["unexpected_keys"])]
    problems += [f"{k} is missing from the weights" for k in sorted(info["missing_keys"])]
    problems += list(info.get("error_msgs") or [])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ValueError(f"checkpoint {checkpoint}: config.json does not match its weights: {problems[0]}{more}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def load_checkpoint(checkpoint, device: str | torch.device | None = None) -> LoadedCheckpoint:
    """Load a checkpoint's model and processor (library classes; no remote code is executed).

    A checkpoint saved before processors were saved (no processor_config.json) gets one built from its config,
    with its tokenizer if it has tokenizer files; a warning says so.
    """
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    if Path(checkpoint).exists() and not (Path(checkpoint) / "config.json").is_file():
        raise ValueError(f"{checkpoint} is not a checkpoint folder (no config.json)")
    model = load_model(checkpoint, device)
    config = model.config
    if _has_file(checkpoint, PROCESSOR_NAME):
        processor = MMKDProcessor.from_pretrained(checkpoint)
    else:
        tokenizer = None
        if config.encoder_kind("text") == "backbone" and _has_file(checkpoint, "tokenizer_config.json"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        logger.warning("%s has no %s; using a processor built from its config (raw waveform and [0, 1] frames for "
                       "audio/vision backbones)", checkpoint, PROCESSOR_NAME)
        processor = build_processor(config, tokenizer=tokenizer)
    kinds = {m: config.encoder_kind(m) for m in MODALITIES}
    if processor.modality_inputs != kinds:
        raise ValueError(f"{checkpoint}: the processor expects {processor.modality_inputs} but the model takes "
                         f"{kinds}; the processor belongs to another model")
    return LoadedCheckpoint(model, processor)


def _label_of(config, logits: torch.Tensor) -> tuple[float, str, dict | None]:
    """(score, label, probabilities or None) of one row's logits; the label is `config.prediction_label`'s."""
    values = logits.float().reshape(-1).tolist()
    score, label = config.prediction_label(values)
    if config.task == "regression":
        return score, label, None
    probs = torch.softmax(torch.tensor(values), dim=0)
    return score, label, dict(zip(config.label_names(len(values)), probs.tolist()))


def _read_features(features) -> dict[str, np.ndarray]:
    if features is None:
        return {}
    if isinstance(features, (str, os.PathLike)):
        path = Path(features)
        if not path.is_file():
            raise FileNotFoundError(f"features file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                features = {k: data[k] for k in data.files}
        except Exception as err:
            raise ValueError(f"cannot read features file {path} (expected an .npz with text/audio/vision arrays): "
                             f"{err}") from err
    if not isinstance(features, dict):
        raise ValueError(f"features must be a dict {{modality: (steps, D) array}} or an .npz file, got "
                         f"{type(features).__name__}")
    out = {}
    for key, value in features.items():
        m = key[: -len("_features")] if key.endswith("_features") else key
        if m not in MODALITIES:
            raise ValueError(f"features has unknown key {key!r}; use {list(MODALITIES)}")
        if value is None:
            continue
        x = np.asarray(value, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"features[{key!r}] must be a (steps, D) array, got shape {x.shape}")
        check_steps(x.shape[0], f"features[{key!r}]")
        out[m] = x
    return out


def _features_only_error(m: str, config, source: str) -> ValueError:
    dim = getattr(config, f"{m}_feature_dim")
    hint = " (or leave the video out / give the audio features too)" if source.startswith("the audio track") else ""
    return ValueError(
        f"this model takes {m} only as pre-extracted features ({m}_feature_dim={dim}, {_FEATURE_EXAMPLES[m]}); "
        f"they cannot be computed from {source}. Pass them as features: an .npz with a '{m}' array of shape "
        f"(steps, {dim}) (command line: --features X.npz; Python: features={{'{m}': array}}){hint}"
    )


def predict(checkpoint, text: str | None = None, audio=None, video=None, features=None, *,
            start: float | None = None, end: float | None = None, use_video_audio: bool = False,
            fps: float | None = None, max_frames: int | None = None,
            device: str | torch.device | None = None) -> dict:
    """Sentiment of one example; see the module docstring for the arguments and the result."""
    loaded = load_checkpoint(checkpoint, device)
    batch = prepare_example(loaded, text, audio, video, features, start=start, end=end,
                            use_video_audio=use_video_audio, fps=fps, max_frames=max_frames)
    return predict_prepared(loaded, batch)


def prepare_example(loaded: LoadedCheckpoint, text: str | None = None, audio=None, video=None, features=None, *,
                    start: float | None = None, end: float | None = None, use_video_audio: bool = False,
                    fps: float | None = None, max_frames: int | None = None) -> dict:
    """The first half of `predict`: check and decode one example's inputs (arguments as `predict`'s) and run the
    checkpoint's processor; returns the model's input batch (one row, on the model's device). The demo app
    (`hf_mmkd.demo_app`) masks this batch before `predict_prepared`, so both share one code path."""
    from hf_mmkd.data.media import load_audio, load_frames, probe

    for name, value in (("start", start), ("end", end)):  # a negative start would count from the end of the file
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} (--{name}) must be a time in seconds >= 0 from the start of the media file, "
                             f"got {value:g}")
    model, processor = loaded
    config = model.config
    kinds = {m: config.encoder_kind(m) for m in MODALITIES}
    model_modalities = [m for m in MODALITIES if kinds[m]]

    def no_encoder(m: str, what: str) -> ValueError:
        return ValueError(f"{what} was given but this model has no {m} encoder (its modalities: "
                          f"{', '.join(model_modalities)})")

    feats = _read_features(features)
    for m in feats:
        if kinds[m] is None:
            raise no_encoder(m, f"features[{m!r}]")
        if kinds[m] == "backbone":
            raise ValueError(f"this model takes {m} through a backbone from raw input: pass {_RAW_ARGUMENT[m]}=, "
                             f"not features[{m!r}]")

    inputs: dict = {}
    if text is not None:
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty; leave it out (text=None) to predict without text")
        if kinds["text"] is None:
            raise no_encoder("text", "text")
        if kinds["text"] == "features":
            raise _features_only_error("text", config, "a raw transcript")
        inputs["text"] = text

    if audio is not None:
        if kinds["audio"] is None:
            raise no_encoder("audio", "audio")
        if "audio" in feats:
            raise ValueError("audio was given both as audio= and features['audio']; give one")
        if isinstance(audio, (str, os.PathLike)):
            if kinds["audio"] == "features":
                raise _features_only_error("audio", config, f"the audio file {audio}")
            inputs["audio"] = load_audio(audio, start, end)
        else:
            if kinds["audio"] == "features":
                raise _features_only_error("audio", config, "a raw waveform")
            inputs["audio"] = np.asarray(audio, dtype=np.float32)  # a 16 kHz mono waveform

    if video is not None:
        path = Path(video)
        has_audio, has_video = probe(path)  # MediaError naming the file if missing or corrupt
        used = False
        if kinds["vision"] == "backbone":
            if not has_video:
                raise ValueError(f"{path} has no video stream")
            frames, _ = load_frames(path, start, end, fps=fps or processor.video_fps,
                                    max_frames=max_frames or processor.max_frames)
            inputs["videos"] = frames
            used = True
        elif kinds["vision"] == "features" and "vision" not in feats:
            raise _features_only_error("vision", config, f"the video file {path}")
        if audio is None and use_video_audio and "audio" not in feats and kinds["audio"] is not None:
            if kinds["audio"] == "features":
                raise _features_only_error("audio", config, f"the audio track of {path}")
            if has_audio:
                inputs["audio"] = load_audio(path, start, end)
                used = True
            else:
                logger.info("%s has no audio stream: audio is missing", path)
        if not used:
            raise ValueError(f"nothing in {path} can be used by this model (its modalities: "
                             f"{', '.join(model_modalities)}; use_video_audio={use_video_audio})")

    for m, x in feats.items():
        inputs[f"{m}_features"] = x
    if not inputs:
        accepted = [f"{_RAW_ARGUMENT[m]}=" if kinds[m] == "backbone" else f"features={{'{m}': ...}}"
                    for m in model_modalities]
        raise ValueError(f"no modality given; this model takes {', '.join(accepted)}")

    batch = processor(**inputs, return_tensors="pt")
    return {k: v.to(model.device) for k, v in batch.items()}


def predict_prepared(loaded: LoadedCheckpoint, batch: dict) -> dict:
    """The second half of `predict`: the model on one prepared row (`prepare_example`, possibly masked); returns
    `predict`'s result dict."""
    model = loaded.model
    config = model.config
    kinds = {m: config.encoder_kind(m) for m in MODALITIES}
    with torch.no_grad():
        out = model(**batch)
    if not torch.isfinite(out.logits).all():  # as evaluate refuses NaN predictions: never a NaN score
        raise ValueError(f"checkpoint {config.name_or_path}: the model's output is NaN or infinite for this input (are its "
                         "weights NaN? retrain or load another checkpoint)")
    present = out.modality_mask[0].tolist()
    score, label, probabilities = _label_of(config, out.logits[0].cpu())
    result = {
        "score": score,
        "label": label,
        "modalities_used": [m for m, p in zip(MODALITIES, present) if p],
        "modalities_missing": [m for m, p in zip(MODALITIES, present) if kinds[m] and not p],
        "task": config.task,
    }
    if probabilities is not None:
        result["probabilities"] = probabilities
    return result


def predict_dataset(checkpoint, dataset_folder, split: str = "test", out_path="predictions.json",
                    batch_size: int = 32, *, overwrite: bool = False,
                    device: str | torch.device | None = None) -> Path:
    """Predict every row of `split`; write `out_path` (.json, .jsonl or .csv) atomically and return its path.

    `out_path` is a path or the command's `hf_mmkd.io.OutputFile` guard (which knows its inputs, its flag and
    `--overwrite`); see the module docstring for the rules."""
    from hf_mmkd.data.collator import MMKDDataCollator
    from hf_mmkd.data.missing import model_inputs
    from hf_mmkd.data.demo import make_demo_dataset
    from hf_mmkd.data.prepared import load_prepared

    inputs = [p for p in (checkpoint, dataset_folder) if isinstance(p, (str, os.PathLike))]  # not a LoadedCheckpoint
    output = out_path if isinstance(out_path, OutputFile) else OutputFile(
        out_path, "predict_dataset", inputs=inputs, overwrite=overwrite, flag="out_path")
    out_path = output.check()  # before the model is loaded and the split predicted
    fmt = out_path.suffix.lower()
    if fmt not in (".json", ".jsonl", ".csv"):
        raise ValueError(f"{output.flag} must end in .json, .jsonl or .csv, got {out_path.name!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, processor = load_checkpoint(checkpoint, device)
    config = model.config
    # "demo": the synthetic set train.py trains on by default (built in memory, offline), as `evaluate` does
    splits = make_demo_dataset(seed=0) if is_builtin_demo(dataset_folder) else load_prepared(dataset_folder)
    if split not in splits:
        raise ValueError(f"{dataset_folder} has no split {split!r} (splits: {list(splits)})")
    data = splits[split]
    # The collator applies the checkpoint's own sub-processors (the model standardises features). Its labels
    # are not needed (the references are read from the rows), hence a label column that no row has.
    collator = MMKDDataCollator(config, tokenizer=processor.tokenizer, feature_extractor=processor.feature_extractor,
                                image_processor=processor.image_processor, max_text_length=processor.max_text_length,
                                max_audio_seconds=processor.max_audio_seconds, label_column="\0no-label",
                                allow_rows_without_modality=True)
    # The reference is the training data's label column (its spec's), else the prepared schema's column of the task.
    label_column = (config.dataset_spec or {}).get("label_column") or (
        "classification_label" if config.task == "classification" else "label")
    reference_column = label_column if label_column in data.column_names else None
    records, empty = [], 0
    for begin in range(0, len(data), batch_size):
        # Row by row: slicing (data[a:b]) fails in datasets 5.2 on a null Array2D cell (it reads back as nan).
        rows = [data[i] for i in range(begin, min(begin + batch_size, len(data)))]
        batch = model_inputs(collator(rows))
        batch.pop("labels", None)
        present_rows = batch["modality_mask"].any(1).nonzero().squeeze(1)
        results: dict[int, tuple] = {}
        if present_rows.numel():
            sub = {k: v[present_rows].to(model.device) for k, v in batch.items()}
            with torch.no_grad():
                out = model(**sub)
            for j, n in enumerate(present_rows.tolist()):
                score, label, _ = _label_of(config, out.logits[j].cpu())
                used = [m for m, p in zip(MODALITIES, out.modality_mask[j].tolist()) if p]
                results[n] = (score, label, used)
        for n, row in enumerate(rows):
            score, label, used = results.get(n, (None, None, []))
            empty += n not in results
            reference = row.get(reference_column) if reference_column else None
            records.append({"id": row.get("id", begin + n), "score": score, "label": label,
                            "modalities_used": used, "reference": reference})
    if empty:
        logger.warning("%d row(s) of %s have none of the model's modalities: no prediction", empty, split)
    if fmt == ".json":
        text = json.dumps(records, indent=1) + "\n"
    elif fmt == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["id", "score", "label", "modalities_used", "reference"],
                                lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "modalities_used": "+".join(r["modalities_used"]),
                             "score": "" if r["score"] is None else r["score"],
                             "label": r["label"] or "", "reference": "" if r["reference"] is None else r["reference"]})
        text = buf.getvalue()
    output.write(text)
    logger.info("wrote %d predictions of %s to %s", len(records), split, out_path)
    return out_path


__all__ = ["LoadedCheckpoint", "build_processor", "check_weight_files", "load_checkpoint", "load_model", "predict",
           "predict_dataset", "predict_prepared", "prepare_example", "safetensors_shapes"]
