"""Cross-modal KD with a teacher regularised by auxiliary-modality MI and conditional entropy — REBUILD.

Paper: Chen, Xing, Wang, Zhang, "Enhanced Multimodal Representation Learning with Cross-modal KD", CVPR 2023
(arXiv 2306.07646). No code and no loss details are public; this is the rebuild in docs/methods.md#cross-modal-kd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hf_mmkd.distillation.base import DistillationLoss, config_fusion_dim, mlp, weighted_mean
from hf_mmkd.distillation.functional import contrastive_diagnostics, grad_reverse, info_nce


class CrossModalKDLoss(DistillationLoss):
    r"""Maximise I(T; S) + alpha I(T; A) - beta H(T|S) (rebuild, docs/methods.md#cross-modal-kd), as the loss terms

    - loss_nce_ts = ts_weight * L_NCE(g_T(f_T), g_S(f_S))
    - loss_nce_ta = alpha * L_NCE(g_T(f_T), g_A(f_A))
    - loss_adv    = beta * [ BCE(D(f_T), 1) + BCE(D(GRL(G(f_S))), 0) ]
    - loss_l2     = l2_weight * ||G(f_S) - f_T||^2  (mean; only returned when l2_weight > 0)

    L_NCE(X, Y) = -1/N \sum_i log[ exp(cos(x_i, y_i)/tau) / \sum_j exp(cos(x_i, y_j)/tau) ] (in-batch negatives;
    log N - L_NCE lower-bounds the MI). f_T = teacher `fused`, f_S = student `fused`, f_A = `aux_features`: the
    `fused` output of the auxiliary model A, a separate model of the auxiliary modality alone that the trainer
    builds (initialised from the teacher's encoder of that modality) and trains jointly on its own task loss;
    `aux_mask` marks the rows that have that modality (I(T; A) is estimated on those rows only). g_T, g_S, g_A are linear heads into a shared
    `proj_dim` space (our choice: f_A and f_T may differ in width); g_T is shared by both NCE terms. The
    I(T; A) term keeps the teacher from the "weak teacher" shortcut of maximising I(T; S) alone.

    H(T|S) is made small by making f_T predictable from f_S: a generator G(f_S) -> f_hat_T against a
    discriminator D (real f_T vs generated f_hat_T). Update rule with ONE optimiser (HF Trainer): the
    gradient-reversal layer GRL sits between G and D, so a single descent step on loss_adv
      * moves D's parameters DOWN the BCE (D learns to tell real from generated), and
      * moves G's parameters and the student (everything upstream of f_hat_T) UP the same BCE (they learn to
        make D call f_hat_T real, i.e. to fool it) — the minimax GAN game, scaled by `grl_coeff`.
    So the logged loss_adv is D's loss: it rising means G/the student are winning. By default f_T enters the
    adversarial and L2 terms detached (`detach_teacher_in_adv=True`), so H(T|S) is reduced by moving the
    student side, not by pulling the teacher towards the student; the NCE terms do reach the teacher.

    Defaults: all weights 1 (alpha, beta "tuned on validation" in the doc), tau = 0.07, L2 off.
    Trainer: teacher_mode "online" (the teacher is trained jointly and not detached); needs aux_features.
    With several students the terms are averaged over them.
    """

    method = "crossmodal"
    teacher_mode = "online"
    needs_aux_features = True

    def __init__(
        self,
        config,
        *,
        ts_weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        l2_weight: float = 0.0,
        temperature: float = 0.07,
        proj_dim: int = 128,
        aux_dim: int | None = None,
        hidden_dim: int | None = None,
        grl_coeff: float = 1.0,
        detach_teacher_in_adv: bool = True,
    ):
        super().__init__()
        self.ts_weight, self.alpha, self.beta, self.l2_weight = ts_weight, alpha, beta, l2_weight
        self.temperature, self.grl_coeff, self.detach_teacher_in_adv = temperature, grl_coeff, detach_teacher_in_adv
        fusion_dim = config_fusion_dim(config)
        aux_dim = aux_dim or fusion_dim  # A is a model of the same family: its `fused` has the same width
        hidden_dim = hidden_dim or fusion_dim
        self.proj = nn.ModuleDict({
            "teacher": nn.Linear(fusion_dim, proj_dim),
            "student": nn.Linear(fusion_dim, proj_dim),
            "aux": nn.Linear(aux_dim, proj_dim),
        })
        self.generator = mlp(fusion_dim, hidden_dim, fusion_dim)
        self.discriminator = mlp(fusion_dim, hidden_dim, 1)

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("loss_nce_ts", "loss_nce_ta", "loss_adv") + (("loss_l2",) if self.l2_weight > 0 else ())

    def adversarial(self, f_t: Tensor, f_s: Tensor, row_weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(D's BCE with the GRL in place, L2 between G(f_S) and f_T); `row_weights` weight the generated rows."""
        real = f_t.detach() if self.detach_teacher_in_adv else f_t  # (B, D)
        fake = self.generator(f_s)  # (B, D)
        d_real = self.discriminator(real)  # (B, 1)
        d_fake = self.discriminator(grad_reverse(fake, self.grl_coeff))  # (B, 1)
        bce_fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake), reduction="none")
        bce = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real)) + weighted_mean(bce_fake, row_weights)
        return bce, weighted_mean((fake - real).pow(2), row_weights)

    @torch.no_grad()
    def diagnostics(self, teacher_out, student_outs, labels, *, aux_features=None, aux_mask=None, **kwargs,
                    ) -> dict[str, float]:
        """Each InfoNCE term's positives above chance (`nce_*_pos_logprob_excess`, a lower bound of the MI in nats)
        and active negatives, and the discriminator's accuracy on real teacher / generated vectors."""
        f_t, f_s = teacher_out.fused, student_outs[0].fused
        z_t = F.normalize(self.proj["teacher"](f_t), dim=-1)
        pairs = {"ts": (z_t, F.normalize(self.proj["student"](f_s), dim=-1))}
        rows = torch.ones_like(f_t[:, 0], dtype=torch.bool) if aux_mask is None else aux_mask.bool()
        if aux_features is not None and int(rows.sum()) >= 2:
            pairs["ta"] = (z_t[rows], F.normalize(self.proj["aux"](aux_features[rows]), dim=-1))
        out = {}
        for name, (x, y) in pairs.items():
            eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
            for k, v in contrastive_diagnostics(x @ y.T / self.temperature, eye).items():
                out[f"nce_{name}_{k}"] = v
        real = self.discriminator(f_t.detach()) > 0
        fake = self.discriminator(self.generator(f_s)) < 0
        out["disc_accuracy"] = float(torch.cat([real, fake]).float().mean())
        return out

    def compute_pair(self, teacher_out, student_out, labels, *, teacher_batch, student_batch, aux_features,
                     aux_mask=None, row_weights=None):
        f_t, f_s = teacher_out.fused, student_out.fused  # (B, fusion_dim)
        z_t = self.proj["teacher"](f_t)  # (B, p)
        rows = torch.ones_like(f_t[:, 0], dtype=torch.bool) if aux_mask is None else aux_mask.bool()  # (B,)
        if aux_features is not None and int(rows.sum()) >= 2:  # in-batch negatives need two rows with A
            nce_ta = info_nce(z_t[rows], self.proj["aux"](aux_features[rows]), self.temperature)
        else:
            nce_ta = 0.0 * z_t.sum()
        terms = {  # anchors: the teacher's rows; a row's weight scales its pull on the student (row_weights)
            "loss_nce_ts": self.ts_weight * info_nce(z_t, self.proj["student"](f_s), self.temperature, row_weights),
            "loss_nce_ta": self.alpha * nce_ta,
        }
        adv, l2 = self.adversarial(f_t, f_s, row_weights)
        terms["loss_adv"] = self.beta * adv
        if self.l2_weight > 0:
            terms["loss_l2"] = self.l2_weight * l2
        return terms
