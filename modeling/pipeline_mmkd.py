"""The `pipeline()` of hf_mmkd checkpoints (shipped to the Hub as remote code, next to the model and processor).

Every checkpoint's config.json names this file under `custom_pipelines` (task "multimodal-sentiment"), so

    from transformers import pipeline
    pipe = pipeline(model="path/or/hub-id", trust_remote_code=True)
    pipe({"text": "it was really good", "audio": "clip.wav"})      # -> {"score": 1.7, "label": "positive", ...}
    pipe([{"text": "great"}, {"audio_features": feats}], batch_size=8)   # a list -> a list, run in batches

works with plain transformers. One input is a dict with any subset of the checkpoint's modalities (the others
are marked missing, as in training):

| key | value |
|---|---|
| `text` | a transcript (models with a text backbone); a plain string input means `{"text": string}` |
| `audio` | a file path (decoded to 16 kHz mono with `transformers.audio_utils.load_audio`) or a 16 kHz mono waveform |
| `video` | a video file path (frames at the processor's `video_fps`, at most `max_frames`, decoded with PyAV through `transformers.video_utils.load_video`) or a `(frames, H, W, C)` array |
| `text_features` / `audio_features` / `vision_features` | a raw `(steps, D)` feature sequence, for modalities the model reads as pre-extracted features |

The result per input is `{"score", "label", "modalities"}`: for regression the sentiment score and "negative" /
"neutral" / "positive", for classification the probability of the predicted class and its name; both from
`MMKDConfig.prediction_label` (the data-set spec's neutral band or class names). `modalities` lists what the
model used. Imports only the standard library, torch, transformers and the sibling files.
"""

from __future__ import annotations

import torch
from transformers import Pipeline

from .configuration_mmkd import MODALITIES
from .configuration_mmkd import PIPELINE_TASK as TASK
_RAW_KEYS = ("text", "audio", "video")
_FEATURE_KEYS = tuple(f"{m}_features" for m in MODALITIES)


class MMKDSentimentPipeline(Pipeline):
    """Sentiment of one or several examples from whichever modalities they have (see the module docstring)."""

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("this checkpoint has no processor_config.json: save it with its MMKDProcessor "
                             "(train.py and hf-mmkd publish do)")

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}  # no per-call parameters (__call__ refuses unknown ones)

    def __call__(self, inputs=None, batch_size: int = 8, **kwargs):
        """`inputs`: one example (a dict or a string) or a list of them; a list gives a list of results, computed
        `batch_size` examples per forward pass. Keyword arguments (`text=..., audio=...`) are one example."""
        if inputs is None:
            inputs, kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _RAW_KEYS + _FEATURE_KEYS}, kwargs
        if kwargs:
            raise TypeError(f"{TASK} pipeline got unexpected arguments {sorted(kwargs)}")
        single = not isinstance(inputs, (list, tuple))
        rows = [inputs] if single else list(inputs)
        if not rows:
            return []
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        results = []
        for begin in range(0, len(rows), batch_size):
            model_inputs = self.preprocess(rows[begin: begin + batch_size])
            results += self.postprocess(self.forward(model_inputs))
        return results[0] if single else results

    # ---- the three steps ----------------------------------------------------------------------------------
    def preprocess(self, rows):
        """A list of example dicts -> one padded batch (the checkpoint's own `MMKDProcessor`)."""
        rows = [{"text": r} if isinstance(r, str) else r for r in (rows if isinstance(rows, list) else [rows])]
        columns = {k: [None] * len(rows) for k in _RAW_KEYS + _FEATURE_KEYS}
        for n, row in enumerate(rows):
            if not isinstance(row, dict):
                raise ValueError(f"input {n}: expected a dict with any of {list(_RAW_KEYS + _FEATURE_KEYS)} or a "
                                 f"string (the text), got {type(row).__name__}")
            unknown = sorted(set(row) - set(columns))
            if unknown:
                raise ValueError(f"input {n}: unknown key(s) {unknown}; use {list(_RAW_KEYS + _FEATURE_KEYS)}")
            if all(row.get(k) is None for k in columns):
                raise ValueError(f"input {n} has no modality; give at least one of {self._accepted()}")
            for key, value in row.items():
                if value is None:
                    continue
                if key == "audio" and isinstance(value, str):
                    value = self._load_audio(value)
                elif key == "video":
                    value = self._load_video(value) if isinstance(value, str) else value
                columns[key][n] = value
        given = {k: v for k, v in columns.items() if any(x is not None for x in v)}
        given["videos"] = given.pop("video", None)
        batch = self.processor(**{k: v for k, v in given.items() if v is not None}, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _forward(self, model_inputs):
        with torch.no_grad():
            out = self.model(**model_inputs)
        return {"logits": out.logits.float().cpu(), "modality_mask": out.modality_mask.cpu()}

    def postprocess(self, model_outputs):
        results = []
        for logits, present in zip(model_outputs["logits"], model_outputs["modality_mask"]):
            score, label = self.model.config.prediction_label(logits.tolist())
            results.append({"score": score, "label": label,
                            "modalities": [m for m, p in zip(MODALITIES, present.tolist()) if p]})
        return results

    # ---- media -----------------------------------------------------------------------------------------------
    def _accepted(self) -> list[str]:
        kinds = self.processor.modality_inputs
        raw = {"text": "text", "audio": "audio", "vision": "video"}
        return [raw[m] if kind == "backbone" else f"{m}_features" for m, kind in kinds.items() if kind]

    @staticmethod
    def _load_audio(path: str):
        from transformers.audio_utils import load_audio

        return load_audio(path, sampling_rate=16_000)

    def _load_video(self, path: str):
        from transformers.video_utils import load_video

        frames, _ = load_video(path, backend="pyav", fps=self.processor.video_fps)  # (F, H, W, C) uint8
        return frames[: self.processor.max_frames]


__all__ = ["MMKDSentimentPipeline", "TASK"]
