"""Shaping the distillation terms: warm-up (`distillation_start_step`), per-term balancing scales
(`balance_terms`) and per-row recoverability weights (`recoverability_floor`) from the modality importance."""

from __future__ import annotations

import logging

import torch

from hf_mmkd.data.missing import kept_fraction, model_inputs, teacher_view
from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.trainer.diagnostics import _grad_norm
from hf_mmkd.trainer.wrapper import select_rows

logger = logging.getLogger("hf_mmkd.trainer")


class TermShaping:
    """MMKDTrainer's shaping (a mixin: the methods read and write the trainer's own state)."""

    def distillation_scale(self) -> float:
        """Weight of the method's terms at the current training step (see `distillation_start_step`)."""
        step = self.state.global_step - self.args.distillation_start_step
        if self.args.distillation_warmup_steps == 0:
            return float(step >= 0)
        return min(1.0, max(0.0, step / self.args.distillation_warmup_steps))

    def _balance_due(self) -> bool:
        """On the first micro-batch of every `balance_steps`-th optimiser step once the terms are active."""
        if not self.args.balance_terms or not self.accelerator.unwrap_model(self.model).method.term_names:
            return False
        step = self.state.global_step
        if step % self.args.balance_steps or self._balanced_step == step:
            return False
        self._balanced_step = step
        return True

    def _update_term_scales(self, wrapper, terms: dict) -> None:
        """Move each term's scale towards keeping its gradient ratio to the task loss at most `balance_ratio`."""
        high = self.args.balance_ratio
        params = [p for p in wrapper.student.parameters() if p.requires_grad]
        task = _grad_norm(terms["loss_task"], params)
        ratios = torch.tensor([_grad_norm(terms[k], params) / task if task > 0 and k in terms else float("nan")
                               for k in wrapper.method.term_names])
        ratios = self.accelerator.reduce(ratios.to(self.args.device), reduction="mean").cpu()  # same on every rank
        current = wrapper.log_term_scales.exp().cpu()
        wanted = (high / ratios).clamp(max=1.0)  # only ever scale down (see `balance_terms`)
        wanted = torch.where(torch.isfinite(wanted), wanted, current).clamp(1e-3, 1.0).log()
        with torch.no_grad():
            if bool(wrapper.term_scales_set):
                wanted = 0.5 * (wrapper.log_term_scales.cpu() + wanted)
            wrapper.log_term_scales.copy_(wanted.to(wrapper.log_term_scales))
            wrapper.term_scales_set.fill_(True)
        for name, value in wrapper.term_scales().items():
            self._metrics["train"][f"scale_{name}"].append(float(value))

    def _row_weights(self, inputs: dict, student_batches: list[dict]) -> list[torch.Tensor] | None:
        """Per student view, (B,) recoverability weights (see `recoverability_floor`), or None when off."""
        floor = self.args.recoverability_floor
        if floor is None:
            return None
        importance = self.modality_importance()
        weights = []
        for view in student_batches:
            kept = kept_fraction(inputs, view)  # (B, 3)
            had = inputs["modality_mask"].cpu().float() * importance  # (B, 3)
            r = (kept * had).sum(1) / had.sum(1).clamp_min(1e-12)  # (B,)
            weights.append(((r - floor) / (1.0 - floor)).clamp(0.0, 1.0).to(inputs["modality_mask"].device))
        return weights

    def modality_importance(self) -> torch.Tensor:
        """(3,) a_m: how much the teacher's validation task loss grows when modality m alone is removed
        (normalised to sum 1 over the model's modalities; uniform without a teacher or validation data).
        Measured once, on at most 256 validation rows, with complete inputs otherwise."""
        if self._importance is not None:
            return self._importance
        wrapper = self.accelerator.unwrap_model(self.model)
        teacher = self._frozen_teacher or wrapper.teacher or self._importance_model
        if teacher is not None and teacher is self._importance_model:
            teacher = teacher.to(self.args.device)
        modalities = wrapper.student.config.modalities
        have = torch.tensor([float(m in modalities) for m in MODALITIES])
        importance = have / have.sum()
        if teacher is not None and self.eval_dataset is not None and len(modalities) > 1:
            rows = [self.eval_dataset[i] for i in range(min(256, len(self.eval_dataset)))]
            batch = teacher_view(self._prepare_inputs(self.data_collator(rows)))
            was_training = teacher.training
            teacher.eval()
            with torch.no_grad():
                base = teacher(**model_inputs(batch)).loss.item()
                growth = torch.zeros(len(MODALITIES))
                for i, m in enumerate(MODALITIES):
                    if m not in modalities:
                        continue
                    mask = batch["modality_mask"].clone()
                    mask[:, i] = False
                    keep = mask.any(1)  # rows left with another modality
                    if not bool(keep.any()):
                        continue
                    view = select_rows({**batch, "modality_mask": mask}, keep)
                    growth[i] = max(teacher(**model_inputs(view)).loss.item() - base, 0.0)
            teacher.train(was_training)
            if growth.sum() > 0:
                importance = growth / growth.sum()
        self._importance = importance
        logger.info("modality importance (teacher validation loss growth when removed): %s",
                    dict(zip(MODALITIES, importance.tolist())))
        return importance
