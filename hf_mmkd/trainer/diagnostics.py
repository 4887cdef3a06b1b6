"""What explains a distillation run (`diagnostics_steps`): gradient norms and ratios of each term, the
representations' norms, the teacher's accuracy on the student's rows, the method's own figures."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from hf_mmkd.modeling.configuration_mmkd import MODALITIES
from hf_mmkd.trainer.wrapper import MMKDDistillationModel


def _grad_norm(value: torch.Tensor, params: list[nn.Parameter]) -> float:
    """||d value / d params||_2 without touching `.grad` (the graph is kept for the real backward)."""
    if not value.requires_grad:
        return 0.0
    grads = [g for g in torch.autograd.grad(value, params, retain_graph=True, allow_unused=True) if g is not None]
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0


def _mean_norm(x: torch.Tensor | None) -> float | None:
    return None if x is None else float(x.detach().float().norm(dim=-1).mean())


def diagnostics(wrapper: "MMKDDistillationModel", terms: dict, teacher_batch: dict,
                student_batches: list[dict]) -> dict[str, float]:
    """What explains a distillation run, on one micro-batch (see `MMKDTrainingArguments.diagnostics_steps`).

    - `grad_<term>`: gradient norm of each logged term (as weighted in the loss, before any warm-up scale) at the
      parameters of the (first) student, the parameters every term shares; `ratio_<term>` = that norm over the
      student's task-loss norm. A ratio far above 1 means the term, not the task, sets the optimiser's direction.
    - `norm_fused_student` / `norm_fused_teacher` / `norm_<m>_student`: mean L2 norms of the representations.
    - `teacher_mae` / `teacher_sign_agreement` (regression) or `teacher_accuracy` (classes): the teacher's
      predictions on the rows the student trains on, against their labels; `student_teacher_gap`: mean |s - t|.
    - the method's own `diagnostics(...)` (e.g. CorrKD: share of negative pairs inside the SCD margin; RCD's MI
      estimate above its zero-information value).
    """
    out = wrapper.last_outputs or {}
    teacher_out, student_outs = out.get("teacher_out"), out.get("student_outs") or []
    params = [p for p in wrapper.student.parameters() if p.requires_grad]
    values: dict[str, float] = {}
    for name, value in terms.items():
        values[f"grad_{name}"] = _grad_norm(value, params)
    task = values.get("grad_loss_task") or 0.0
    for name in terms:
        if name != "loss_task":
            values[f"ratio_{name}"] = values[f"grad_{name}"] / task if task > 0 else float("nan")
    if student_outs:
        s = student_outs[0]
        values["norm_fused_student"] = _mean_norm(s.fused)
        for m in MODALITIES:
            norm = _mean_norm(getattr(s, f"{m}_pooled", None))
            if norm is not None:
                values[f"norm_{m}_student"] = norm
    labels = teacher_batch.get("labels")
    if teacher_out is not None:
        values["norm_fused_teacher"] = _mean_norm(teacher_out.fused)
        t_logits = teacher_out.logits.detach().float()
        if labels is not None:
            if t_logits.shape[-1] == 1:
                t, y = t_logits.view(-1), labels.float().view(-1)
                values["teacher_mae"] = float((t - y).abs().mean())
                nonzero = y != 0
                if nonzero.any():
                    values["teacher_sign_agreement"] = float(((t[nonzero] > 0) == (y[nonzero] > 0)).float().mean())
            else:
                values["teacher_accuracy"] = float((t_logits.argmax(-1) == labels.view(-1)).float().mean())
        if student_outs:
            values["student_teacher_gap"] = float((student_outs[0].logits.detach().float() - t_logits).abs().mean())
    method_values = wrapper.method.diagnostics(teacher_out, student_outs, labels, teacher_batch=teacher_batch,
                                               student_batches=student_batches, aux_features=out.get("aux_features"),
                                               aux_mask=out.get("aux_mask"))
    values.update(method_values)
    return {k: float(v) for k, v in values.items() if v is not None}


class Diagnostics:
    """MMKDTrainer's diagnostics (a mixin: the methods read and write the trainer's own state)."""

    def _diagnostics_due(self) -> bool:
        """On the first micro-batch of every `diagnostics_steps`-th optimiser step (step 0 included)."""
        every = self.args.diagnostics_steps
        step = self.state.global_step
        if not every or step % every or self._diagnosed_step == step:
            return False
        self._diagnosed_step = step
        return True

    def _record_diagnostics(self, wrapper, terms: dict, inputs: dict, student_batches: list[dict]) -> None:
        """Log `diagnostics(...)` of this micro-batch under `diag_*` and append it to diagnostics.jsonl."""
        values = diagnostics(wrapper, terms, inputs, student_batches)
        for name, value in values.items():
            self._metrics["train"][f"diag_{name}"].append(value)
        if self.is_world_process_zero():
            os.makedirs(self.args.output_dir, exist_ok=True)
            record = {"step": self.state.global_step, "method": self.mmkd_method, **values}
            with open(os.path.join(self.args.output_dir, "diagnostics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
