"""Missing-modality simulation on collated batches: protocols P1-P5 of docs/protocols.md.

`MissingModalitySimulator(protocol, ...)(batch)` returns a NEW dict (the input is never mutated), so a trainer
can give the teacher the complete batch and the student its degraded view of the same rows. The new dict has
the modified inputs and `modality_mask`, plus boolean `text_dropped` / `audio_dropped` / `vision_dropped`
marking the steps that were dropped (what MITR-DNet reconstructs), each shaped like that modality's step mask:

| modality input | step mask | `<m>_dropped` | a dropped step becomes |
|---|---|---|---|
| `input_ids` | `attention_mask` (B, L) | (B, L) | the tokenizer's unk id; [CLS] (position 0) and the last valid token ([SEP]) are kept |
| `<m>_features` | `<m>_lengths` | (B, T) | a zero vector here; the model, which standardises raw features itself, puts it at the standardised zero (the training mean) |
| `input_values` | `audio_attention_mask` (B, S) | (B, ceil(S / 320)) | zeros: a "step" is a 320-sample chunk (20 ms at 16 kHz, the wav2vec2 frame stride) |
| `pixel_values` | `frame_mask` (B, F) | (B, F) | a zero frame |

A step-level drop (P1, P2, the frame drop of P3) keeps the modality present (`modality_mask` unchanged, lengths
unchanged), as in MMSA/LNLN: at rate 1 every valid step is dropped but the row still "has" the modality. A
whole-modality drop (P3 sets, P4, P5) sets `modality_mask` False, zeroes the inputs and the step mask/length
(length 0, as for genuinely missing modalities) and marks every originally valid step as dropped.
Whole-modality draws never leave a row without a modality: a pattern is drawn from the protocol's
distribution restricted to the patterns that keep at least one of the row's available modalities
(renormalised). A fixed availability set that leaves some row empty is an error.

Randomness, one rule for all protocols: every row's draws come from its own generator.
- `training=False` (evaluation): the generator is seeded by (seed of the modality, stream, `row_key`), so the
  masks depend only on (protocol, rate or set, seed, row) and not on batch size or order. The collator emits
  `row_key` (a stable hash of the row's `id`) when built with `return_row_keys=True`.
- `training=True`: the per-row seeds come from the simulator's own generator (seeded once), so every call,
  hence every epoch, draws new masks, and a whole run is reproducible.
  Exception, P1: MMSA draws its masks once with fixed per-modality seeds and keeps them for train, valid and
  test, so P1 always uses the row-keyed draws (the `training` flag does not change P1).
Step draws use the same uniforms for every rate (a step is dropped when U <= r), so with one seed the dropped
set at a lower rate is contained in the one at a higher rate, as with MMSA's `generate_m`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

MODALITIES = ("text", "audio", "vision")
WAVEFORM_CHUNK = 320  # samples per audio "step" for raw waveforms: 20 ms at 16 kHz
P1_SEEDS = (111, 1111, 11111)  # per-modality seeds of MITR-DNet / EMT-DLFR (text, audio, vision)

# Availability patterns in the order of P5 (CMAD): {l}, {a}, {v}, {l,a}, {l,v}, {a,v}, {l,a,v}; as (t, a, v) flags.
PATTERNS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1))
P5_WEIGHTS = (2, 3, 3, 1, 1, 3, 1)  # /14, CMAD / MMANet training distribution
# P4 (IMDer): MR -> (share dropping two modalities, share dropping one).
P4_SHARES = {0.1: (0.1, 0.1), 0.2: (0.2, 0.2), 0.3: (0.3, 0.3), 0.4: (0.5, 0.2), 0.5: (0.7, 0.1),
             0.6: (0.9, 0.0), 0.7: (1.0, 0.0)}
PROTOCOLS = ("none", "p1", "p2", "p3", "p4", "p5")
P2_VALID_RATE = 0.5  # LNLN validates at r = 0.5

MODEL_INPUT_KEYS = (
    "input_ids", "attention_mask", "input_values", "audio_attention_mask", "pixel_values", "frame_mask",
    "text_features", "text_lengths", "audio_features", "audio_lengths", "vision_features", "vision_lengths",
    "modality_mask", "labels", "text_dropped", "audio_dropped", "vision_dropped",
)


def model_inputs(batch: dict) -> dict:
    """The keys of a (simulated) batch that `MMKDForSentiment.forward` takes (drops `row_key`). The `<m>_dropped`
    flags are kept: the model standardises raw feature inputs itself and puts dropped steps at the training mean
    (`MMKDModel.standardize_features`); it ignores them for backbone inputs."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUT_KEYS}


