"""Collator: rows of a prepared dataset -> the padded tensors `MMKDForSentiment.forward` takes.

Which input each modality gets is decided by the model config (`config.encoder_kind(m)`):

| modality | "features" | "backbone" |
|---|---|---|
| text | `text_features` (B, L, Dt) float32, `text_lengths` (B,) | `input_ids`, `attention_mask` (B, L) long: `raw_text` tokenised with the tokenizer, else the stored `text_input_ids` |
| audio | `audio_features` (B, T, Da), `audio_lengths` (B,) | `input_values` (B, S) float32 at 16 kHz, `audio_attention_mask` (B, S) long |
| vision | `vision_features` (B, T, Dv), `vision_lengths` (B,) | `pixel_values` (B, F, C, H, W) float32, `frame_mask` (B, F) bool |

plus `modality_mask` (B, 3) bool (text, audio, vision), `labels` (B,) and, with `return_row_keys=True`,
`row_key` (B,) int64 for the missing-modality simulator (pop it, e.g. with `model_inputs`, before `forward`).
With a `teacher_tokenizer` (a teacher whose text backbone tokenises differently from the student's), text also
gets `teacher_input_ids` and `teacher_attention_mask`: the teacher's own ids of the same rows
(`hf_mmkd.data.missing.teacher_view` puts them in place for the teacher's forward; the student never reads them).
A row without a modality gets zeros with length 0 (mask 0) and `modality_mask` False. A modality that the
model does not have gets no tensors and `modality_mask` False. Feature sequences stay raw: the model
standardises them itself with `config.feature_standardization` (`MMKDModel.standardize_features`), the one place
that does. Each feature modality also gets `<m>_dropped` (B, T), all False: the flags that the missing-modality
simulator sets on the steps it drops (so every view of a batch has the same keys). Sequences are right-padded to
the longest in the batch (at least one step, so no tensor has a zero-sized axis).

Use it with `Trainer(..., data_collator=collator)` and `TrainingArguments(remove_unused_columns=False)`:
the collator needs columns (`raw_text`, `has_*`, `id`) that `forward` does not take.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from hf_mmkd.data.media import SAMPLING_RATE, decode_wav
from hf_mmkd.data.missing import MODALITIES, row_key
from hf_mmkd.data.prepared import check_steps

logger = logging.getLogger(__name__)

DEFAULT_MAX_TEXT_LENGTH = 50  # MMSA's token limit; train.py's --max_text_length and hf-mmkd evaluate's default


def _present(row: dict, m: str, value) -> bool:
    """The row has modality m in this representation: its has_* flag (if any) and a non-empty value."""
    if not row.get(f"has_{m}", True) or value is None:
        return False
    if isinstance(value, float) and np.isnan(value):  # a null Array2D reads back as nan
        return False
    if isinstance(value, str):  # empty or whitespace-only text is missing text
        return bool(value.strip())
    return len(value) > 0 if hasattr(value, "__len__") else True


class MMKDDataCollator:
    """Pads each modality of a list of prepared rows; see the module docstring for the output keys.

    Args:
        config: an `MMKDConfig` (or any object with `encoder_kind(m)`, `<m>_feature_dim`, `task`).
        tokenizer: for text backbones (tokenises `raw_text`); feature_extractor: for audio backbones (e.g.
            `Wav2Vec2FeatureExtractor`; without one the raw 16 kHz waveform is used); image_processor: for vision
            backbones (without one, frames must share one size and are scaled to [0, 1]).
        teacher_tokenizer: the teacher's tokenizer, when it differs from `tokenizer` (see the module docstring).
        max_text_length: token limit (MMSA uses 50); max_audio_seconds: waveform crop (None: no crop).
        label_column: the dataset column holding the label: the data set's spec says which
            (`DatasetSpec.label_column`: `label` for scores, `classification_label` for classes).
        return_row_keys: add `row_key`, a stable hash of `id`, for row-keyed missing-modality draws.
        allow_rows_without_modality: collate rows that have none of the model's modalities (all-False
            `modality_mask`; the caller must leave them out before `forward`, as `predict_dataset` does). By
            default such a row is an error naming its id (the model itself could only name its batch position).
    """

    def __init__(self, config, tokenizer=None, feature_extractor=None, image_processor=None,
                 max_text_length: int = 128, max_audio_seconds: float | None = None, label_column: str = "label",
                 return_row_keys: bool = False, allow_rows_without_modality: bool = False, teacher_tokenizer=None):
        self.config = config
        self.teacher_tokenizer = teacher_tokenizer
        self.tokenizer, self.feature_extractor, self.image_processor = tokenizer, feature_extractor, image_processor
        self.max_text_length, self.max_audio_seconds = max_text_length, max_audio_seconds
        self.label_column, self.return_row_keys = label_column, return_row_keys
        self.allow_rows_without_modality = allow_rows_without_modality
        self.kinds = {m: config.encoder_kind(m) for m in MODALITIES}
        self._warned_truncation = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        batch: dict[str, torch.Tensor] = {}
        modality_mask = torch.zeros(len(rows), 3, dtype=torch.bool)
        for i, m in enumerate(MODALITIES):
            kind = self.kinds[m]
            if kind is None:
                continue
            if kind == "features":
                tensors, present = self._features(rows, m)
            elif m == "text":
                tensors, present = self._tokens(rows, self.tokenizer)
                if self.teacher_tokenizer is not None:
                    teacher, _ = self._tokens(rows, self.teacher_tokenizer)
                    tensors.update({f"teacher_{k}": v for k, v in teacher.items()})
            elif m == "audio":
                tensors, present = self._waveforms(rows)
            else:
                tensors, present = self._frames(rows)
            batch.update(tensors)
            modality_mask[:, i] = torch.as_tensor(present, dtype=torch.bool)
        batch["modality_mask"] = modality_mask
        empty = [r.get("id", n) for n, r in enumerate(rows) if not modality_mask[n].any()]
        if empty and not self.allow_rows_without_modality:
            mods = [m for m in MODALITIES if self.kinds[m] is not None]
            raise ValueError(f"row(s) {empty[:10]} have none of the model's modalities ({', '.join(mods)}); "
                             "leave such rows out (the converters and train.py do)")
        if self.label_column in rows[0]:
            labels = [r.get(self.label_column) for r in rows]
            bad = [r.get("id", n) for n, (r, y) in enumerate(zip(rows, labels)) if y is None]
            if bad:
                raise ValueError(f"rows {bad[:5]} have no {self.label_column!r}")
            dtype = torch.long if getattr(self.config, "task", "regression") == "classification" else torch.float32
            batch["labels"] = torch.as_tensor(np.asarray(labels, dtype=np.float64)).to(dtype)
        if self.return_row_keys:
            missing = [n for n, r in enumerate(rows) if r.get("id") is None]
            if missing:
                raise ValueError(f"return_row_keys needs an 'id' column; rows {missing[:5]} have none")
            batch["row_key"] = torch.tensor([row_key(r["id"]) for r in rows], dtype=torch.long)
        return batch

    # ---- features -------------------------------------------------------------------------------------------
    def _features(self, rows, m):
        dim = getattr(self.config, f"{m}_feature_dim")
        col = f"{m}_features"
        seqs, present = [], []
        for n, row in enumerate(rows):
            value = row.get(col)
            ok = _present(row, m, value)
            if ok:
                x = np.asarray(value, dtype=np.float32)
                if x.ndim != 2 or x.shape[1] != dim:
                    raise ValueError(
                        f"row {row.get('id', n)!r}: {col} has shape {x.shape}, but the model expects (steps, {dim}) "
                        f"({m}_feature_dim={dim})"
                    )
                check_steps(x.shape[0], f"row {row.get('id', n)!r}: {col}")
                if not np.isfinite(x).all():
                    raise ValueError(f"row {row.get('id', n)!r}: {col} contains NaN or inf values")
            else:
                x = np.zeros((0, dim), np.float32)
            seqs.append(x)
            present.append(ok)
        longest = max(1, max(len(s) for s in seqs))
        out = np.zeros((len(rows), longest, dim), np.float32)  # (B, T, D), right-padded with zeros
        for n, s in enumerate(seqs):
            out[n, : len(s)] = s
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        dropped = torch.zeros(len(rows), longest, dtype=torch.bool)  # (B, T): no step dropped (yet)
        return {col: torch.from_numpy(out), f"{m}_lengths": lengths, f"{m}_dropped": dropped}, present

    # ---- text -----------------------------------------------------------------------------------------------
    def _tokens(self, rows, tokenizer):
        present = [False] * len(rows)
        ids: list[list[int]] = [[] for _ in rows]
        if tokenizer is not None and any("raw_text" in r for r in rows):
            texts = {n: r["raw_text"] for n, r in enumerate(rows) if _present(r, "text", r.get("raw_text"))}
            if texts:
                enc = tokenizer(list(texts.values()), truncation=True, max_length=self.max_text_length)
                for (n, _), row_ids in zip(texts.items(), enc["input_ids"]):
                    ids[n], present[n] = list(row_ids), True
                at_limit = [n for n, _ in texts.items() if len(ids[n]) >= self.max_text_length]
                if at_limit and not self._warned_truncation:  # only rows at the limit can have been cut
                    full = tokenizer([texts[n] for n in at_limit], truncation=False)["input_ids"]
                    cut = [(n, len(x)) for n, x in zip(at_limit, full) if len(x) > self.max_text_length]
                    if cut:
                        self._warn_truncation(rows, cut)
            pad_id = tokenizer.pad_token_id or 0
        elif any("text_input_ids" in r for r in rows):
            cut = []
            for n, r in enumerate(rows):
                if _present(r, "text", r.get("text_input_ids")):
                    ids[n], present[n] = list(r["text_input_ids"])[: self.max_text_length], True
                    if len(r["text_input_ids"]) > self.max_text_length:
                        cut.append((n, len(r["text_input_ids"])))
            if cut and not self._warned_truncation:
                self._warn_truncation(rows, cut)
            pad_id = 0
        else:
            raise ValueError(
                "the model has a text backbone: the rows need 'raw_text' and the collator a tokenizer, "
                "or pre-tokenised 'text_input_ids'"
            )
        longest = max(1, max(len(x) for x in ids))
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for n, x in enumerate(ids):
            input_ids[n, : len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[n, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}, present

    def _warn_truncation(self, rows, cut):
        """Over-long text is truncated to `max_text_length` (as MMSA does), with one warning per collator."""
        self._warned_truncation = True
        n, length = cut[0]
        logger.warning(
            "text of row %r has %d tokens; truncated to max_text_length=%d (%d row(s) of this batch; further "
            "truncations are not reported)", rows[n].get("id", n), length, self.max_text_length, len(cut))

    # ---- audio ----------------------------------------------------------------------------------------------
    def _waveforms(self, rows):
        waves, present = [], []
        for n, row in enumerate(rows):
            ok = _present(row, "audio", row.get("audio"))
            w = np.zeros(0, np.float32)
            if ok:
                w = decode_wav(row["audio"])
                if not np.isfinite(w).all():  # a float WAV can hold them; the model could name only the batch
                    raise ValueError(f"row {row.get('id', n)!r}: audio contains NaN or inf samples")
                if self.max_audio_seconds is not None:
                    w = w[: int(self.max_audio_seconds * SAMPLING_RATE)]
                if self.feature_extractor is not None:
                    w = np.asarray(self.feature_extractor(w, sampling_rate=SAMPLING_RATE)["input_values"][0],
                                   dtype=np.float32)
                ok = len(w) > 0
            waves.append(w)
            present.append(ok)
        longest = max(1, max(len(w) for w in waves))
        values = torch.zeros((len(rows), longest), dtype=torch.float32)  # (B, S)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for n, w in enumerate(waves):
            values[n, : len(w)] = torch.from_numpy(w)
            mask[n, : len(w)] = 1
        return {"input_values": values, "audio_attention_mask": mask}, present

    # ---- vision ---------------------------------------------------------------------------------------------
    def _frames(self, rows):
        stacks, present = [], []
        for n, row in enumerate(rows):
            frames = row.get("frames")
            ok = _present(row, "vision", frames)
            if not ok:
                stacks.append(None)
            elif self.image_processor is not None:
                stacks.append(self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"])
            else:
                arrays = [np.asarray(f.convert("RGB") if hasattr(f, "convert") else f, dtype=np.float32) / 255.0
                          for f in frames]
                if len({a.shape for a in arrays}) > 1:
                    raise ValueError(f"row {row.get('id', n)!r}: frames differ in size; pass an image_processor")
                stacks.append(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))  # (F, H, W, C) -> (F, C, H, W)
            present.append(ok)
        shapes = {tuple(s.shape[1:]) for s in stacks if s is not None}
        if len(shapes) > 1:
            raise ValueError(f"frames of different rows have different sizes {sorted(shapes)}; pass an image_processor")
        chw = shapes.pop() if shapes else self._default_chw()
        longest = max(1, max(len(s) for s in stacks if s is not None) if any(present) else 1)
        pixels = torch.zeros((len(rows), longest, *chw), dtype=torch.float32)  # (B, F, C, H, W)
        frame_mask = torch.zeros((len(rows), longest), dtype=torch.bool)
        for n, s in enumerate(stacks):
            if s is not None:
                pixels[n, : len(s)] = s
                frame_mask[n, : len(s)] = True
        return {"pixel_values": pixels, "frame_mask": frame_mask}, present

    def _default_chw(self):
        vc = getattr(self.config, "vision_config", None)
        size = getattr(vc, "image_size", 224)
        return (getattr(vc, "num_channels", 3), size, size)
