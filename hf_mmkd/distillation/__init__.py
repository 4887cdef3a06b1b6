"""Distillation losses, one module per method, all called the same way by the trainer:

    loss_module = build_distillation_loss("corrkd", model_config, margin=2.0)
    terms = loss_module(teacher_out, [student_out], labels,
                        teacher_batch=None, student_batches=None, aux_features=None)
    loss = task_loss + sum(terms.values())          # every term is logged under its name

| method       | terms                                                        | teacher_mode | needs                  |
|--------------|--------------------------------------------------------------|--------------|------------------------|
| `none`       | —                                                            | none         | —                      |
| `logit`      | loss_logit                                                   | frozen       | —                      |
| `mmckd`      | loss_mvsc (rebuild)                                          | online       | K students, jointly    |
| `corrkd`     | loss_scd, loss_cpd, loss_rcd                                 | frozen       | —                      |
| `mitr`       | loss_attra, loss_recon, loss_kd_tf, loss_kd_mib, loss_kd_ss  | shared       | teacher/student batches|
| `crossmodal` | loss_nce_ts, loss_nce_ta, loss_adv [, loss_l2] (rebuild)     | online       | aux_features           |
"""

from __future__ import annotations

import inspect

from hf_mmkd.distillation.base import TEACHER_MODES, DistillationLoss
from hf_mmkd.distillation.baselines import LogitKD, NoDistillation
from hf_mmkd.distillation.corrkd import CorrKDLoss
from hf_mmkd.distillation.crossmodal import CrossModalKDLoss
from hf_mmkd.distillation.mitr import MITRLoss
from hf_mmkd.distillation.mmckd import MVSCLoss

DISTILLATION_LOSSES: dict[str, type[DistillationLoss]] = {
    cls.method: cls for cls in (NoDistillation, LogitKD, MVSCLoss, CorrKDLoss, MITRLoss, CrossModalKDLoss)
}
_ALIASES = {"mm-ckd": "mmckd", "mvsc": "mmckd", "mitr-dnet": "mitr", "cross-modal": "crossmodal",
            "cmkd": "crossmodal", "kd": "logit", "hinton": "logit"}


def canonical_method(method: str | None) -> str:
    """Registry key of a method name (case, `_`/`-` and a few aliases tolerated; None -> "none")."""
    key = "none" if method is None else method.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DISTILLATION_LOSSES:
        raise ValueError(f"unknown distillation method {method!r}; choose from {sorted(DISTILLATION_LOSSES)}")
    return key


def build_distillation_loss(method: str | None, config=None, **kwargs) -> DistillationLoss:
    """Build the loss module of `method` for a model with `config` (an MMKDConfig, or anything with
    `hidden_size`, `fusion_dim`, `task`, `num_labels`, `<m>_feature_dim` / `<m>_config`); `kwargs` override
    the method's constructor defaults (weights, temperatures, margin, ...)."""
    cls = DISTILLATION_LOSSES[canonical_method(method)]
    if config is None and cls is not NoDistillation:
        raise ValueError(f"distillation method {cls.method!r} needs the model config")
    accepted = [n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"method_kwargs {unknown} are not arguments of method {cls.method!r} "
                         f"(it takes {accepted or 'none'})")
    return cls(config, **kwargs)


__all__ = [
    "DISTILLATION_LOSSES",
    "TEACHER_MODES",
    "CorrKDLoss",
    "CrossModalKDLoss",
    "DistillationLoss",
    "LogitKD",
    "MITRLoss",
    "MVSCLoss",
    "NoDistillation",
    "build_distillation_loss",
    "canonical_method",
]
