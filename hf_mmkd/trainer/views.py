"""The student's view(s) of a batch: the training protocol's draw (seeded by step and micro-batch), the
evaluation protocol's view, and MM-CKD's one view per availability pattern."""

from __future__ import annotations

from itertools import combinations

import torch

from hf_mmkd.data.missing import MissingModalitySimulator
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.trainer.arguments import MMKDTrainingArguments


def availability_patterns(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty proper subset of the model's modalities (P3's six sets for three modalities)."""
    return [c for k in range(1, len(modalities)) for c in combinations(modalities, k)]


def restrict_to_pattern(batch: dict, pattern: tuple[str, ...]) -> dict:
    """The batch as seen with only `pattern` available. Rows left with nothing keep their own modalities
    (e.g. ICT-MMMO training rows, which have no text, under the text-only pattern)."""
    keep = torch.tensor([m in pattern for m in MODALITIES], device=batch["modality_mask"].device)
    restricted = batch["modality_mask"] & keep
    empty = ~restricted.any(1, keepdim=True)
    return {**batch, "modality_mask": torch.where(empty, batch["modality_mask"], restricted)}


class StudentViews:
    """MMKDTrainer's views (a mixin: the methods read and write the trainer's own state)."""

    def _train_simulator(self, seed: int | None, args: MMKDTrainingArguments | None = None):
        args = args or self.args
        return MissingModalitySimulator(args.missing_protocol, args.missing_rate, training=True, seed=seed,
                                        unk_token_id=self._unk_token_id, train_rates=args.train_missing_rates)

    def _student_batches(self, inputs: dict, train: bool) -> list[dict]:
        wrapper = self.accelerator.unwrap_model(self.model)
        per_pattern = [tuple(s.config.student_modalities) for s in wrapper.students] if len(wrapper.students) > 1 else None
        if not train:  # the evaluation protocol's view (one view; each per-pattern student sees its part of it)
            view = self.eval_simulator(inputs)
            return [restrict_to_pattern(view, p) for p in per_pattern] if per_pattern else [view]
        if self.args.missing_protocol == "none":
            view = inputs
        else:
            # New masks at every call (so every epoch), from a seed fixed by (seed, step, micro-batch): a resumed
            # run draws exactly what the uninterrupted one drew. P1 keeps MMSA's fixed per-modality seeds.
            step = self.state.global_step
            self._draw = (step, self._draw[1] + 1 if self._draw[0] == step else 0)
            seed = None if self.args.missing_protocol == "p1" else (self.args.seed * 1_000_003 + step) * 64 + self._draw[1]
            view = self._train_simulator(seed)(inputs)
        if self.mmkd_method != "mmckd":
            return [view]
        # MVSC in training: one student view per availability pattern (MM-CKD's students), each with the training
        # protocol's drops; plus the protocol's own view when it has one, so that the pattern the evaluation
        # mostly sees (all modalities, some steps dropped, e.g. P2) is trained too.
        if per_pattern:
            return [restrict_to_pattern(view, p) for p in per_pattern]
        views = [restrict_to_pattern(view, p) for p in availability_patterns(wrapper.student.config.modalities)]
        return views if view is inputs else [*views, view]
