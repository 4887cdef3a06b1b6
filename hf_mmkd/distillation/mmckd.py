"""MM-CKD: Multi-View Supervised Contrastive distillation (MVSC) — REBUILD.

Paper: Sang, Funakoshi, Okumura, "Contrastive Knowledge Distillation for Robust Multimodal Sentiment
Analysis", arXiv 2410.08692 (2024). Only the abstract is public; this is the rebuild in docs/methods.md#mm-ckd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hf_mmkd.distillation.base import DistillationLoss, config_fusion_dim, config_task, mlp
from hf_mmkd.distillation.functional import class_targets, contrastive_diagnostics, label_mapping, supcon_loss


class MVSCLoss(DistillationLoss):
    r"""MVSC: SupCon over the teacher view and K student views of a batch (rebuild, docs/methods.md#mm-ckd).

    With N samples and V = 1 + K views (teacher, students), z_i^v = g(fused_i^v) / ||g(fused_i^v)|| and all
    N*V views as anchors:

        L_MVSC = mean_a  -1/|P(a)| \sum_{p in P(a)} log[ exp(z_a.z_p/tau) / \sum_{b != a} exp(z_a.z_b/tau) ]

    P(a) = the other views of the same sample (cross-modal knowledge: teacher <-> students) plus every view of
    samples in the same label class (cross-sample knowledge, "with supervision"); all others are negatives.
    Regression labels are binned (`label_bins`: "7class" = round(clip(y, -3, 3)), or "sign") after the map
    (y + `label_shift`) * `label_scale` onto [-3, 3], by default from the model's data-set spec
    (`functional.label_mapping`: the affine map of its label range onto [-3, 3], the identity for [-3, 3]), so
    that the bins mean the same thing on every scale (ratings 1..5 unmapped would fill only 3 of the 7 bins and
    "sign" would put every row in one class, so every row would be every other row's positive);
    `use_label_positives=False` gives plain multi-view InfoNCE (the doc's ablation). Returns
    {"loss_mvsc": weight * L_MVSC}. The mean over anchors follows the SupCon reference code.

    Projection head g: Linear -> ReLU -> Linear(proj_dim) as in SupCon. One head shared by all views by
    default (the views must land in one space to be compared, and a shared head adds no per-student
    parameters); `shared_head=False` gives one head per view (teacher + `num_students`).

    Trainer: teacher_mode "online" — teacher and students trained jointly, the teacher is not detached; pass
    all K students (one per availability pattern, e.g. the 6 incomplete patterns of P3, and the trainer adds the
    training protocol's own view, e.g. P2's) in a fixed order.
    """

    method = "mmckd"
    teacher_mode = "online"
    joint_students = True

    def __init__(
        self,
        config,
        *,
        weight: float = 1.0,
        temperature: float = 0.07,
        proj_dim: int = 128,
        shared_head: bool = True,
        num_students: int | None = None,
        label_bins: str = "7class",
        use_label_positives: bool = True,
        label_shift: float | None = None,
        label_scale: float | None = None,
    ):
        super().__init__()
        self.weight, self.temperature = weight, temperature
        self.task, self.label_bins, self.use_label_positives = config_task(config), label_bins, use_label_positives
        self.label_shift, self.label_scale = label_mapping(config, self.task, label_shift, label_scale)
        in_dim = config_fusion_dim(config)
        if shared_head:
            num_heads = 1
        elif num_students is None:
            raise ValueError("shared_head=False needs num_students (one projection head per view)")
        else:
            num_heads = 1 + num_students
        self.heads = nn.ModuleList(mlp(in_dim, in_dim, proj_dim) for _ in range(num_heads))

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_mvsc",)

    def project(self, fused: torch.Tensor, view: int) -> torch.Tensor:  # (B, fusion_dim) -> (B, p) unit norm
        head = self.heads[0] if len(self.heads) == 1 else self.heads[view]
        return F.normalize(head(fused), dim=-1)

    def _pool(self, teacher_out, student_outs, labels):
        """(z (V*B, p), sample ids (V*B,), class ids (V*B,) or None) of all views."""
        views = [teacher_out, *student_outs]
        if len(self.heads) > 1 and len(views) != len(self.heads):
            raise ValueError(f"{len(self.heads) - 1} per-view heads for {len(student_outs)} students")
        b = teacher_out.fused.shape[0]
        z = torch.cat([self.project(out.fused, v) for v, out in enumerate(views)])  # (V*B, p)
        sample_ids = torch.arange(b, device=z.device).repeat(len(views))  # (V*B,)
        class_ids = None
        if self.use_label_positives:
            class_ids = class_targets(labels, self.task, self.label_bins, self.label_shift, self.label_scale)
            class_ids = class_ids.to(z.device).repeat(len(views))
        return z, sample_ids, class_ids

    @torch.no_grad()
    def diagnostics(self, teacher_out, student_outs, labels, **kwargs) -> dict[str, float]:
        """MVSC over all views: positives' log-probability above chance and the share of negatives still pushing
        (`contrastive_diagnostics`)."""
        z, sample_ids, class_ids = self._pool(teacher_out, student_outs, labels)
        n = z.shape[0]
        not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
        positives = sample_ids[:, None] == sample_ids[None, :]
        if class_ids is not None:
            positives = positives | (class_ids[:, None] == class_ids[None, :])
        values = contrastive_diagnostics(z @ z.T / self.temperature, positives & not_self, not_self)
        return {f"mvsc_{k}": v for k, v in values.items()}

    def compute(self, teacher_out, student_outs, labels, *, teacher_batch, student_batches, aux_features,
                aux_mask=None, row_weights=None):
        z, sample_ids, class_ids = self._pool(teacher_out, student_outs, labels)
        anchor_weights = None
        if row_weights is not None:  # the teacher's view is complete: its anchors keep weight 1
            ones = torch.ones_like(row_weights[0])
            anchor_weights = torch.cat([ones, *row_weights]).to(z)  # (V*B,)
        return {"loss_mvsc": self.weight * supcon_loss(z, sample_ids, class_ids, self.temperature, anchor_weights)}
