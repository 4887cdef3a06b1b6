"""CorrKD: correlation-decoupled knowledge distillation (SCD + CPD + RCD).

Paper: Li et al., "Correlation-Decoupled Knowledge Distillation for Multimodal Sentiment Analysis with
Incomplete Modalities", CVPR 2024 (arXiv 2404.16456). No official code; the losses follow the paper's
description (docs/methods.md#corrkd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hf_mmkd.distillation.base import DistillationLoss, StatisticsNetwork, config_task, weighted_mean
from hf_mmkd.distillation.functional import (
    JSD_ZERO_INFORMATION,
    class_centres,
    class_targets,
    decouple_response,
    jsd_mutual_information,
    label_mapping,
    regression_class_logits,
)


def scd_loss(h_s: Tensor, h_t: Tensor, margin: float, row_weights: Tensor | None = None) -> Tensor:
    r"""Sample-level contrastive distillation (docs/methods.md#corrkd):

        L_SCD = 1/N^2 \sum_i \sum_j [ 1(i=j) ||h_i^s - h_j^t||^2 + 1(i!=j) max(0, eta - ||h_i^s - h_j^t||)^2 ]

    Args: h_s, h_t (N, d). The pair normalisation 1/N^2 is the standard contrastive-margin form (not public).
    """
    sq_dist = (h_s[:, None, :] - h_t[None, :, :]).pow(2).sum(-1)  # (N, N)
    dist = sq_dist.clamp_min(1e-12).sqrt()  # clamp: finite gradient when two embeddings coincide
    same = torch.eye(h_s.shape[0], dtype=torch.bool, device=h_s.device)
    pair_loss = torch.where(same, sq_dist, F.relu(margin - dist).pow(2))  # (N, N)
    return weighted_mean(pair_loss, row_weights)  # row i = student anchor i; 1/N^2 without weights


def cpd_loss(h_t: Tensor, h_s: Tensor, classes: Tensor, row_weights: Tensor | None = None) -> Tensor:
    r"""Category-guided prototype distillation (docs/methods.md#corrkd):

        c_k^w = mean{ h_i^w : y_i = k },   S_ik^w = cos(h_i^w, c_k^w),
        L_CPD = 1/(N K) \sum_i \sum_k (S_ik^t - S_ik^s)^2

    over the K classes present in the batch (absent classes have no prototype and are skipped).
    Args: h_t, h_s (N, d); classes (N,) long.
    """
    present = torch.unique(classes)  # (K,)
    member = (classes[:, None] == present[None, :]).to(h_t.dtype)  # (N, K)
    weights = member / member.sum(0, keepdim=True)  # column k averages the members of class k
    sims = []
    for h in (h_t, h_s):
        prototypes = weights.T @ h  # (K, d)
        sims.append(F.cosine_similarity(h[:, None, :], prototypes[None, :, :], dim=-1))  # (N, K)
    return weighted_mean((sims[1] - sims[0]).pow(2), row_weights)  # mean over (N, K) without weights


class CorrKDLoss(DistillationLoss):
    r"""CorrKD's three distillation terms between a frozen teacher and a student (docs/methods.md#corrkd):

    - loss_scd = scd_weight * L_SCD(h^s, h^t)  on the fused representations (`output.fused`), margin eta;
    - loss_cpd = cpd_weight * L_CPD(h^t, h^s)  with batch class prototypes;
    - loss_rcd = rcd_weight * L_RCD,  L_RCD = -[ MI_JSD(b^t, b^s) + MI_JSD(p_hat^t, p_hat^s) ]

      where b = [p_y, 1 - p_y] and p_hat = softmax over the non-target logits (`decouple_response`), and
      each MI is the Deep InfoMax JSD bound with its own statistics network (shuffled-batch marginals).
      The statistics networks and the student (and an online teacher) all maximise the MI estimate.

    Classes: classification models use the class labels and softmax(logits). Regression models (MOSI/MOSEI
    sentiment scores) derive classes from label bins — `label_bins="7class"` (round(clip(y, -3, 3)), 7
    classes, default) or `"sign"` (y < 0 / y >= 0) — and, REBUILD (CorrKD treats MOSI as classification),
    their class response is the Gaussian soft assignment of the scalar prediction to the class centres,
    p_k ∝ exp(-(y_hat - c_k)^2 / (2 sigma^2)) (`regression_class_logits`), which is differentiable in y_hat.
    With 2 classes the non-target part is a single constant and is skipped.

    The bins assume the scale [-3, 3]. Labels and predictions are first mapped by (y + `label_shift`) *
    `label_scale` (regression only); by default both come from the model's data-set spec (`config.dataset_spec`:
    the affine map of its label range onto [-3, 3], the identity for [-3, 3]; see `functional.label_mapping`), so
    ratings 1..5 are binned as -3, -1.5, 0, 1.5, 3. Without a map the raw ratings would fall into 3 of the 7 bins
    (everything >= 2.5 in the top one) and the soft responses would compare 1..5 with -3..3. Given explicitly, the
    two arguments replace the spec's map (e.g. `label_shift=-3` alone: the bins of -2..2).

    Paper weights: none reported (total = CE + SCD + CPD + RCD), hence all 1. eta is dataset-specific in the
    paper; the default 1.0 is ours. Trainer: teacher_mode "frozen" (stage 1 teacher, run under no_grad); with
    several students the terms are averaged over them.
    """

    method = "corrkd"
    teacher_mode = "frozen"

    def __init__(
        self,
        config,
        *,
        scd_weight: float = 1.0,
        cpd_weight: float = 1.0,
        rcd_weight: float = 1.0,
        margin: float | str = 1.0,
        normalize: bool = False,
        label_bins: str = "7class",
        sigma: float = 0.5,
        stat_hidden: int = 64,
        label_shift: float | None = None,
        label_scale: float | None = None,
    ):
        super().__init__()
        self.scd_weight, self.cpd_weight, self.rcd_weight = scd_weight, cpd_weight, rcd_weight
        if not (margin == "auto" or (isinstance(margin, (int, float)) and margin >= 0)):
            raise ValueError(f"margin must be a number >= 0 or 'auto', got {margin!r}")
        self.margin, self.normalize, self.label_bins, self.sigma = margin, normalize, label_bins, sigma
        self.task = config_task(config)
        self.label_shift, self.label_scale = label_mapping(config, self.task, label_shift, label_scale)
        if self.task == "regression":
            self.register_buffer("centres", class_centres(label_bins), persistent=False)
            num_classes = self.centres.numel()
        else:
            self.centres = None
            num_classes = config.num_labels
        self.target_mi = StatisticsNetwork(2, 2, stat_hidden)
        self.non_target_mi = None  # a single non-target class (2 classes) carries no information
        if num_classes > 2:
            self.non_target_mi = StatisticsNetwork(num_classes - 1, num_classes - 1, stat_hidden)

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_scd", "loss_cpd", "loss_rcd")

    def class_logits(self, out) -> Tensor:  # (B, C)
        if self.task == "regression":
            return regression_class_logits(out.logits, self.centres, self.sigma, self.label_shift, self.label_scale)
        return out.logits

    @torch.no_grad()
    def diagnostics(self, teacher_out, student_outs, labels, **kwargs) -> dict[str, float]:
        """SCD geometry (the teacher's own pair distances, the student's distance to its own / other rows' teacher
        vectors, the share of negative pairs inside the margin: with none, SCD is a plain L2 regression) and RCD's
        MI estimates above their zero-information value (-2 ln 2 each; 0 = the responses carry no shared
        information the critic can find)."""
        h_t, h_s, margin = self.representations(teacher_out, student_outs[0])
        h_t, h_s = h_t.float(), h_s.float()  # (B, D)
        n = h_t.shape[0]
        if n < 2:
            return {}
        other = ~torch.eye(n, dtype=torch.bool, device=h_t.device)
        dist = torch.cdist(h_s, h_t)  # (B, B) student row i vs teacher row j
        out = {"scd_margin": margin, "scd_dist_same": float(dist.diagonal().mean()),
               "scd_dist_other": float(dist[other].mean()),
               "teacher_pair_dist": float(torch.cdist(h_t, h_t)[other].mean()),
               "scd_active_negatives": float((dist[other] < margin).float().mean())}
        classes = class_targets(labels, self.task, self.label_bins, self.label_shift, self.label_scale).to(h_s.device)
        parts = zip((self.target_mi, self.non_target_mi),
                    zip(decouple_response(self.class_logits(teacher_out), classes),
                        decouple_response(self.class_logits(student_outs[0]), classes)))
        for name, (net, (x, y)) in zip(("target", "non_target"), parts):
            if net is not None and x is not None:
                t_joint = net(torch.cat([x, y], -1))
                t_marg = net(torch.cat([x, y.roll(1, 0)], -1))
                mi = (-F.softplus(-t_joint)).mean() - F.softplus(t_marg).mean()
                out[f"rcd_mi_excess_{name}"] = float(mi - JSD_ZERO_INFORMATION)
        return out

    def representations(self, teacher_out, student_out) -> tuple[Tensor, Tensor, float]:
        """(h_t, h_s, margin): the fused vectors SCD/CPD compare (unit-normalised with `normalize`) and the SCD
        margin (`"auto"`: the mean distance between the teacher's own vectors of different rows in the batch, so
        that a student vector closer than that to another row's teacher vector is pushed away)."""
        h_t, h_s = teacher_out.fused, student_out.fused  # (B, fusion_dim)
        if self.normalize:
            h_t, h_s = F.normalize(h_t, dim=-1), F.normalize(h_s, dim=-1)
        margin = self.margin
        if margin == "auto":
            n = h_t.shape[0]
            other = ~torch.eye(n, dtype=torch.bool, device=h_t.device)
            margin = float(torch.cdist(h_t.detach().float(), h_t.detach().float())[other].mean()) if n > 1 else 0.0
        return h_t, h_s, float(margin)

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        h_t, h_s, margin = self.representations(teacher_out, student_out)
        classes = class_targets(labels, self.task, self.label_bins, self.label_shift,
                                self.label_scale).to(h_s.device)  # (B,)

        b_t, p_hat_t = decouple_response(self.class_logits(teacher_out), classes)  # (B, 2), (B, C-1)
        b_s, p_hat_s = decouple_response(self.class_logits(student_out), classes)
        mi = jsd_mutual_information(self.target_mi, b_t, b_s, row_weights)
        if self.non_target_mi is not None:
            mi = mi + jsd_mutual_information(self.non_target_mi, p_hat_t, p_hat_s, row_weights)

        return {
            "loss_scd": self.scd_weight * scd_loss(h_s, h_t, margin, row_weights),
            "loss_cpd": self.cpd_weight * cpd_loss(h_t, h_s, classes, row_weights),
            "loss_rcd": -self.rcd_weight * mi,
        }
