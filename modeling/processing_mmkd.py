"""Processor of hf_mmkd models (shipped to the Hub as remote code, next to the model and config files).

`MMKDProcessor` turns raw text, 16 kHz mono waveforms and video frames, or pre-extracted feature sequences, into
the tensors `MMKDForSentiment.forward` takes, exactly as `hf_mmkd.data.MMKDDataCollator` builds them for
training (same keys, padding and masks), so inference sees what training saw. Feature sequences stay raw: the
model standardises them itself from its config (the one place that does).

Imports only the standard library, torch, transformers and the sibling config file, so that
`AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)` works without hf_mmkd installed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import torch
from transformers import BatchFeature, ProcessorMixin

from .configuration_mmkd import MODALITIES

SAMPLING_RATE = 16_000
PROCESSOR_NAME = "processor_config.json"
# The sub-processor slots. A slot is None when the checkpoint has no use for it (feature-only models) or when
# training used the raw modality (no feature extractor: raw waveform; no image processor: frames scaled to [0, 1]).
SUB_PROCESSORS = ("tokenizer", "feature_extractor", "image_processor")
# The `from_pretrained` arguments that say where the files are (passed on to the tokenizer).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def _is_array(x) -> bool:
    return hasattr(x, "ndim") and hasattr(x, "shape")


def _is_image(x) -> bool:
    return hasattr(x, "convert") and hasattr(x, "size") and not _is_array(x)


def _first_given(values):
    return next((v for v in values if v is not None), None)


class MMKDProcessor(ProcessorMixin):
    r"""Builds `MMKDForSentiment` inputs from raw media or pre-extracted features.

    Which input a modality gets follows the model: `modality_inputs[m]` is `"backbone"` (raw input through the
    sub-processor), `"features"` (a raw `(steps, D)` feature sequence; the model standardises it) or
    None (the model has no encoder for `m`). Build one from a model config with `MMKDProcessor.from_config`.

    Args:
        tokenizer: tokenizer of the text backbone (None for models without one).
        feature_extractor: wav2vec2-family feature extractor of the audio backbone; None feeds the raw 16 kHz
            waveform (what `MMKDDataCollator` does without one).
        image_processor: image processor of the vision backbone; None scales `(H, W, C)` 0-255 frames to [0, 1]
            (frames must then already have the backbone's size).
        modality_inputs: `{"text": "backbone" | "features" | None, "audio": ..., "vision": ...}`.
        feature_dims: `{modality: D}` for the `"features"` modalities.
        feature_standardization: accepted and ignored: processors saved before the model standardised its own
            inputs stored the statistics here; the model applies them now, so applying them again would be wrong.
        frame_size: `[C, H, W]` of the vision backbone's frames (shape of the zero frames of rows without video).
        max_text_length: token limit (as in training); max_audio_seconds: waveform crop (None: no crop).
        video_fps / max_frames: the frame sampling a media file gets (used by `hf_mmkd.inference`).

    Example:

    ```python
    >>> processor = MMKDProcessor.from_config(config, tokenizer=tokenizer)
    >>> inputs = processor(text=["what a film", None], audio_features=[openSMILE_a, openSMILE_b])
    >>> model(**inputs).logits
    ```
    """

    def __init__(
        self,
        tokenizer=None,
        feature_extractor=None,
        image_processor=None,
        modality_inputs: dict | None = None,
        feature_dims: dict | None = None,
        feature_standardization: dict | None = None,
        frame_size: list[int] | None = None,
        max_text_length: int = 128,
        max_audio_seconds: float | None = None,
        video_fps: float = 1.0,
        max_frames: int = 16,
    ):
        # ProcessorMixin.__init__ requires every sub-processor; here each may be None, so check them here.
        self.chat_template = None
        for name, value in (("tokenizer", tokenizer), ("feature_extractor", feature_extractor),
                            ("image_processor", image_processor)):
            if value is not None:
                self.check_argument_for_proper_class(name, value)
            setattr(self, name, value)
        modality_inputs = dict(modality_inputs or {})
        unknown = set(modality_inputs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"modality_inputs has unknown modalities {sorted(unknown)}; use {MODALITIES}")
        self.modality_inputs = {m: modality_inputs.get(m) for m in MODALITIES}
        for m, kind in self.modality_inputs.items():
            if kind not in (None, "backbone", "features"):
                raise ValueError(f"modality_inputs[{m!r}] must be 'backbone', 'features' or None, got {kind!r}")
        if not any(self.modality_inputs.values()):
            raise ValueError("MMKDProcessor needs modality_inputs with at least one modality (see from_config)")
        self.feature_dims = {m: int(d) for m, d in (feature_dims or {}).items()}
        for m, kind in self.modality_inputs.items():
            if kind == "features" and m not in self.feature_dims:
                raise ValueError(f"{m} is given as features but feature_dims has no {m!r} width")
        del feature_standardization  # see the docstring: the model standardises its feature inputs itself
        self.frame_size = list(frame_size) if frame_size is not None else None
        self.max_text_length = int(max_text_length)
        self.max_audio_seconds = max_audio_seconds
        self.video_fps = float(video_fps)
        self.max_frames = int(max_frames)
        if feature_extractor is not None and getattr(feature_extractor, "sampling_rate", SAMPLING_RATE) != SAMPLING_RATE:
            raise ValueError(f"the feature extractor works at {feature_extractor.sampling_rate} Hz; hf_mmkd audio is "
                             f"{SAMPLING_RATE} Hz")

    # ---- construction -------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config, tokenizer=None, feature_extractor=None, image_processor=None, **kwargs):
        """The processor of a model with this `MMKDConfig` (encoder kinds, feature widths, text limit).

        A sub-processor for a modality that the model does not take through a backbone is an error: it would be
        saved with the checkpoint and suggest an input the model cannot use. `max_text_length` is capped at the
        text backbone's `max_position_embeddings`.
        """
        kinds = {m: config.encoder_kind(m) for m in MODALITIES}
        for name, value, m in (("tokenizer", tokenizer, "text"), ("feature_extractor", feature_extractor, "audio"),
                               ("image_processor", image_processor, "vision")):
            if value is not None and kinds[m] != "backbone":
                raise ValueError(f"a {name} was given but the model has no {m} backbone ({m}: {kinds[m] or 'absent'})")
        # A text longer than the backbone's position table would crash it: cap the token limit there.
        positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
        max_text_length = kwargs.pop("max_text_length", 128)
        if kinds["text"] == "backbone" and positions is not None:
            max_text_length = min(max_text_length, positions)
        frame_size = None
        vision_config = getattr(config, "vision_config", None)
        if kinds["vision"] == "backbone":
            size = getattr(vision_config, "image_size", 224)
            size = list(size) if isinstance(size, (list, tuple)) else [size, size]
            frame_size = [getattr(vision_config, "num_channels", 3), *size]
        return cls(
            tokenizer=tokenizer, feature_extractor=feature_extractor, image_processor=image_processor,
            modality_inputs=kinds,
            feature_dims={m: getattr(config, f"{m}_feature_dim") for m in MODALITIES if kinds[m] == "features"},
            frame_size=frame_size, max_text_length=max_text_length, **kwargs,
        )

    # ---- (de)serialisation: ProcessorMixin assumes every sub-processor is present ------------------------------
    def to_dict(self) -> dict:
        output = super().to_dict()
        # The saved class names: an image processor's own dict may name another class (ViTImageProcessorPil
        # writes "ViTImageProcessor", which needs torchvision).
        output["sub_processor_classes"] = {
            name: (type(getattr(self, name)).__name__ if getattr(self, name) is not None else None)
            for name in SUB_PROCESSORS
        }
        output.pop("tokenizer", None)  # saved in its own files
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Write `processor_config.json` (+ the tokenizer files and, when registered, `processing_mmkd.py` and
        the files it imports) into `save_directory`; `push_to_hub=True` also uploads them (kwargs: `repo_id`, ...)."""
        os.makedirs(save_directory, exist_ok=True)
        if self._auto_class is not None:
            from transformers.dynamic_module_utils import custom_object_save

            custom_object_save(self, save_directory, config=self)
        if self.tokenizer is not None:
            self.tokenizer._set_processor_class(self.__class__.__name__)
            self.tokenizer.save_pretrained(save_directory)
        output_file = os.path.join(save_directory, PROCESSOR_NAME)
        self.to_json_file(output_file)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            self.push_to_hub(repo_id, **kwargs)
        return [output_file]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a processor saved by `save_pretrained`, with only the sub-processors it was saved with.

        Overridden because transformers' loader tries to load every sub-processor slot: from transformers 5.25 an
        empty slot (`"feature_extractor": null`, the usual case here) is looked up with an Auto class and fails on
        a checkpoint without `preprocessor_config.json`. This path is the same on every transformers version.
        `kwargs`: where to read from (`cache_dir`, `revision`, `subfolder`, `token`, ...) and settings that
        replace saved ones (e.g. `max_text_length=64`).
        """
        location = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        processor_dict, kwargs = cls.get_processor_dict(pretrained_model_name_or_path, **kwargs)
        sub_processors = cls._get_arguments_from_pretrained(pretrained_model_name_or_path, processor_dict, **location)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", *SUB_PROCESSORS}
        settings = {k: v for k, v in {**processor_dict, **kwargs}.items() if k in accepted}
        return cls(*sub_processors, **settings)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load only the sub-processors the saved processor had (the base class requires all of them)."""
        processor_dict = processor_dict or {}
        if "sub_processor_classes" not in processor_dict:
            raise ValueError(f"{pretrained_model_name_or_path}: {PROCESSOR_NAME} has no 'sub_processor_classes'; "
                             "it was not written by MMKDProcessor.save_pretrained")
        classes = processor_dict["sub_processor_classes"]
        subfolder = kwargs.pop("subfolder", "")
        kwargs.pop("trust_remote_code", None)
        args = []
        for name in SUB_PROCESSORS:
            class_name = classes.get(name)
            if class_name is None:
                args.append(None)
                continue
            klass = cls.get_possibly_dynamic_module(class_name)
            if name == "tokenizer":
                args.append(klass.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs))
            else:
                saved = processor_dict.get(name)
                if not isinstance(saved, dict):
                    raise ValueError(f"{pretrained_model_name_or_path}: {PROCESSOR_NAME} names a {class_name} "
                                     f"{name} but holds no settings for it")
                saved = {k: v for k, v in saved.items() if k not in (f"{name}_type", "processor_class")}
                args.append(klass(**saved))
        return args

    @property
    def model_input_names(self) -> list[str]:
        names = []
        for m, kind in self.modality_inputs.items():
            if kind == "features":
                names += [f"{m}_features", f"{m}_lengths"]
            elif kind == "backbone":
                names += {"text": ["input_ids", "attention_mask"], "audio": ["input_values", "audio_attention_mask"],
                          "vision": ["pixel_values", "frame_mask"]}[m]
        return names + ["modality_mask"]

    # ---- processing -----------------------------------------------------------------------------------------
    def __call__(
        self,
        text=None,
        audio=None,
        videos=None,
        text_features=None,
        audio_features=None,
        vision_features=None,
        sampling_rate: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""Turn one example or a batch into model inputs.

        Args:
            text: a string, or a list with a string (or None: text missing) per row. Empty text is an error.
            audio: a 16 kHz mono waveform (1-D array, tensor or list of floats), or a list of them (None: missing).
            videos: one video as a list of frames (PIL images or `(H, W, C)` 0-255 arrays) or a `(F, H, W, C)`
                array, or a list of videos (None: missing).
            text_features / audio_features / vision_features: a `(steps, D)` sequence or a list of them (None:
                missing), for the modalities the model takes as pre-extracted features.
            sampling_rate: of `audio`; must be 16000 (resample first, e.g. with `hf_mmkd.data.media.load_audio`).

        Returns:
            `BatchFeature` with the keys `MMKDForSentiment.forward` takes (see `model_input_names`): every modality
            of the model gets tensors, zero-padded; a row without it has length 0 and `modality_mask` False.
        """
        if kwargs:
            raise TypeError(f"MMKDProcessor got unexpected arguments {sorted(kwargs)}")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"MMKDProcessor returns torch tensors; return_tensors={return_tensors!r} is not supported")
        if sampling_rate is not None and sampling_rate != SAMPLING_RATE:
            raise ValueError(f"audio must be {SAMPLING_RATE} Hz mono, got sampling_rate={sampling_rate}; resample it first")
        given = {
            ("text", "backbone"): self._as_batch(text, "text", lambda x: isinstance(x, str)),
            ("audio", "backbone"): self._as_batch(audio, "audio", self._is_one_waveform),
            ("vision", "backbone"): self._as_batch(videos, "videos", self._is_one_video),
            ("text", "features"): self._as_batch(text_features, "text_features", self._is_one_sequence),
            ("audio", "features"): self._as_batch(audio_features, "audio_features", self._is_one_sequence),
            ("vision", "features"): self._as_batch(vision_features, "vision_features", self._is_one_sequence),
        }
        arg_names = {("text", "backbone"): "text", ("audio", "backbone"): "audio", ("vision", "backbone"): "videos"}
        sizes = {arg_names.get(k, f"{k[0]}_features"): len(v) for k, v in given.items() if v is not None}
        if not sizes:
            raise ValueError(f"no input given: pass at least one of {self._accepted_arguments()}")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the inputs disagree on the batch size: {sizes}")
        batch_size = next(iter(sizes.values()))
        for (m, kind), values in given.items():
            if values is None or self.modality_inputs[m] == kind:
                continue
            name = arg_names.get((m, kind), f"{m}_features")
            model_kind = self.modality_inputs[m]
            if model_kind is None:
                raise ValueError(f"{name} was given but this model has no {m} encoder (it takes "
                                 f"{self._accepted_arguments()})")
            if model_kind == "features":
                raise ValueError(f"this model takes {m} only as pre-extracted features ({m}_feature_dim="
                                 f"{self.feature_dims[m]}): pass {m}_features, not raw {name}")
            raise ValueError(f"this model takes {m} through a backbone: pass raw {arg_names[(m, 'backbone')]}, "
                             f"not {name}")

        data = {}
        modality_mask = torch.zeros(batch_size, len(MODALITIES), dtype=torch.bool)
        for i, m in enumerate(MODALITIES):
            kind = self.modality_inputs[m]
            if kind is None:
                continue
            values = given[(m, kind)] or [None] * batch_size
            if kind == "features":
                tensors, present = self._features(values, m)
            else:
                tensors, present = {"text": self._tokens, "audio": self._waveforms, "vision": self._frames}[m](values)
            data.update(tensors)
            modality_mask[:, i] = torch.tensor(present, dtype=torch.bool)
        data["modality_mask"] = modality_mask
        return BatchFeature(data=data)

    def _accepted_arguments(self) -> list[str]:
        raw = {"text": "text", "audio": "audio", "vision": "videos"}
        return [raw[m] if kind == "backbone" else f"{m}_features" for m, kind in self.modality_inputs.items() if kind]

    # ---- batching helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _as_batch(value, name, is_one):
        """None -> None; one example -> [example]; a batch -> list of examples (None entries: missing)."""
        if value is None:
            return None
        if is_one(value):
            return [value]
        if _is_array(value):  # a stacked batch: (B, ...) tensor/array
            return [value[i] for i in range(value.shape[0])]
        if isinstance(value, (list, tuple)):
            bad = [i for i, v in enumerate(value) if v is not None and not is_one(v)]
            if bad:
                raise ValueError(f"{name}[{bad[0]}] is not a valid {name} example (got {type(value[bad[0]]).__name__})")
            return list(value)
        raise ValueError(f"cannot read {name} of type {type(value).__name__}")

    @staticmethod
    def _is_one_waveform(x) -> bool:
        if _is_array(x):
            return x.ndim == 1
        return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (int, float))

    @staticmethod
    def _is_one_video(x) -> bool:
        if _is_array(x):
            return x.ndim == 4
        return isinstance(x, (list, tuple)) and len(x) > 0 and (_is_image(x[0]) or (_is_array(x[0]) and x[0].ndim == 3))

    @staticmethod
    def _is_one_sequence(x) -> bool:
        if _is_array(x):
            return x.ndim == 2
        return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], (list, tuple)) and \
            (len(x[0]) == 0 or isinstance(x[0][0], (int, float)))

    # ---- per modality (mirrors MMKDDataCollator) ------------------------------------------------------------
    def _features(self, values, m):
        dim = self.feature_dims[m]
        seqs, present = [], []
        for n, value in enumerate(values):
            if value is None:
                seqs.append(torch.zeros(0, dim))
                present.append(False)
                continue
            x = torch.as_tensor(value, dtype=torch.float32)
            if x.ndim != 2 or x.shape[1] != dim:
                raise ValueError(f"row {n}: {m}_features has shape {tuple(x.shape)}, but the model expects "
                                 f"(steps, {dim}) ({m}_feature_dim={dim})")
            if x.shape[0] == 0:
                raise ValueError(f"row {n}: {m}_features has no steps; pass None for a missing {m}")
            if not torch.isfinite(x).all():
                raise ValueError(f"row {n}: {m}_features contains NaN or inf values")
            seqs.append(x)  # raw: the model standardises it
            present.append(True)
        longest = max(1, max(len(s) for s in seqs))
        out = torch.zeros(len(values), longest, dim)  # (B, T, D), right-padded with zeros
        for n, s in enumerate(seqs):
            out[n, : len(s)] = s
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return {f"{m}_features": out, f"{m}_lengths": lengths}, present

    def _tokens(self, values):
        present = [v is not None for v in values]
        for n, v in enumerate(values):
            if v is not None and not v.strip():
                raise ValueError(f"row {n}: text is empty; pass None for a missing text")
        ids = [[] for _ in values]
        if any(present):
            if self.tokenizer is None:
                raise ValueError("this processor has no tokenizer, so it cannot tokenise text; save the checkpoint "
                                 "with its tokenizer (build_processor(config, tokenizer=...))")
            rows = [n for n, p in enumerate(present) if p]
            enc = self.tokenizer([values[n] for n in rows], truncation=True, max_length=self.max_text_length)
            for n, row_ids in zip(rows, enc["input_ids"]):
                ids[n] = list(row_ids)
        pad_id = (self.tokenizer.pad_token_id if self.tokenizer is not None else None) or 0
        longest = max(1, max(len(x) for x in ids))
        input_ids = torch.full((len(values), longest), pad_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(values), longest), dtype=torch.long)
        for n, x in enumerate(ids):
            input_ids[n, : len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[n, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}, present

    def _waveforms(self, values):
        waves, present = [], []
        for n, value in enumerate(values):
            if value is None:
                waves.append(torch.zeros(0))
                present.append(False)
                continue
            w = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
            if w.numel() == 0:
                raise ValueError(f"row {n}: the waveform is empty; pass None for a missing audio")
            if not torch.isfinite(w).all():
                raise ValueError(f"row {n}: the waveform contains NaN or inf values")
            if self.max_audio_seconds is not None:
                w = w[: int(self.max_audio_seconds * SAMPLING_RATE)]
            if self.feature_extractor is not None:
                # One row at a time, as in training: normalisation statistics per utterance, no padding inside.
                out = self.feature_extractor(w.numpy(), sampling_rate=SAMPLING_RATE)["input_values"][0]
                w = torch.as_tensor(out, dtype=torch.float32).reshape(-1)
            waves.append(w)
            present.append(True)
        longest = max(1, max(len(w) for w in waves))
        input_values = torch.zeros((len(values), longest), dtype=torch.float32)  # (B, S)
        mask = torch.zeros((len(values), longest), dtype=torch.long)
        for n, w in enumerate(waves):
            input_values[n, : len(w)] = w
            mask[n, : len(w)] = 1
        return {"input_values": input_values, "audio_attention_mask": mask}, present

    @staticmethod
    def _frame_tensor(frame) -> torch.Tensor:
        """A PIL image or (H, W, C) array -> (H, W, C) float32 in 0-255."""
        if _is_image(frame):
            frame = frame.convert("RGB")
            width, height = frame.size
            return torch.frombuffer(bytearray(frame.tobytes()), dtype=torch.uint8).view(height, width, 3).float()
        x = torch.as_tensor(frame).float()
        if x.ndim != 3:
            raise ValueError(f"a frame must be a PIL image or an (H, W, C) array, got shape {tuple(x.shape)}")
        return x

    def _frames(self, values):
        stacks, present = [], []
        for n, video in enumerate(values):
            if video is None:
                stacks.append(None)
                present.append(False)
                continue
            frames = [video[i] for i in range(video.shape[0])] if _is_array(video) else list(video)
            if not frames:
                raise ValueError(f"row {n}: the video has no frames; pass None for a missing video")
            if self.image_processor is not None:
                stack = self.image_processor(images=frames, return_tensors="pt")["pixel_values"]
            else:
                arrays = [self._frame_tensor(f) / 255.0 for f in frames]
                if len({tuple(a.shape) for a in arrays}) > 1:
                    raise ValueError(f"row {n}: frames differ in size and this processor has no image processor")
                stack = torch.stack(arrays).permute(0, 3, 1, 2)  # (F, H, W, C) -> (F, C, H, W)
                if self.frame_size is not None and list(stack.shape[1:]) != self.frame_size:
                    raise ValueError(
                        f"row {n}: frames are {list(stack.shape[1:])} (C, H, W) but the vision backbone takes "
                        f"{self.frame_size}, and this processor has no image processor to resize them"
                    )
            stacks.append(stack)
            present.append(True)
        shapes = {tuple(s.shape[1:]) for s in stacks if s is not None}
        if len(shapes) > 1:
            raise ValueError(f"frames of different rows have different sizes {sorted(shapes)}")
        chw = shapes.pop() if shapes else tuple(self.frame_size or (3, 224, 224))
        longest = max(1, max((len(s) for s in stacks if s is not None), default=1))
        pixel_values = torch.zeros((len(values), longest, *chw), dtype=torch.float32)  # (B, F, C, H, W)
        frame_mask = torch.zeros((len(values), longest), dtype=torch.bool)
        for n, s in enumerate(stacks):
            if s is not None:
                pixel_values[n, : len(s)] = s
                frame_mask[n, : len(s)] = True
        return {"pixel_values": pixel_values, "frame_mask": frame_mask}, present


__all__ = ["MMKDProcessor"]

# The remote-code route: save_pretrained writes auto_map into processor_config.json and copies this file.
MMKDProcessor.register_for_auto_class("AutoProcessor")
