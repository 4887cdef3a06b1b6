"""The common base of every distillation loss, and the few layers they share.

Every method is an `nn.Module` called with ONE signature by the trainer:

    terms = loss_module(teacher_out, student_outs, labels,
                        teacher_batch=None, student_batches=None, aux_features=None)
    # terms: dict[str, Tensor], already-weighted scalars named "loss_<term>"; the trainer adds its task
    # loss(es), sums everything and logs each term.

Model outputs are duck-typed (no import of the model): `logits` (B, 1) or (B, C), `fused` (B, fusion_dim),
`<m>_pooled` (B, d), `<m>_sequence` (B, L, d), `<m>_step_mask` (B, L) bool, `modality_mask` (B, 3) bool,
for m in (text, audio, vision); absent modalities are None.

The class attributes tell the trainer what a method needs:

- `teacher_mode`: how the teacher is run.
    "none"   - no teacher forward is needed (`teacher_out` may be None);
    "frozen" - a trained teacher, run under `torch.no_grad()` (CorrKD stage 2, Hinton KD);
    "online" - the teacher is trained jointly in the same step; do NOT detach it (MM-CKD, cross-modal KD);
    "shared" - the teacher IS the student model run on the complete view (weight-shared, MITR-DNet).
- `needs_teacher_batch` / `needs_student_batches` / `needs_aux_features`: which keyword inputs are required.
- `joint_students`: True if all students enter one loss (MM-CKD); otherwise each (teacher, student_k) pair is
  scored and every term is averaged over the K students (K = 1 is the usual case).

The module may own parameters (heads, statistics networks, discriminators): the trainer must hand them to
the optimiser (e.g. register the loss module as a sub-module of the trained wrapper).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch
from torch import Tensor, nn

from hf_mmkd.distillation.functional import label_mapping

MODALITIES = ("text", "audio", "vision")
TEACHER_MODES = ("none", "frozen", "online", "shared")


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class StatisticsNetwork(nn.Module):
    """T_theta(x, y) -> scalar critic of an MI estimator: an MLP on the concatenation [x, y] (Deep InfoMax)."""

    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(x_dim + y_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, xy: Tensor) -> Tensor:  # (B, x_dim + y_dim) -> (B, 1)
        return self.net(xy)


# ----------------------------------------------------------------------------- reading the model config


def config_task(config: Any) -> str:
    """`"regression"` or `"classification"` from an MMKDConfig-like object (duck-typed)."""
    task = getattr(config, "task", None)
    if task is None:
        task = "regression" if getattr(config, "num_labels", 1) == 1 else "classification"
    return task


def config_modalities(config: Any) -> list[str]:
    """The modalities the model has an encoder for (`config.modalities`, or inferred from the sub-configs)."""
    mods = getattr(config, "modalities", None)
    if mods is not None:
        return list(mods)
    return [m for m in MODALITIES
            if getattr(config, f"{m}_config", None) is not None or getattr(config, f"{m}_feature_dim", None)]


def config_fusion_dim(config: Any) -> int:
    return getattr(config, "fusion_dim", None) or config.hidden_size


def weighted_mean(values: Tensor, row_weights: Tensor | None) -> Tensor:
    """Mean over rows of per-row values (B,) or (B, ...) with optional (B,) weights: sum_i w_i v_i / B (so
    weights below 1 reduce a row's contribution; they are not renormalised)."""
    values = values.reshape(values.shape[0], -1).mean(1) if values.ndim > 1 else values  # (B,)
    if row_weights is None:
        return values.mean()
    return (values * row_weights.to(values)).sum() / values.shape[0]


def neutral_distance(logits: Tensor, config: Any) -> Tensor:
    """(B,) how far each row's answer is from the uninformed one (the trainer's `recoverability_fallback`).

    Regression: (y_hat - c)^2, c the neutral point of the label scale (the midpoint that `label_mapping` maps onto
    0 on [-3, 3]; 0 for MOSI's range, 3 for ratings 1..5). Classes: KL(u || softmax(z)) with u uniform, i.e. the
    cross-entropy to "every class equally likely" minus its minimum log C."""
    task = config_task(config)
    if task == "regression":
        neutral = -label_mapping(config, task)[0]
        return (logits.view(-1) - neutral).pow(2)  # (B,)
    log_p = torch.log_softmax(logits, dim=-1)  # (B, C)
    return -log_p.mean(-1) - math.log(logits.shape[-1])  # (B,)


# ----------------------------------------------------------------------------- the base class


class DistillationLoss(nn.Module):
    """Base class: normalises the inputs, checks what the method needs, and by default averages per-pair terms.

    Subclasses implement either `compute_pair` (one teacher, one student; terms averaged over students) or,
    with `joint_students = True`, `compute` (all students at once).
    """

    method: ClassVar[str] = ""
    teacher_mode: ClassVar[str] = "frozen"
    needs_teacher_batch: ClassVar[bool] = False
    needs_student_batches: ClassVar[bool] = False
    needs_aux_features: ClassVar[bool] = False
    joint_students: ClassVar[bool] = False

    def forward(
        self,
        teacher_out: Any,
        student_outs: Sequence[Any] | Any,
        labels: Tensor | None,
        *,
        teacher_batch: dict[str, Tensor] | None = None,
        student_batches: Sequence[dict[str, Tensor]] | dict[str, Tensor] | None = None,
        aux_features: Sequence[Tensor] | Tensor | None = None,
        aux_mask: Tensor | None = None,
        row_weights: Sequence[Tensor] | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute this method's weighted loss terms.

        Args:
            teacher_out: the teacher's model output (complete view).
            student_outs: a list of K student outputs (a single output is accepted as K = 1).
            labels: (B,) float regression labels or (B,) long class ids.
            teacher_batch: the teacher's input batch (MITR reconstruction targets).
            student_batches: K student input batches, aligned with `student_outs` (`<m>_dropped` masks).
            aux_features: (B, d) tensor, or K of them (one per student): the representation of the auxiliary
                modality by cross-modal KD's auxiliary model A.
            aux_mask: (B,) bool, the rows that have the auxiliary modality (None: all rows); `aux_features` of
                the other rows are placeholders.
            row_weights: (B,) weights in [0, 1] of each row's contribution to the terms, or K of them (one per
                student view); None: every row counts fully. Each term becomes a weighted sum over its rows
                (anchors) divided by the number of rows, so weights only ever reduce a row's pull.
        Returns:
            dict of scalar tensors named `loss_<term>`, already weighted.
        """
        if not isinstance(student_outs, (list, tuple)):
            student_outs = [student_outs]
        if isinstance(student_batches, dict):
            student_batches = [student_batches]
        if not student_outs:
            raise ValueError(f"{type(self).__name__}: student_outs is empty")
        if self.teacher_mode != "none" and teacher_out is None:
            raise ValueError(f"{type(self).__name__} needs teacher_out")
        if self.needs_teacher_batch and teacher_batch is None:
            raise ValueError(f"{type(self).__name__} needs teacher_batch")
        if self.needs_student_batches and (student_batches is None or len(student_batches) != len(student_outs)):
            raise ValueError(f"{type(self).__name__} needs one student batch per student output")
        if self.needs_aux_features and aux_features is None and aux_mask is None:
            raise ValueError(f"{type(self).__name__} needs aux_features (the representation of the lacking modality)")
        if row_weights is not None and not isinstance(row_weights, (list, tuple)):
            row_weights = [row_weights] * len(student_outs)
        if self.joint_students:
            return self.compute(teacher_out, list(student_outs), labels, teacher_batch=teacher_batch,
                                student_batches=student_batches, aux_features=aux_features, aux_mask=aux_mask,
                                row_weights=row_weights)
        per_student = []
        for k, student_out in enumerate(student_outs):
            aux_k = aux_features[k] if isinstance(aux_features, (list, tuple)) else aux_features
            batch_k = student_batches[k] if student_batches is not None else None
            weights_k = row_weights[k] if row_weights is not None else None
            per_student.append(self.compute_pair(teacher_out, student_out, labels, teacher_batch=teacher_batch,
                                                 student_batch=batch_k, aux_features=aux_k, aux_mask=aux_mask,
                                                 row_weights=weights_k))
        return {name: torch.stack([terms[name] for terms in per_student]).mean() for name in per_student[0]}

    @property
    def term_names(self) -> tuple[str, ...]:
        """Names of the terms `forward` returns, in order (the trainer keeps a balancing scale per term)."""
        return ()

    @torch.no_grad()
    def diagnostics(self, teacher_out, student_outs, labels, *, teacher_batch=None, student_batches=None,
                    aux_features=None, aux_mask=None) -> dict[str, float]:
        """Quantities that explain how the method's terms behave on a batch (the trainer logs them as `diag_*`
        when `diagnostics_steps` is set). The base class has none."""
        return {}

    def compute(self, teacher_out, student_outs, labels, *, teacher_batch, student_batches, aux_features,
                aux_mask=None, row_weights=None):
        raise NotImplementedError

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"method={self.method!r}, teacher_mode={self.teacher_mode!r}"