def teacher_view(batch: dict) -> dict:
    """The batch as the teacher reads it: its own text ids (`teacher_input_ids` / `teacher_attention_mask`, which
    the collator adds when teacher and student tokenise differently) in place of the student's; the batch itself
    otherwise (the same rows, the complete availability)."""
    if "teacher_input_ids" not in batch:
        return batch
    return {**batch, "input_ids": batch["teacher_input_ids"], "attention_mask": batch["teacher_attention_mask"]}


def row_key(row_id) -> int:
    """A stable non-negative 63-bit key for a row id (the same in every process, unlike `hash`)."""
    digest = hashlib.blake2b(str(row_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def availability_flags(availability) -> tuple[int, int, int]:
    """{"text", "audio"} / ("l", "a") / "la" -> (1, 1, 0)."""
    alias = {"l": "text", "t": "text", "a": "audio", "v": "vision"}
    if isinstance(availability, str):
        names = [availability] if availability in MODALITIES else list(availability)  # "text" or "la"
    else:
        names = list(availability)
    names = [alias.get(n, n) for n in names]
    unknown = sorted(set(names) - set(MODALITIES))
    if unknown or not names:
        raise ValueError(f"availability must be a non-empty set of {MODALITIES} (or l/a/v), got {availability!r}")
    return tuple(int(m in names) for m in MODALITIES)


def _pattern_distribution(protocol: str, rate: float | None) -> np.ndarray:
    """Probabilities over `PATTERNS` for the random whole-modality protocols."""
    if protocol == "p5":
        w = np.asarray(P5_WEIGHTS, dtype=np.float64)
    elif protocol == "p3":
        w = np.ones(len(PATTERNS))  # our reading of CorrKD's "random removal of whole modalities": uniform
    elif protocol == "p4":
        two, one = P4_SHARES[rate]
        sizes = np.array([sum(p) for p in PATTERNS])
        w = np.where(sizes == 1, two / 3, np.where(sizes == 2, one / 3, 1.0 - two - one))
    else:
        raise AssertionError(protocol)
    return w / w.sum()


class MissingModalitySimulator:
    """Apply a missing-modality protocol to a collated batch. See the module docstring for the rules.

    Args:
        protocol: "none", "p1" (token/frame drop at `rate`), "p2" (LNLN: training rates ~ U(0,1) per row and
            modality, half of them reset to 0; evaluation at `rate`, default 0.5), "p3" (CorrKD: evaluation keeps
            the modalities in `availability` and drops frames at `rate`; training draws a pattern uniformly
            from the 7 and frames at `rate`, or at a per-row rate ~ U(0,1) if `rate` is None), "p4" (IMDer,
            `rate` = MR in 0.1..0.7), "p5" (CMAD patterns with weights (2,3,3,1,1,3,1)/14 in training; a fixed
            `availability` in evaluation).
        rate: the protocol's rate (see above).
        availability: evaluation set for P3/P5, e.g. {"text", "audio"} or "la".
        training: random per call (True) or row-keyed deterministic draws (False).
        seed: int, or one int per modality (text, audio, vision). Default: P1's (111, 1111, 11111) for P1,
            1111 otherwise.
        unk_token_id: id that replaces dropped tokens (BERT's [UNK] = 100).
        train_rates: P2 training only: each row draws one of these rates uniformly and every modality drops steps
            at it, so the training views follow the evaluation's mixture over r (not LNLN's draw).
    """

    def __init__(self, protocol: str, rate: float | None = None, availability=None, training: bool = False,
                 seed: int | tuple[int, int, int] | None = None, unk_token_id: int = 100,
                 train_rates: tuple[float, ...] | None = None):
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must lie in [0, 1], got {rate}")
        if protocol == "p1" and rate is None:
            raise ValueError("protocol p1 needs a rate r (token/frame drop probability)")
        if protocol == "p2" and not training and rate is None:
            rate = P2_VALID_RATE
        if protocol == "p4":
            rate = None if rate is None else round(float(rate), 6)
            if rate not in P4_SHARES:
                raise ValueError(f"protocol p4 needs rate = MR in {sorted(P4_SHARES)}, got {rate}")
        if train_rates is not None:
            train_rates = tuple(float(r) for r in train_rates)
            if protocol != "p2" or not training:
                raise ValueError("train_rates is P2's training draw (protocol p2, training=True)")
            if not train_rates or any(not 0.0 <= r <= 1.0 for r in train_rates):
                raise ValueError(f"train_rates must be a non-empty list of rates in [0, 1], got {list(train_rates)}")
        self.train_rates = train_rates
        self.fixed_pattern = None
        if availability is not None:
            if protocol not in ("p3", "p5") or training:
                raise ValueError("availability is the evaluation set of p3/p5 (training=False)")
            self.fixed_pattern = availability_flags(availability)
        elif protocol == "p5" and not training:
            raise ValueError("protocol p5 in evaluation needs a fixed availability set")
        if seed is None:
            seed = P1_SEEDS if protocol == "p1" else 1111
        self.seeds = tuple(int(s) for s in seed) if isinstance(seed, (tuple, list)) else (int(seed),) * 3
        if len(self.seeds) != 3:
            raise ValueError(f"seed must be an int or three ints (text, audio, vision), got {seed!r}")
        self.protocol, self.rate, self.training, self.unk_token_id = protocol, rate, training, unk_token_id
        self._rng = np.random.default_rng(self.seeds)  # training: advances with every call

    def __repr__(self):
        return (f"MissingModalitySimulator(protocol={self.protocol!r}, rate={self.rate}, "
                f"availability={self.fixed_pattern}, training={self.training}, seeds={self.seeds})")

    # ---- per-row generators -------------------------------------------------------------------------------
    def _row_keys(self, batch: dict, batch_size: int) -> np.ndarray:
        deterministic = self.protocol == "none" or (
            self.protocol in ("p3", "p5") and not self.training and not self.rate  # fixed set, no frame drop
        )
        if deterministic:
            return np.zeros(batch_size, dtype=np.int64)  # no draw is made
        if self.training and self.protocol != "p1":
            return self._rng.integers(0, 2**63 - 1, size=batch_size, dtype=np.int64)
        if "row_key" not in batch:
            raise ValueError(
                f"{self.protocol} in evaluation (and p1 always) draws from each row's key: the batch needs "
                "'row_key'; build the collator with return_row_keys=True"
            )
        return batch["row_key"].cpu().numpy().astype(np.int64)

    @staticmethod
    def _gen(seed: int, stream: int, key: int) -> np.random.Generator:
        return np.random.default_rng([seed, stream, int(key)])

    # ---- main -----------------------------------------------------------------------------------------------
    def __call__(self, batch: dict) -> dict:
        out = dict(batch)  # shallow copy; every tensor we change is cloned first
        kinds = _detect_kinds(batch)
        if not kinds:
            raise ValueError("batch holds no modality input (input_ids, *_features, input_values, pixel_values)")
        size = next(iter(batch[_INPUT[k][0]].shape[0] for k in kinds.values()))
        avail = batch.get("modality_mask")
        avail = (torch.ones(size, 3, dtype=torch.bool) if avail is None else avail.bool().cpu()).clone()
        for i, m in enumerate(MODALITIES):  # a modality not in the batch is not available
            if m not in kinds:
                avail[:, i] = False
        keys = self._row_keys(batch, size)

        # 1. whole-modality pattern (P3, P4, P5)
        keep = avail.clone()
        if self.protocol in ("p3", "p4", "p5"):
            keep = self._draw_patterns(avail, keys)

        # 2. step-level rates per row and modality: (B, 3)
        rates = self._step_rates(keys, size)

        for i, m in enumerate(MODALITIES):
            if m not in kinds:
                continue
            kind = kinds[m]
            x_name, mask_name = _INPUT[kind]
            x = batch[x_name].clone()
            step = batch[mask_name].clone()
            valid = _valid_steps(kind, step, x)  # (B, n) bool at step resolution
            dropped = torch.zeros_like(valid)
            for b in range(size):
                n = int(valid[b].sum())  # valid steps are a prefix (right padding)
                if n == 0:
                    continue
                if not keep[b, i] and avail[b, i]:
                    dropped[b, :n] = True
                    continue
                if rates[b, i] <= 0:
                    continue
                # One uniform per valid step; stream 3 + i keeps modalities independent when they share a seed.
                u = self._gen(self.seeds[i], 3 + i, keys[b]).random(n)
                drop = torch.from_numpy(u <= rates[b, i])
                if kind == "tokens" and n >= 1:
                    drop[0] = False  # [CLS]
                    drop[n - 1] = False  # final [SEP]
                dropped[b, :n] = drop
            whole = avail[:, i] & ~keep[:, i]  # (B,) rows losing the modality
            x, step = _apply(kind, x, step, dropped, whole, self.unk_token_id)
            out[x_name], out[mask_name] = x, step
            out[f"{m}_dropped"] = dropped
        out["modality_mask"] = keep.to(batch["modality_mask"].device) if "modality_mask" in batch else keep
        return out

    def _draw_patterns(self, avail: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
        patterns = torch.tensor(PATTERNS, dtype=torch.bool)  # (7, 3)
        keep = torch.zeros_like(avail)
        if self.fixed_pattern is not None:
            fixed = torch.tensor(self.fixed_pattern, dtype=torch.bool)
            keep = avail & fixed
            empty = (~keep.any(1)).nonzero().squeeze(1).tolist()
            if empty:
                raise ValueError(
                    f"availability {self.fixed_pattern} (text, audio, vision) leaves row(s) {empty[:10]} with no "
                    "modality: the data lack the kept modalities there"
                )
            return keep
        if self.protocol == "p3" and self.fixed_pattern is None and not self.training:
            return avail.clone()  # P3 evaluation without a set: the complete set {l, a, v}
        probs = _pattern_distribution(self.protocol, self.rate)
        for b in range(avail.shape[0]):
            usable = (patterns & avail[b]).any(1).numpy()  # patterns keeping >= 1 available modality
            if not usable.any():  # the row has no modality at all: nothing to keep
                continue
            p = probs * usable  # restrict to usable patterns, renormalise below
            k = self._gen(self.seeds[0], 1, keys[b]).choice(len(PATTERNS), p=p / p.sum())
            keep[b] = patterns[k] & avail[b]
        return keep

    def _step_rates(self, keys: np.ndarray, size: int) -> np.ndarray:
        rates = np.zeros((size, 3))
        if self.protocol in ("p1",) or (self.protocol == "p2" and not self.training):
            rates[:] = self.rate
        elif self.protocol == "p2" and self.train_rates is not None:  # one listed rate per row, every modality
            for b in range(size):
                rates[b] = self.train_rates[self._gen(self.seeds[0], 2, keys[b]).integers(len(self.train_rates))]
        elif self.protocol == "p2":  # LNLN: r ~ U(0,1) per row and modality; half reset to 0, per modality
            for b in range(size):
                g = self._gen(self.seeds[0], 2, keys[b])
                r = g.random(3)
                rates[b] = np.where(g.random(3) < 0.5, 0.0, r)
        elif self.protocol == "p3":
            if self.rate is not None:
                rates[:] = self.rate
            elif self.training:
                for b in range(size):
                    rates[b] = self._gen(self.seeds[0], 2, keys[b]).random(3)
        return rates


def kept_fraction(complete: dict, view: dict) -> torch.Tensor:
    """(B, 3) share of each row's valid steps of each modality (text, audio, vision) that a simulated `view` of
    the `complete` batch still has: 1 - dropped / valid, 0 where the view lacks the modality (or its row has no
    step of it), 0 for modalities the batch does not hold. Step drops are read from the view's `<m>_dropped`
    flags; a view without them (protocol "none") keeps every step of the modalities it has."""
    kinds = _detect_kinds(complete)
    size = complete["modality_mask"].shape[0]
    out = torch.zeros(size, len(MODALITIES))
    for i, m in enumerate(MODALITIES):
        if m not in kinds:
            continue
        x_name, mask_name = _INPUT[kinds[m]]
        valid = _valid_steps(kinds[m], complete[mask_name], complete[x_name]).cpu()  # (B, n)
        n_valid = valid.sum(1).float()
        dropped = view.get(f"{m}_dropped")
        n_dropped = (dropped.cpu() & valid).sum(1).float() if dropped is not None else torch.zeros(size)
        has = view["modality_mask"][:, i].cpu() & complete["modality_mask"][:, i].cpu() & (n_valid > 0)
        out[:, i] = torch.where(has, 1.0 - n_dropped / n_valid.clamp_min(1.0), torch.zeros(size))
    return out


# ---- helpers on collated tensors ---------------------------------------------------------------------------
_INPUT = {
    "tokens": ("input_ids", "attention_mask"),
    "text_features": ("text_features", "text_lengths"),
    "audio_features": ("audio_features", "audio_lengths"),
    "vision_features": ("vision_features", "vision_lengths"),
    "waveform": ("input_values", "audio_attention_mask"),
    "frames": ("pixel_values", "frame_mask"),
}


def _detect_kinds(batch: dict) -> dict[str, str]:
    kinds = {}
    if batch.get("input_ids") is not None:
        kinds["text"] = "tokens"
    elif batch.get("text_features") is not None:
        kinds["text"] = "text_features"
    if batch.get("input_values") is not None:
        kinds["audio"] = "waveform"
    elif batch.get("audio_features") is not None:
        kinds["audio"] = "audio_features"
    if batch.get("pixel_values") is not None:
        kinds["vision"] = "frames"
    elif batch.get("vision_features") is not None:
        kinds["vision"] = "vision_features"
    for kind in kinds.values():
        x_name, mask_name = _INPUT[kind]
        if batch.get(mask_name) is None:
            raise ValueError(f"batch has {x_name} but not {mask_name}; the simulator needs the step mask/lengths")
    return kinds


def _valid_steps(kind: str, step: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, n) bool of valid steps at the resolution the `<m>_dropped` flags use."""
    if kind.endswith("_features"):
        return torch.arange(x.shape[1], device=step.device)[None, :] < step[:, None]  # (B, T)
    if kind == "waveform":
        n_chunks = -(-x.shape[1] // WAVEFORM_CHUNK)
        lengths = step.long().sum(1)  # (B,) samples
        chunks = -(-lengths // WAVEFORM_CHUNK)  # ceil
        return torch.arange(n_chunks, device=step.device)[None, :] < chunks[:, None]  # (B, ceil(S/320))
    return step.bool()  # tokens (B, L), frames (B, F)


def _apply(kind, x, step, dropped, whole, unk_id):
    """Apply step drops and whole-modality drops to cloned tensors; return (x, step)."""
    step_drop = dropped & ~whole[:, None]
    if kind == "tokens":
        x[step_drop] = unk_id
        x[whole] = 0
        step[whole] = 0
    elif kind == "waveform":
        # (B, C) chunk flags -> (B, C*320) sample flags, cut to S samples
        per_sample = step_drop.repeat_interleave(WAVEFORM_CHUNK, dim=1)[:, : x.shape[1]]
        x[per_sample] = 0.0
        x[whole] = 0.0
        step[whole] = 0
    elif kind == "frames":
        x[step_drop] = 0.0  # (B, F, C, H, W) indexed by (B, F)
        x[whole] = 0.0
        step[whole] = False
    else:  # features (B, T, D) with lengths (B,)
        x[step_drop] = 0.0
        x[whole] = 0.0
        step[whole] = 0
    return x, step
