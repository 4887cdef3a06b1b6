"""Baselines: no distillation, and classic logit distillation (Hinton, Vinyals, Dean 2015)."""

from __future__ import annotations

import torch.nn.functional as F

from hf_mmkd.distillation.base import DistillationLoss, config_task, weighted_mean
from hf_mmkd.distillation.functional import label_mapping


class NoDistillation(DistillationLoss):
    """`none`: no distillation terms (returns {}); the trainer trains the student on its task loss only."""

    method = "none"
    teacher_mode = "none"

    def __init__(self, config=None):
        super().__init__()

    def forward(self, teacher_out, student_outs, labels, *, teacher_batch=None, student_batches=None,
                aux_features=None, aux_mask=None, row_weights=None):
        return {}


class LogitKD(DistillationLoss):
    r"""`logit`: response distillation from the teacher's prediction.

    - classification: loss_logit = weight * T^2 * KL( softmax(z^t / T) || softmax(z^s / T) )  (batch mean;
      Hinton et al. 2015, "Distilling the Knowledge in a Neural Network");
    - regression:     loss_logit = weight * MSE(y_hat^s, y_hat^t)  (the teacher's prediction as a soft target).

    The teacher is detached by default (`detach_teacher=True`): classic KD has a fixed teacher.
    Trainer: teacher_mode "frozen"; with several students the term is averaged over them.

    With the trainer's recoverability weights w_i (`recoverability_floor`), `recoverability="weight"` (default)
    weights row i's term by w_i; `"shrink"` (not from the paper) keeps every row's weight and instead moves its
    target towards the data set's neutral point c by w_i: y'^t = c + w_i (y^t - c) for regression (c: the centre of
    the spec's neutral band, 0 on [-3, 3]), p' = w_i p^t + (1 - w_i) / C for classes. A row whose view keeps
    too little to recover the teacher's answer is then taught "neutral", the uninformed answer, rather than the
    training split's label prior (docs/methods.md#shared-machinery).
    """

    method = "logit"
    teacher_mode = "frozen"

    def __init__(self, config, *, weight: float = 1.0, temperature: float = 4.0, detach_teacher: bool = True,
                 recoverability: str = "weight"):
        super().__init__()
        if recoverability not in ("weight", "shrink"):
            raise ValueError(f"recoverability must be 'weight' or 'shrink', got {recoverability!r}")
        self.weight, self.temperature, self.detach_teacher = weight, temperature, detach_teacher
        self.recoverability = recoverability
        self.task = config_task(config)
        # the neutral point of the label scale: label_mapping maps (y + shift) * scale onto [-3, 3], neutral 0
        self.neutral = -label_mapping(config, self.task)[0] if self.task == "regression" else None

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        z_t, z_s = teacher_out.logits, student_out.logits  # (B, C) or (B, 1)
        if self.detach_teacher:
            z_t = z_t.detach()
        shrink = None
        if row_weights is not None and self.recoverability == "shrink":
            shrink, row_weights = row_weights.to(z_t)[:, None], None  # (B, 1): targets move, rows keep weight 1
        if self.task == "regression":
            if shrink is not None:
                z_t = self.neutral + shrink * (z_t - self.neutral)
            per_row = (z_s - z_t).pow(2).view(-1)  # (B,)
            return {"loss_logit": self.weight * weighted_mean(per_row, row_weights)}
        t = self.temperature
        log_target = F.log_softmax(z_t / t, dim=-1)  # (B, C)
        if shrink is not None:
            log_target = (shrink * log_target.exp() + (1.0 - shrink) / z_t.shape[-1]).log()
        kl = F.kl_div(F.log_softmax(z_s / t, dim=-1), log_target, reduction="none", log_target=True).sum(-1)  # (B,)
        return {"loss_logit": self.weight * t * t * weighted_mean(kl, row_weights)}

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_logit",)
