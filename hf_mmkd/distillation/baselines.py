"""Baselines: no distillation, and classic logit distillation (Hinton, Vinyals, Dean 2015)."""

from __future__ import annotations

import torch.nn.functional as F

from hf_mmkd.distillation.base import DistillationLoss, config_task, weighted_mean


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
    - regression:     loss_logit = weight * MSE(y_hat^s, y_hat^t)  (the teacher's prediction as a soft target);
      `distance="l1"` (not from the paper): weight * |y_hat^s - y_hat^t|, the distance of an L1 task loss (MMSA's
      regression models train with L1). MSE seeks the teacher's conditional mean, L1 its median, as the task loss
      does for the labels; measured on CMU-MOSI validation it changed little (docs/methods.md#baselines).

    The teacher is detached by default (`detach_teacher=True`): classic KD has a fixed teacher.
    Trainer: teacher_mode "frozen"; with several students the term is averaged over them.

    With the trainer's recoverability weights w_i (`recoverability_floor`), row i's term is weighted by w_i; with
    the trainer's `recoverability_fallback` as well, the rows' answers are also pulled towards the neutral point
    by 1 - w_i: for regression, with the fallback weight equal to `weight`, the same as moving row i's target to
    c + w_i (y^t - c), c the neutral point (docs/methods.md#shared-machinery).
    """

    method = "logit"
    teacher_mode = "frozen"

    def __init__(self, config, *, weight: float = 1.0, temperature: float = 4.0, detach_teacher: bool = True,
                 distance: str = "mse"):
        super().__init__()
        if distance not in ("mse", "l1"):
            raise ValueError(f"distance must be 'mse' or 'l1', got {distance!r}")
        self.weight, self.temperature, self.detach_teacher = weight, temperature, detach_teacher
        self.distance = distance
        self.task = config_task(config)

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        z_t, z_s = teacher_out.logits, student_out.logits  # (B, C) or (B, 1)
        if self.detach_teacher:
            z_t = z_t.detach()
        if self.task == "regression":
            error = (z_s - z_t).view(-1)  # (B,)
            per_row = error.abs() if self.distance == "l1" else error.pow(2)
            return {"loss_logit": self.weight * weighted_mean(per_row, row_weights)}
        t = self.temperature
        log_target = F.log_softmax(z_t / t, dim=-1)  # (B, C)
        kl = F.kl_div(F.log_softmax(z_s / t, dim=-1), log_target, reduction="none", log_target=True).sum(-1)  # (B,)
        return {"loss_logit": self.weight * t * t * weighted_mean(kl, row_weights)}

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_logit",)
