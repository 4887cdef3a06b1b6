"""MITR-DNet losses: SimSiam attraction, masked reconstruction and the three teacher/student KD terms.

Paper: Wang, Wang, Yu, Jiao, "Modality-Invariant Bidirectional Temporal Representation Distillation Network
for Missing Multimodal Sentiment Analysis", ICASSP 2025 (arXiv 2501.05474); read from the training code of
`Wangai30/MITR-DNet` (docs/methods.md#mitr-dnet). The MIB-TRL temporal block lives in the model, not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_mmkd.distillation.base import DistillationLoss, config_fusion_dim, config_modalities, weighted_mean

_NO_ALIGNMENT = ("audio",)  # backbone inputs without a per-step alignment to the input (16 kHz waveform)


class SimSiamHead(nn.Module):
    """Projector Linear(d, d) + BatchNorm(no affine) -> z;  predictor Linear(d, d/2, no bias) + BN + ReLU +
    Linear(d/2, d) -> p. As `Projector` / `Predictor` in MITR-DNet's model file (docs/methods.md#mitr-dnet)."""

    def __init__(self, dim: int):
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim, affine=False))
        self.predictor = nn.Sequential(
            nn.Linear(dim, dim // 2, bias=False), nn.BatchNorm1d(dim // 2), nn.ReLU(), nn.Linear(dim // 2, dim)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (B, d) -> z (B, d), p (B, d)
        z = self.projector(x)
        return z, self.predictor(z)


def simsiam_loss(head: SimSiamHead, x_teacher: Tensor, x_student: Tensor, row_weights: Tensor | None = None) -> Tensor:
    r"""SimSiam (Chen & He, CVPR 2021) between the complete and the masked view of one modality:

        L = -1/2 [ cos(p^s, sg(z^t)) + cos(p^t, sg(z^s)) ],   averaged over the batch; sg = stop-gradient.
    """
    if x_teacher.shape[0] < 2:  # BatchNorm needs two samples; a last batch of one row adds no attraction term
        return 0.0 * (x_teacher.sum() + x_student.sum())
    z_t, p_t = head(x_teacher)
    z_s, p_s = head(x_student)
    cos = F.cosine_similarity(p_s, z_t.detach(), dim=-1) + F.cosine_similarity(p_t, z_s.detach(), dim=-1)  # (B,)
    return -0.5 * weighted_mean(cos, row_weights)


def masked_smooth_l1(pred: Tensor, target: Tensor, mask: Tensor, beta: float = 1.0, eps: float = 1e-6,
                     row_weights: Tensor | None = None) -> Tensor:
    r"""SmoothL1 summed over the masked steps and normalised by the number of masked elements (EMT-DLFR /
    MITR-DNet `ReconLoss`):  L = \sum mask * SmoothL1(pred, target) / (\sum mask * D + eps).

    Args: pred, target (B, L, D); mask (B, L) bool, True where the step was dropped.
    """
    m = mask.unsqueeze(-1).expand_as(pred).to(pred.dtype)  # (B, L, D)
    w = m if row_weights is None else m * row_weights.to(m)[:, None, None]  # weights scale a row's steps
    return (w * F.smooth_l1_loss(pred * m, target * m, reduction="none", beta=beta)).sum() / (m.sum() + eps)


class MITRLoss(DistillationLoss):
    r"""MITR-DNet's distillation terms (docs/methods.md#mitr-dnet). Z_m = `<m>_pooled` (mean-pooled MIB-TRL features),
    F = `fused`; superscript s = masked (student) view, t = complete (teacher) view of the SAME model:

    - loss_attra = attra_weight * \sum_m -1/2[cos(p_m^s, sg(z_m^t)) + cos(p_m^t, sg(z_m^s))]   (SimSiam, one
      projector/predictor pair per modality);
    - loss_recon = recon_weight * \sum_m masked SmoothL1(Linear_m(<m>_sequence^s), target_m) at the dropped
      steps only (`<m>_dropped` of the student batch AND the valid steps of the teacher view), normalised by
      the mask sum. Target: feature inputs -> the original features `teacher_batch["<m>_features"]` (head
      Linear(d -> D_m)); backbone text tokens / video frames -> the teacher's per-step features
      `<m>_sequence^t`, detached (head Linear(d -> d)); waveform audio has no step alignment and is skipped.
      A modality whose student batch has no `<m>_dropped` key (or whose sequence is None) is skipped;
    - loss_kd_tf  = kd_weight * \sum_m L1(Z_m^s, F^t)      (student unimodal vs teacher fused)
    - loss_kd_mib = kd_weight * \sum_m MSE(Z_m^s, Z_m^t)   (student vs teacher unimodal)
    - loss_kd_ss  = kd_weight * \sum_m MSE(Z_m^s, F^s)     (student unimodal vs student fused)

    Weights from the training code: 1, 1 and a group weight of 0.3 (0.1 in the validation loss). Teacher
    features are NOT detached (only the SimSiam targets are). If fusion_dim != hidden_size, F is mapped to d
    by one Linear (`fused_proj`; MITR-DNet has both at 100, so it has no such layer).

    Trainer: teacher_mode "shared" — run the same model on the complete view (teacher_out) and the masked view
    (student_outs=[...]) in one step; pass teacher_batch (complete inputs) and student_batches (with the
    `<m>_dropped` masks). BatchNorm in the SimSiam heads needs batches of at least 2 in training.
    """

    method = "mitr"
    teacher_mode = "shared"
    needs_teacher_batch = True
    needs_student_batches = True

    def __init__(
        self,
        config,
        *,
        attra_weight: float = 1.0,
        recon_weight: float = 1.0,
        kd_weight: float = 0.3,
        smooth_l1_beta: float = 1.0,
        modalities: list[str] | None = None,
    ):
        super().__init__()
        self.attra_weight, self.recon_weight, self.kd_weight = attra_weight, recon_weight, kd_weight
        self.smooth_l1_beta = smooth_l1_beta
        d, fusion_dim = config.hidden_size, config_fusion_dim(config)
        self.modalities = list(modalities) if modalities is not None else config_modalities(config)
        self.simsiam = nn.ModuleDict({m: SimSiamHead(d) for m in self.modalities})
        self.recon = nn.ModuleDict()
        self.recon_from_features = {}
        for m in self.modalities:
            feature_dim = getattr(config, f"{m}_feature_dim", None)
            if feature_dim:
                self.recon[m], self.recon_from_features[m] = nn.Linear(d, feature_dim), True
            elif m not in _NO_ALIGNMENT:
                self.recon[m], self.recon_from_features[m] = nn.Linear(d, d), False
        self.fused_proj = nn.Linear(fusion_dim, d) if fusion_dim != d else nn.Identity()
        # Feature inputs reach the model raw and are standardised inside it; reconstruction targets the same
        # standardised values (the model's training statistics), not the raw ones.
        stats = getattr(config, "feature_standardization", None) or {}
        for m, from_features in self.recon_from_features.items():
            if from_features and m in stats:
                self.register_buffer(f"{m}_mean", torch.tensor(stats[m]["mean"], dtype=torch.float), persistent=False)
                self.register_buffer(f"{m}_std", torch.tensor(stats[m]["std"], dtype=torch.float), persistent=False)

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_attra", "loss_recon", "loss_kd_tf", "loss_kd_mib", "loss_kd_ss")

    def reconstruction(self, m: str, teacher_out, student_out, teacher_batch, student_batch,
                       row_weights: Tensor | None = None) -> Tensor | None:
        dropped = student_batch.get(f"{m}_dropped")
        if m not in self.recon or dropped is None:
            return None
        seq_s = getattr(student_out, f"{m}_sequence")  # (B, L, d); None when no student row has m
        if self.recon_from_features[m]:
            target = teacher_batch[f"{m}_features"]  # (B, L, D_m), raw
            mean = getattr(self, f"{m}_mean", None)
            if mean is not None:
                target = (target - mean) / getattr(self, f"{m}_std")
        else:
            target = getattr(teacher_out, f"{m}_sequence")  # (B, L, d)
            target = None if target is None else target.detach()
        if seq_s is None or target is None:
            return None
        if dropped.shape != seq_s.shape[:2] or target.shape[:2] != seq_s.shape[:2]:
            raise ValueError(f"{m}: dropped mask {tuple(dropped.shape)}, student sequence {tuple(seq_s.shape)} "
                             f"and target {tuple(target.shape)} must share (B, L)")
        mask = dropped.bool()
        valid = getattr(teacher_out, f"{m}_step_mask", None)
        if valid is not None:
            mask = mask & valid.bool()
        return masked_smooth_l1(self.recon[m](seq_s), target.to(seq_s.dtype), mask, self.smooth_l1_beta,
                                row_weights=row_weights)

    @torch.no_grad()
    def diagnostics(self, teacher_out, student_outs, labels, **kwargs) -> dict[str, float]:
        """Per modality: cosine between the student's and the teacher's pooled vectors (what the KD and SimSiam
        terms pull together) and the norms the L1/MSE terms compare."""
        out = {}
        s = student_outs[0]
        out["norm_fused_projected"] = float(self.fused_proj(teacher_out.fused).norm(dim=-1).mean())
        for m in self.modalities:
            z_t, z_s = getattr(teacher_out, f"{m}_pooled"), getattr(s, f"{m}_pooled")
            if z_t is None or z_s is None:
                continue
            out[f"cos_{m}_student_teacher"] = float(F.cosine_similarity(z_s, z_t, dim=-1).mean())
        return out

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        f_t = self.fused_proj(teacher_out.fused)  # (B, d)
        f_s = self.fused_proj(student_out.fused)  # (B, d)
        attra = recon = kd_tf = kd_mib = kd_ss = f_s.new_zeros(())
        for m in self.modalities:
            z_t, z_s = getattr(teacher_out, f"{m}_pooled"), getattr(student_out, f"{m}_pooled")  # (B, d)
            if z_t is None or z_s is None:
                continue
            attra = attra + simsiam_loss(self.simsiam[m], z_t, z_s, row_weights)
            r = self.reconstruction(m, teacher_out, student_out, teacher_batch, student_batch, row_weights)
            if r is not None:
                recon = recon + r
            kd_tf = kd_tf + weighted_mean((z_s - f_t).abs(), row_weights)
            kd_mib = kd_mib + weighted_mean((z_s - z_t).pow(2), row_weights)
            kd_ss = kd_ss + weighted_mean((z_s - f_s).pow(2), row_weights)
        return {
            "loss_attra": self.attra_weight * attra,
            "loss_recon": self.recon_weight * recon,
            "loss_kd_tf": self.kd_weight * kd_tf,
            "loss_kd_mib": self.kd_weight * kd_mib,
            "loss_kd_ss": self.kd_weight * kd_ss,
        }
