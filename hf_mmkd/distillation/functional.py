"""Stateless pieces shared by the distillation losses: one contrastive core (SupCon and InfoNCE are both
instances of it), the Jensen-Shannon MI bound, label binning, soft class responses and gradient reversal.

Only torch is imported (and, lazily, the data-set spec for `label_mapping`). Formulas are documented in
docs/methods.md.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor

LABEL_BINS = ("sign", "7class")


# ----------------------------------------------------------------------------- contrastive core


def contrastive_loss(logits: Tensor, positive_mask: Tensor, candidate_mask: Tensor | None = None,
                     anchor_weights: Tensor | None = None) -> Tensor:
    r"""Multi-positive contrastive loss, the common core of SupCon and InfoNCE.

    For each anchor a (a row of `logits`), with positives P(a) and candidates C(a) (the softmax support):

        l(a) = -1/|P(a)| \sum_{p in P(a)} log( exp(s_ap) / \sum_{b in C(a)} exp(s_ab) )

    and the loss is the mean of l(a) over anchors with at least one positive (Khosla et al. 2020, eq. 2).

    Args:
        logits: (A, N) similarities already divided by the temperature.
        positive_mask: (A, N) bool, True at positives; must be a subset of the candidates.
        candidate_mask: (A, N) bool, True where b may appear in the denominator (None: every column).
        anchor_weights: (A,) weights of the anchors' l(a) (None: 1); the loss is then sum_a w_a l(a) over the
            number of anchors with a positive (weights reduce an anchor's pull, they are not renormalised).
    """
    if candidate_mask is not None:
        logits = logits.masked_fill(~candidate_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (A, N)
    num_pos = positive_mask.sum(dim=1)  # (A,)
    pos_log_prob = log_prob.masked_fill(~positive_mask, 0.0).sum(dim=1)  # (A,)  (where(): no 0 * -inf)
    has_pos = num_pos > 0
    if not bool(has_pos.any()):
        return 0.0 * logits.masked_fill(~torch.isfinite(logits), 0.0).sum()  # 0, still on the graph
    per_anchor = -pos_log_prob[has_pos] / num_pos[has_pos]
    if anchor_weights is not None:
        per_anchor = per_anchor * anchor_weights.to(per_anchor)[has_pos]
    return per_anchor.mean()


def supcon_loss(z: Tensor, sample_ids: Tensor, class_ids: Tensor | None = None, temperature: float = 0.07,
                anchor_weights: Tensor | None = None) -> Tensor:
    r"""Supervised contrastive loss (SupCon, Khosla et al. NeurIPS 2020) over a pool of views.

        L = mean_a  -1/|P(a)| \sum_{p in P(a)} log[ exp(z_a.z_p/tau) / \sum_{b != a} exp(z_a.z_b/tau) ]

    P(a) = every other view with the same sample id, plus (if `class_ids` is given) every other view with the
    same class id. Without `class_ids` this is the multi-view InfoNCE / SimCLR loss.

    Args:
        z: (N, p) unit-norm embeddings of all views (e.g. N = V * B).
        sample_ids: (N,) id of the sample each view comes from.
        class_ids: (N,) class (label bin) of each view, or None.
    """
    n = z.shape[0]
    logits = z @ z.T / temperature  # (N, N)
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)  # (N, N)
    positives = sample_ids[:, None] == sample_ids[None, :]
    if class_ids is not None:
        positives = positives | (class_ids[:, None] == class_ids[None, :])
    return contrastive_loss(logits, positives & not_self, not_self, anchor_weights)


def info_nce(x: Tensor, y: Tensor, temperature: float = 0.07, anchor_weights: Tensor | None = None) -> Tensor:
    r"""InfoNCE (van den Oord et al. 2018) with cosine similarity and in-batch negatives, anchors x:

        L_NCE(X, Y) = -1/N \sum_i log[ exp(s(x_i, y_i)/tau) / \sum_j exp(s(x_i, y_j)/tau) ],  s = cosine.

    log N - L_NCE is a lower bound of I(X; Y). Args: x (N, p), y (N, p).
    """
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature  # (N, N)
    positives = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return contrastive_loss(logits, positives, anchor_weights=anchor_weights)


@torch.no_grad()
def contrastive_diagnostics(logits: Tensor, positive_mask: Tensor, candidate_mask: Tensor | None = None,
                            ) -> dict[str, float]:
    """How informative a contrastive term is on a batch (same arguments as `contrastive_loss`).

    - `pos_logprob_excess`: mean over anchors of the mean log-probability of their positives minus the log of
      chance (1 / number of candidates): 0 at the zero-information point, log(#candidates) at most;
    - `active_negatives`: share of (anchor, negative) pairs whose probability exceeds chance, i.e. the negatives
      that still push.
    """
    if candidate_mask is None:
        candidate_mask = torch.ones_like(positive_mask)
    logits = logits.float().masked_fill(~candidate_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # (A, N)
    n_cand = candidate_mask.sum(1).clamp_min(1).float()  # (A,)
    has_pos = positive_mask.any(1)
    pos_mean = log_prob.masked_fill(~positive_mask, 0.0).sum(1) / positive_mask.sum(1).clamp_min(1)
    excess = (pos_mean + n_cand.log())[has_pos]
    negatives = candidate_mask & ~positive_mask
    active = (log_prob > -n_cand.log()[:, None]) & negatives
    return {"pos_logprob_excess": float(excess.mean()) if excess.numel() else float("nan"),
            "active_negatives": float(active.sum() / negatives.sum().clamp_min(1))}


# ----------------------------------------------------------------------------- mutual information


def shuffle_batch(y: Tensor) -> Tensor:
    """Rows of y rolled by a random shift in [1, B-1]: a derangement, so no row stays with its own sample."""
    shift = random.randint(1, y.shape[0] - 1)
    return torch.roll(y, shifts=shift, dims=0)


JSD_ZERO_INFORMATION = -2.0 * math.log(2.0)  # MI_JSD at the optimal critic when x and y are independent (T = 0)


def jsd_mutual_information(statistics_network, x: Tensor, y: Tensor, row_weights: Tensor | None = None) -> Tensor:
    r"""Jensen-Shannon MI lower bound of Deep InfoMax (Hjelm et al. ICLR 2019, eq. 4), as used by CorrKD's RCD:

        MI_JSD(x, y) = E_joint[ -sp(-T(x, y)) ] - E_marginal[ sp(T(x, y')) ],   sp = softplus,

    where y' is y from a shuffled batch (product of marginals). Maximise it w.r.t. the statistics network T
    and the encoders. Args: x (B, p), y (B, q); `statistics_network` maps (B, p + q) -> (B, 1); `row_weights`
    (B,): weights of row i's joint and marginal samples (sums over rows divided by B; None: 1).
    """
    if x.shape[0] < 2:  # no product-of-marginals sample in a batch of one
        return 0.0 * statistics_network(torch.cat([x, y], dim=-1)).sum()
    t_joint = statistics_network(torch.cat([x, y], dim=-1)).view(-1)  # (B,)
    t_marginal = statistics_network(torch.cat([x, shuffle_batch(y)], dim=-1)).view(-1)  # (B,)
    w = torch.ones_like(t_joint) if row_weights is None else row_weights.to(t_joint)
    return (w * -F.softplus(-t_joint)).mean() - (w * F.softplus(t_marginal)).mean()


# ----------------------------------------------------------------------------- labels and responses


def class_targets(labels: Tensor, task: str, label_bins: str = "7class", label_shift: float = 0.0,
                  label_scale: float = 1.0) -> Tensor:
    """Class index per sample, (B,) long.

    Classification: the labels themselves. Regression (MMSA sentiment in [-3, 3]): label bins of
    y = (label + `label_shift`) * `label_scale`, `"sign"` -> 0 for y < 0, 1 for y >= 0 (MMSA's Has0 convention);
    `"7class"` -> round(clip(y, -3, 3)) + 3 (MMSA's Acc-7 classes, 0..6; torch.round rounds halves to even).

    Shift and scale map labels on another scale onto [-3, 3] before binning; `label_mapping` takes them from the
    data-set spec (the affine map of its label range onto [-3, 3]; the identity for [-3, 3] itself). E.g. ratings
    1..5 with shift -3 (and scale 1) give the bins of -2..2. They must not be given for classification.
    """
    if labels is None:
        raise ValueError("this distillation loss needs the labels (class / label-bin information)")
    if task == "classification":
        if label_shift or label_scale != 1.0:
            raise ValueError(f"{'label_shift' if label_shift else 'label_scale'} only applies to regression labels")
        return labels.view(-1).long()
    y = (labels.view(-1).float() + float(label_shift)) * float(label_scale)
    if label_bins == "sign":
        return (y >= 0).long()
    if label_bins == "7class":
        return torch.round(y.clamp(-3.0, 3.0)).long() + 3
    raise ValueError(f"label_bins must be one of {LABEL_BINS}, got {label_bins!r}")


def check_label_shift(label_shift, task: str) -> float:
    """`label_shift` as a finite float; only regression labels can be shifted (class ids cannot)."""
    try:
        shift = float(label_shift)
    except (TypeError, ValueError):
        raise ValueError(f"label_shift must be a number, got {label_shift!r}") from None
    if not math.isfinite(shift):
        raise ValueError(f"label_shift must be finite, got {label_shift!r}")
    if shift and task != "regression":
        raise ValueError(f"label_shift only applies to regression labels (task {task!r})")
    return shift


def check_label_scale(label_scale, task: str) -> float:
    """`label_scale` as a finite float > 0; only regression labels can be scaled (class ids cannot)."""
    try:
        scale = float(label_scale)
    except (TypeError, ValueError):
        raise ValueError(f"label_scale must be a number, got {label_scale!r}") from None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"label_scale must be finite and > 0, got {label_scale!r}")
    if scale != 1.0 and task != "regression":
        raise ValueError(f"label_scale only applies to regression labels (task {task!r})")
    return scale


def label_mapping(config, task: str, label_shift=None, label_scale=None) -> tuple[float, float]:
    """`(shift, scale)` that `class_targets` / `regression_class_logits` apply to regression labels.

    Given explicitly (either one; the other then defaults to the identity, 0 or 1), they are used as they are.
    Otherwise they come from the model's data-set spec (`config.dataset_spec`, see
    `hf_mmkd.data.spec.DatasetSpec.label_bin_mapping`): the affine map of its label range onto [-3, 3], the
    identity for [-3, 3]. Without a spec: the identity.
    """
    if label_shift is None and label_scale is None:
        spec = getattr(config, "dataset_spec", None)
        if spec is not None and task == "regression":
            from hf_mmkd.data.spec import DatasetSpec

            label_shift, label_scale = DatasetSpec.from_dict(spec, where="config.dataset_spec").label_bin_mapping
    shift = check_label_shift(0.0 if label_shift is None else label_shift, task)
    return shift, check_label_scale(1.0 if label_scale is None else label_scale, task)


def class_centres(label_bins: str) -> Tensor:
    """Regression value standing for each label bin: sign -> (-1, 1); 7class -> (-3, ..., 3)."""
    if label_bins == "sign":
        return torch.tensor([-1.0, 1.0])
    if label_bins == "7class":
        return torch.arange(-3, 4, dtype=torch.float)
    raise ValueError(f"label_bins must be one of {LABEL_BINS}, got {label_bins!r}")


def regression_class_logits(prediction: Tensor, centres: Tensor, sigma: float, label_shift: float = 0.0,
                            label_scale: float = 1.0) -> Tensor:
    r"""Soft class logits of a scalar prediction (rebuild, for class-response losses on regression models):

        logit_k = -(y_hat - c_k)^2 / (2 sigma^2),   so softmax gives p_k ∝ exp(-(y_hat - c_k)^2 / (2 sigma^2)),

    with y_hat = (prediction + `label_shift`) * `label_scale`: the same map that `class_targets` applies to the
    labels, so a model trained on another label scale (ratings 1..5, shift -3) is compared with the class centres
    on [-3, 3]. Differentiable in y_hat. Args: prediction (B, 1) or (B,); centres (C,). Returns (B, C).
    """
    y_hat = (prediction.reshape(-1, 1) + float(label_shift)) * float(label_scale)  # (B, 1)
    return -((y_hat - centres.to(y_hat)) ** 2) / (2.0 * sigma**2)


def decouple_response(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor | None]:
    r"""Split a response into its target and non-target parts (CorrKD RCD, docs/methods.md#corrkd; as in DKD, Zhao et al. 2022):

        b = [p_y, 1 - p_y]  with p = softmax(logits);   p_hat = softmax(logits without the target column).

    Args: logits (B, C); target (B,) long. Returns b (B, 2) and p_hat (B, C - 1) (None when C < 3: a single
    non-target class carries no information).
    """
    b_size, num_classes = logits.shape
    p = logits.softmax(dim=-1)  # (B, C)
    p_y = p.gather(1, target.view(-1, 1))  # (B, 1)
    binary = torch.cat([p_y, 1.0 - p_y], dim=1)  # (B, 2)
    if num_classes < 3:
        return binary, None
    is_target = F.one_hot(target.view(-1), num_classes).bool()  # (B, C)
    non_target = logits[~is_target].view(b_size, num_classes - 1).softmax(dim=-1)  # (B, C-1)
    return binary, non_target


# ----------------------------------------------------------------------------- gradient reversal


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return -ctx.coeff * grad_output, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by -coeff in the backward pass (Ganin & Lempitsky
    2015). Lets one optimiser train a discriminator and, through the reversed path, its adversary."""
    return _GradientReversal.apply(x, coeff)
