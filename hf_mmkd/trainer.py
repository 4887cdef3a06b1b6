"""Distillation training: `MMKDTrainingArguments` (a `TrainingArguments` dataclass) and `MMKDTrainer`.

`MMKDTrainer.compute_loss` takes one collated batch of complete inputs, makes the student's view(s) of it with
the missing-modality protocol (the teacher always sees the complete batch), runs teacher and student(s), and
adds the method's terms (`hf_mmkd.distillation`) to the task loss. Every term is logged, for training and for
evaluation, under its name (TRL's `_metrics` idiom).

How the teacher runs depends on the method (`DistillationLoss.teacher_mode`):
- `frozen` (CorrKD, logit KD): a trained teacher, frozen, prepared with the accelerator in evaluation mode and
  run under `no_grad`. Its complete-input outputs never change, so by default they are computed once per
  training row and cached (`cache_teacher_outputs`).
- `online` (MM-CKD, cross-modal KD): the teacher is trained jointly; it is part of the optimised module.
- `shared` (MITR-DNet): teacher and student are one network, run on the complete and the masked view in one
  forward pass.
- `none` (the no-KD baseline, and the teacher stage itself): no teacher.

What the Trainer optimises is `MMKDDistillationModel`: the student(s), the online teacher if any, and the
method's own parameters (statistics networks, heads, discriminators). A checkpoint holds each weight once:
`student/` (and `teacher/`) as ordinary Hub checkpoints, and in its `model.safetensors` the rest of that module;
`resume_from_checkpoint` (and `load_best_model_at_end`) rebuild the whole module's state from the three.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_mmkd.data.missing import MissingModalitySimulator, kept_fraction, model_inputs, teacher_view
from hf_mmkd.distillation import build_distillation_loss, canonical_method
from hf_mmkd.distillation.base import neutral_distance, weighted_mean
from hf_mmkd.modeling.configuration_mmkd import MODALITIES

logger = logging.getLogger(__name__)

MODALITY_INPUT_KEYS = {  # the forward inputs of each modality (feature and backbone encoders)
    "text": ("text_features", "text_lengths", "input_ids", "attention_mask", "text_dropped"),
    "audio": ("audio_features", "audio_lengths", "input_values", "audio_attention_mask", "audio_dropped"),
    "vision": ("vision_features", "vision_lengths", "pixel_values", "frame_mask", "vision_dropped"),
}
OUTPUT_FIELDS = ("logits", "fused", "modality_mask") + tuple(
    f"{m}_{k}" for m in MODALITIES for k in ("pooled", "sequence", "step_mask")
)


@dataclass
class MMKDTrainingArguments(TrainingArguments):
    r"""`TrainingArguments` plus what distillation needs.

    > Parameters that control the method

    method (`str`): `none` (no-KD baseline / teacher stage), `logit`, `corrkd`, `mmckd`, `mitr` or `crossmodal`.
    method_kwargs (`dict` or JSON `str`): constructor arguments of the method's loss module (term weights,
        temperatures, margin, ...); see `hf_mmkd.distillation`.
    teacher_name_or_path (`str`): the trained teacher checkpoint (frozen and online methods).
    teacher_loss_weight (`float`): weight of the teacher's own task loss when it trains online or shared.
    backbone_learning_rate (`float`): learning rate of the pretrained backbones (BERT / wav2vec2 / ViT), 5e-5 by
        default (MITR-DNet's BERT rate; a 1e-3 rate makes MiniLM collapse to a constant); `learning_rate`
        applies to everything else. None: one rate for all.
    students (`str`): MM-CKD only: `shared` (one student with a pattern embedding, one view per availability
        pattern, plus the training protocol's own view when `missing_protocol` is not `none`) or `per_pattern`
        (one student per pattern). The views carry the training protocol's drops.
    auxiliary_modality (`str`): cross-modal KD only: the modality whose teacher-side representation is the
        auxiliary model A (default: the last modality of the model).
    cache_teacher_outputs (`bool`): cache a frozen teacher's outputs per training row (valid because its
        inputs are complete and it never changes).
    distillation_start_step / distillation_warmup_steps (`int`): in training, the method's terms are scaled by
        clip((step - start) / warmup, 0, 1) (by 0 before `start` and 1 after it when warmup is 0); the task losses
        never are. Both 0 (default): the papers' setting, full weight from the first step. Not from the papers:
        MITR-DNet trains from scratch and starts at a constant prediction; on CMU-MOSI its terms, even at a tenth
        of their weights, keep it there for good, while the task loss alone leaves it within the first epoch.

    > Parameters that control the missing-modality simulation (`hf_mmkd.data.missing`)

    missing_protocol (`str`): protocol of the student's training view: `none`, `p1` ... `p5`.
    missing_rate (`float`): rate of P1 (token/frame drop) or P4 (MR); P3's frame-drop ratio.
    eval_missing_protocol / eval_missing_rate (`str` / `float`): the student's view during evaluation
        (deterministic given `missing_seed`); LNLN's P2 validates at r = 0.5.
    eval_missing_availability (`str`): the fixed availability set of a P3/P5 evaluation view (e.g. `la`).
    missing_seed (`int`): seed of the evaluation masks.

    Training draws are seeded by (`seed`, global step, micro-batch), so a resumed run draws the same masks.

    > Parameters that shape the distillation terms (not from the papers; see docs/methods.md#shared-machinery)

    balance_terms (`bool`): cap every method term's gradient norm at the student's parameters at `balance_ratio`
        times the student task loss's: every `balance_steps` optimiser steps the ratio r_k = ||grad term_k|| /
        ||grad task|| is measured on the step's first micro-batch and the term's scale s_k moves (geometric mean of
        the old and the new value) towards min(1, `balance_ratio` / r_k) (never below 1e-3). At initialisation the
        contrastive and SimSiam terms of the papers are 5-3000x the task gradient on CMU-MOSI, so Adam follows
        them, not the task. Terms are only ever scaled down: amplifying a term whose gradient is small (CorrKD's
        RCD at the zero-information point, MITR-DNet's KD group on collapsed representations, the adversarial
        term) amplifies noise, and on CMU-MOSI it pinned MITR-DNet and cross-modal KD students to a constant
        prediction. The scales are part of the model state (saved in checkpoints, restored on resume) and logged as
        `scale_*`.
    recoverability_floor (`float`): each row's distillation terms are weighted by w = clip((r - floor) /
        (1 - floor), 0, 1), where r = sum_m a_m kept_m / sum_m a_m over the modalities of the complete row,
        kept_m = the share of modality m's valid steps the student's view still has (`kept_fraction`), and a_m =
        how much the frozen (or initial) teacher's validation loss grows when m is removed (for a method without
        one, the trained teacher given as `importance_model`; uniform without any). A row whose view keeps too little to recover the teacher's answer then learns from its label only
        (the published analogue is CMAD's missing-aware reweighting, ICCV 2025). None (default): every row counts.
    recoverability_fallback (`float`): with `recoverability_floor`, add `loss_fallback` = lambda * mean_i (1 - w_i)
        d_i, d_i the distance of the student's answer from the uninformed one (`neutral_distance`: squared error to
        the label scale's neutral point, or KL from the uniform distribution), averaged over the student views. A
        row that keeps too little of its input is then taught "I cannot tell" instead of the training split's label
        prior, which every distilled student otherwise picks up from the teacher's representations and answers
        (not from a paper; docs/methods.md#shared-machinery). Scaled like the distillation terms (start step,
        warm-up), never balanced. 0 (default): off.

    > Parameters that control the diagnostics

    diagnostics_steps (`int`): every N optimiser steps (and at step 0), on that step's first micro-batch: the
        gradient norm of every loss term at the student's parameters (`diag_grad_<term>`) and its ratio to the
        student's task-loss gradient (`diag_ratio_<term>`), representation norms (`diag_norm_*`), what the teacher
        predicts on the rows the student trains on (`diag_teacher_*`), and the method's own quantities (active
        negatives of contrastive terms, MI estimates above their zero-information value, ...). Logged with the
        loss terms and appended to `output_dir/diagnostics.jsonl`. Costs one extra backward pass per term on
        those steps only. 0 (default): off.
    """

    method: str = field(default="none", metadata={"help": "none, logit, corrkd, mmckd, mitr or crossmodal"})
    method_kwargs: dict | str | None = field(default=None, metadata={"help": "loss-module kwargs (dict or JSON)"})
    teacher_name_or_path: str | None = field(default=None, metadata={"help": "trained teacher checkpoint"})
    teacher_loss_weight: float = field(default=1.0, metadata={"help": "teacher task-loss weight (online/shared)"})
    backbone_learning_rate: float | None = field(default=5e-5, metadata={"help": "learning rate of pretrained backbones (None: learning_rate)"})
    students: str = field(default="shared", metadata={"help": "MM-CKD: shared or per_pattern"})
    auxiliary_modality: str | None = field(default=None, metadata={"help": "cross-modal KD: the auxiliary modality"})
    cache_teacher_outputs: bool = field(default=True, metadata={"help": "cache a frozen teacher's outputs"})
    distillation_start_step: int = field(default=0, metadata={"help": "training steps before the distillation terms join the loss"})
    distillation_warmup_steps: int = field(default=0, metadata={"help": "steps over which the distillation terms then ramp from 0 to their weights"})
    missing_protocol: str = field(default="p2", metadata={"help": "student training view: none, p1..p5"})
    missing_rate: float | None = field(default=None, metadata={"help": "P1/P3 drop rate or P4 missing rate"})
    eval_missing_protocol: str = field(default="p2", metadata={"help": "student view at evaluation"})
    eval_missing_rate: float | None = field(default=0.5, metadata={"help": "rate of the evaluation view"})
    eval_missing_availability: str | None = field(default=None, metadata={"help": "P3/P5 evaluation set, e.g. la"})
    missing_seed: int = field(default=1111, metadata={"help": "seed of the evaluation masks"})
    diagnostics_steps: int = field(default=0, metadata={"help": "every N training steps (and at step 0) log per-term gradient norms, representation norms and the method's diagnostics (diag_*); 0: off"})
    balance_terms: bool = field(default=False, metadata={"help": "scale each method term down so that its gradient at the student stays within balance_ratio x the task loss's"})
    balance_ratio: float = field(default=1.0, metadata={"help": "balance_terms: the largest gradient-norm ratio (term / task) a term keeps"})
    balance_steps: int = field(default=10, metadata={"help": "balance_terms: re-measure the ratios every N optimiser steps"})
    recoverability_floor: float | None = field(default=None, metadata={"help": "weight each row's distillation terms by clip((r - floor) / (1 - floor), 0, 1), r = the share of the complete input's information the student's view keeps; None: off"})
    recoverability_fallback: float = field(default=0.0, metadata={"help": "with recoverability_floor: weight of a term pulling each row's answer towards the neutral point by 1 - its recoverability weight; 0: off"})

    def __post_init__(self):
        # A multimodal collator needs every column; labels are named explicitly (find_labels would also pick
        # up any forward argument whose name contains "label").
        self.remove_unused_columns = False
        self.label_names = ["labels"]
        super().__post_init__()
        self.method = canonical_method(self.method)
        if isinstance(self.method_kwargs, str):
            try:
                self.method_kwargs = json.loads(self.method_kwargs) if self.method_kwargs.strip() else {}
            except json.JSONDecodeError as err:
                raise ValueError(f"method_kwargs is not valid JSON: {err}") from None
        self.method_kwargs = dict(self.method_kwargs or {})
        for name in ("distillation_start_step", "distillation_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.diagnostics_steps < 0:
            raise ValueError(f"diagnostics_steps must be >= 0, got {self.diagnostics_steps}")
        if self.balance_steps < 1:
            raise ValueError(f"balance_steps must be >= 1, got {self.balance_steps}")
        if not self.balance_ratio > 0:
            raise ValueError(f"balance_ratio must be > 0, got {self.balance_ratio}")
        if self.recoverability_floor is not None and not 0.0 <= self.recoverability_floor < 1.0:
            raise ValueError(f"recoverability_floor must lie in [0, 1), got {self.recoverability_floor}")
        if not self.recoverability_fallback >= 0:
            raise ValueError(f"recoverability_fallback must be >= 0, got {self.recoverability_fallback}")
        if self.recoverability_fallback > 0 and self.recoverability_floor is None:
            raise ValueError("recoverability_fallback needs recoverability_floor (the fallback is weighted by 1 - the "
                             "rows' recoverability weights)")
        if self.students not in ("shared", "per_pattern"):
            raise ValueError(f"students must be 'shared' or 'per_pattern', got {self.students!r}")
        if self.auxiliary_modality is not None and self.auxiliary_modality not in MODALITIES:
            raise ValueError(f"auxiliary_modality must be one of {MODALITIES}, got {self.auxiliary_modality!r}")


def concat_batches(batches: list[dict]) -> dict:
    """Stack several views of one batch along the batch axis (they share shapes) for a single forward."""
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0] if torch.is_tensor(batches[0][k])}


def split_output(output, n: int) -> list[dict]:
    """Undo `concat_batches` on a model output: n outputs as attribute-accessible dicts (without `loss`: a joint
    forward's loss is the mean over all n views, so each view's task loss is computed from its own rows)."""
    parts = [dict() for _ in range(n)]
    for name in OUTPUT_FIELDS:
        value = getattr(output, name, None)
        for i, chunk in enumerate(value.chunk(n) if torch.is_tensor(value) and value.ndim > 0 else [value] * n):
            parts[i][name] = chunk
    return [_Output(p) for p in parts]


def select_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The rows `rows` ((B,) bool) of a collated batch; every tensor in it is batch-first."""
    return {k: v[rows] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in batch.items()}


def auxiliary_model(teacher: nn.Module, modality: str) -> nn.Module:
    """Cross-modal KD's auxiliary model A (Chen et al., CVPR 2023): a separate model of `modality` alone, with the
    teacher's architecture for that modality and its encoder's weights as the starting point (a copy, not shared)."""
    config = teacher.config.to_dict()
    for m in MODALITIES:
        if m != modality:
            config[f"{m}_config"] = config[f"{m}_feature_dim"] = None
    config.update(role="student", student_modalities=[modality], pattern_embedding=False)
    model = type(teacher)(type(teacher.config).from_dict(config))
    model.mmkd.encoders[modality].load_state_dict(teacher.mmkd.encoders[modality].state_dict())
    return model


class _Output(dict):
    """A dict with attribute access, standing in for a model output (cached or split)."""

    __getattr__ = dict.get


def availability_patterns(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty proper subset of the model's modalities (P3's six sets for three modalities)."""
    return [c for k in range(1, len(modalities)) for c in combinations(modalities, k)]


def restrict_to_pattern(batch: dict, pattern: tuple[str, ...]) -> dict:
    """The batch as seen with only `pattern` available. Rows left with nothing keep their own modalities
    (e.g. ICT-MMMO training rows, which have no text, under the text-only pattern)."""
    keep = torch.tensor([m in pattern for m in MODALITIES], device=batch["modality_mask"].device)
    restricted = batch["modality_mask"] & keep
    empty = ~restricted.any(1, keepdim=True)
    return {**batch, "modality_mask": torch.where(empty, batch["modality_mask"], restricted)}


class MMKDDistillationModel(nn.Module):
    """What the Trainer optimises: student(s), the online teacher if any, and the method's parameters.

    `forward(teacher_batch, student_batches, teacher_out=None, term_scale=1.0)` returns
    `(loss, terms, first_student_output)` where `terms` holds the task loss(es) and the method's weighted terms,
    each a scalar (as logged, without the balancing scales), and loss = task losses + term_scale * sum_k s_k term_k
    (s_k: the per-term balancing scales, all 1 unless `balance_terms`).
    """

    def __init__(self, students: list[nn.Module], method: nn.Module, teacher: nn.Module | None = None,
                 teacher_loss_weight: float = 1.0, auxiliary_modality: str | None = None,
                 auxiliary: nn.Module | None = None):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.method = method
        self.teacher = teacher  # registered (so optimised and saved) only when it trains online
        self.teacher_loss_weight = teacher_loss_weight
        self.auxiliary_modality = auxiliary_modality
        self.auxiliary = auxiliary  # cross-modal KD's model A of the auxiliary modality alone (trained jointly)
        # Per-term balancing scales (MMKDTrainingArguments.balance_terms): log s_k, and whether they were set yet.
        self.register_buffer("log_term_scales", torch.zeros(len(method.term_names)))
        self.register_buffer("term_scales_set", torch.zeros((), dtype=torch.bool))

    def term_scales(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.method.term_names, self.log_term_scales.exp()))

    def _auxiliary_features(self, teacher_batch: dict, terms: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(f_A (B, fusion_dim) with zeros where a row lacks the auxiliary modality, (B,) bool rows that have it).

        A sees only the auxiliary modality of the complete batch and is trained on its own task loss
        (`loss_task_aux`), so that I(T; A) ties the teacher to a representation of that modality alone."""
        index = MODALITIES.index(self.auxiliary_modality)
        rows = teacher_batch["modality_mask"][:, index]  # (B,)
        if not bool(rows.any()):
            return None, rows
        only = torch.zeros_like(teacher_batch["modality_mask"])
        only[:, index] = True
        others = {k for m, keys in MODALITY_INPUT_KEYS.items() if m != self.auxiliary_modality for k in keys}
        view = select_rows({**teacher_batch, "modality_mask": only}, rows)
        out = self.auxiliary(**{k: v for k, v in model_inputs(view).items() if k not in others})
        if out.loss is not None:
            terms["loss_task_aux"] = out.loss
        features = out.fused.new_zeros(rows.shape[0], out.fused.shape[-1]).index_copy(0, rows.nonzero().squeeze(1),
                                                                                      out.fused)
        return features, rows

    @property
    def student(self) -> nn.Module:
        return self.students[0]

    def _run(self, model: nn.Module, batches: list[dict]) -> list:
        """One forward of `model` over several same-shaped views; each view's task loss over its own rows.

        Views that differ only in `modality_mask` (MM-CKD's pattern views of one simulated batch) go through
        `forward_views`: each modality is encoded once for all of them."""
        if len(batches) == 1:
            return [model(**model_inputs(batches[0]))]
        first = model_inputs(batches[0])
        if all(all(b.get(k) is v for k, v in first.items() if k != "modality_mask") for b in batches[1:]):
            first.pop("modality_mask", None)
            outs = model.forward_views([b["modality_mask"] for b in batches], **first)
            return [_Output({name: getattr(o, name, None) for name in OUTPUT_FIELDS + ("loss",)}) for o in outs]
        joint = model_inputs(concat_batches(batches))
        joint.pop("labels", None)
        outs = split_output(model(**joint), len(batches))
        for out, batch in zip(outs, batches):
            labels = batch.get("labels")
            out["loss"] = None if labels is None else model.compute_task_loss(out["logits"], labels)
        return outs

    def forward(self, teacher_batch: dict, student_batches: list[dict], teacher_out=None, term_scale: float = 1.0,
                row_weights: list[torch.Tensor] | None = None, fallback: float = 0.0):
        mode = self.method.teacher_mode
        terms = {}
        if mode == "shared":  # MITR-DNet: one weight-shared network over [complete; masked]
            outs = self._run(self.student, [teacher_batch] + student_batches)
            teacher_out, student_outs = outs[0], outs[1:]
        elif len(self.students) == 1:
            if mode == "online":
                teacher_out = self.teacher(**model_inputs(teacher_batch))
            student_outs = self._run(self.student, student_batches)
        else:  # one student per availability pattern
            if mode == "online":
                teacher_out = self.teacher(**model_inputs(teacher_batch))
            student_outs = [s(**model_inputs(b)) for s, b in zip(self.students, student_batches)]

        # Sum over the student views: MM-CKD's L = L_task(T) + sum_k L_task(S_k) + lambda L_MVSC (one view otherwise).
        terms["loss_task"] = torch.stack([o.loss for o in student_outs]).sum()
        if mode in ("online", "shared"):
            terms["loss_task_teacher"] = self.teacher_loss_weight * teacher_out.loss
        aux, aux_mask = None, None
        if self.method.needs_aux_features:
            aux, aux_mask = self._auxiliary_features(teacher_batch, terms)
        method_terms = self.method(teacher_out, student_outs, teacher_batch.get("labels"),
                                   teacher_batch=teacher_batch, student_batches=student_batches, aux_features=aux,
                                   aux_mask=aux_mask, row_weights=row_weights)
        if fallback > 0 and row_weights is not None:  # MMKDTrainingArguments.recoverability_fallback
            config = self.student.config
            method_terms["loss_fallback"] = fallback * torch.stack(
                [weighted_mean(neutral_distance(o.logits, config), 1.0 - w) for o, w in zip(student_outs, row_weights)]
            ).mean()
        loss = torch.stack(list(terms.values())).sum()
        if method_terms:
            scales = self.term_scales()
            loss = loss + term_scale * torch.stack([scales.get(k, 1.0) * v for k, v in method_terms.items()]).sum()
        terms.update(method_terms)
        self.last_outputs = dict(teacher_out=teacher_out, student_outs=student_outs, aux_features=aux,
                                 aux_mask=aux_mask)  # for the trainer's diagnostics (the graph is freed with them)
        return loss, terms, student_outs[0]


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


class TeacherOutputCache:
    """Per-row outputs of a frozen teacher on complete inputs, kept on the CPU.

    Rows are keyed by `row_key` (the collator's stable hash of the row id). Per-step sequences are stored trimmed to the
    row's valid length and padded again when a batch is assembled.
    """

    def __init__(self):
        self.rows: dict[int, dict] = {}
        self.computed = 0  # rows this process ran the teacher on (a share of them under several processes)

    def lookup(self, index: torch.Tensor, device) -> _Output | None:
        keys = index.tolist()
        if not all(k in self.rows for k in keys):
            return None
        out = {}
        for name in OUTPUT_FIELDS:
            values = [self.rows[k].get(name) for k in keys]
            if values[0] is None:
                out[name] = None
            elif name.endswith(("_sequence", "_step_mask")):
                length = max(v.shape[0] for v in values)
                out[name] = torch.stack([nn.functional.pad(v, (0, 0) * (v.ndim - 1) + (0, length - v.shape[0]))
                                         for v in values]).to(device)
            else:
                out[name] = torch.stack(values).to(device)
        return _Output(out)

    def store(self, index: torch.Tensor, output) -> None:
        for row, key in enumerate(index.tolist()):
            entry = {}
            for name in OUTPUT_FIELDS:
                value = getattr(output, name, None)
                if value is None:
                    continue
                value = value[row].detach().cpu()
                if name.endswith(("_sequence", "_step_mask")):
                    mask = getattr(output, name.rsplit("_", 2)[0] + "_step_mask")[row]
                    value = value[: int(mask.nonzero().max()) + 1 if mask.any() else 1]
                entry[name] = value
            self.rows[key] = entry


_SAVED_APART = ("students.", "teacher.")  # wrapper state kept in the student/ and teacher/ folders of a checkpoint


def _student_folder(wrapper, i: int) -> str:
    student = wrapper.students[i]
    return "student" if len(wrapper.students) == 1 else f"student_{'_'.join(student.config.student_modalities)}"


class MMKDTrainer(Trainer):
    """`Trainer` for a student distilled from a teacher under simulated missing modalities.

    Args:
        model: the student (`MMKDForSentiment`); for `students="per_pattern"` pass a list of students.
        teacher: the teacher model (frozen methods: a trained one; online methods: trained jointly).
        Remaining arguments are `Trainer`'s. The collator must emit `row_key` (`MMKDDataCollator(...,
        return_row_keys=True)`): evaluation masks and the teacher cache are keyed on it.
    """

    # compute_loss returns a mean over the micro-batch; Trainer divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model=None, args: MMKDTrainingArguments = None, teacher: nn.Module | None = None,
                 fold_teachers: list[nn.Module] | None = None, importance_model: nn.Module | None = None, **kwargs):
        students = list(model) if isinstance(model, (list, tuple)) else [model]
        student_config = students[0].config
        method = build_distillation_loss(args.method, student_config, **args.method_kwargs)
        mode = method.teacher_mode
        if mode in ("frozen", "online") and teacher is None:
            raise ValueError(f"method {args.method!r} needs a teacher (teacher_name_or_path)")
        auxiliary, aux_model = None, None
        if method.needs_aux_features:
            auxiliary = args.auxiliary_modality or student_config.modalities[-1]
            if auxiliary not in student_config.modalities:
                raise ValueError(f"auxiliary_modality {auxiliary!r} is not a modality of the model "
                                 f"({', '.join(student_config.modalities)})")
            aux_model = auxiliary_model(teacher, auxiliary)
        self.mmkd_method = args.method
        tokenizer = kwargs.get("processing_class")
        self._unk_token_id = getattr(tokenizer, "unk_token_id", None) or 100
        # Built now so that a bad protocol or rate fails before training starts.
        self._train_simulator(seed=args.seed, args=args)
        self.eval_simulator = MissingModalitySimulator(
            args.eval_missing_protocol, args.eval_missing_rate, availability=args.eval_missing_availability,
            training=False, seed=args.missing_seed, unk_token_id=self._unk_token_id,
        )
        self._draw = (-1, 0)  # (global step, micro-batch) of the last training draw
        wrapper = MMKDDistillationModel(
            students, method, teacher=teacher if mode == "online" else None,
            teacher_loss_weight=args.teacher_loss_weight, auxiliary_modality=auxiliary, auxiliary=aux_model,
        )
        self._frozen_teacher = teacher if mode == "frozen" else None
        self._teacher_cache = TeacherOutputCache() if (mode == "frozen" and args.cache_teacher_outputs) else None
        self._fold_teachers = list(fold_teachers or [])
        if self._fold_teachers:
            if mode != "frozen":
                raise ValueError(f"cross-fitted teachers serve frozen-teacher methods; {args.method!r} trains its "
                                 f"teacher {mode}")
            if self._teacher_cache is None:
                raise ValueError("cross-fitted teachers need cache_teacher_outputs (their outputs are cached per row)")
            if len(self._fold_teachers) < 2:
                raise ValueError(f"cross-fitting needs at least 2 fold teachers, got {len(self._fold_teachers)}")
            for fold in self._fold_teachers:
                fold.requires_grad_(False)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._diagnosed_step = self._balanced_step = -1
        self._importance = None
        self._importance_model = importance_model  # a trained model that measures modality importance when the
        # method has no frozen or online teacher (MITR-DNet's weight-shared one starts untrained)
        super().__init__(model=wrapper, args=args, **kwargs)
        if self._frozen_teacher is not None:
            self._frozen_teacher.requires_grad_(False)
            self._frozen_teacher = self.accelerator.prepare_model(self._frozen_teacher, evaluation_mode=True)

    # ------------------------------------------------------------------ views and teacher outputs

    def _train_simulator(self, seed: int | None, args: MMKDTrainingArguments | None = None):
        args = args or self.args
        return MissingModalitySimulator(args.missing_protocol, args.missing_rate, training=True, seed=seed,
                                        unk_token_id=self._unk_token_id)

    def _student_batches(self, inputs: dict, train: bool) -> list[dict]:
        wrapper = self.accelerator.unwrap_model(self.model)
        per_pattern = [tuple(s.config.student_modalities) for s in wrapper.students] if len(wrapper.students) > 1 else None
        if not train:  # the evaluation protocol's view (one view; each per-pattern student sees its part of it)
            view = self.eval_simulator(inputs)
            return [restrict_to_pattern(view, p) for p in per_pattern] if per_pattern else [view]
        if self.args.missing_protocol == "none":
            view = inputs
        else:
            # New masks at every call (so every epoch), from a seed fixed by (seed, step, micro-batch): a resumed
            # run draws exactly what the uninterrupted one drew. P1 keeps MMSA's fixed per-modality seeds.
            step = self.state.global_step
            self._draw = (step, self._draw[1] + 1 if self._draw[0] == step else 0)
            seed = None if self.args.missing_protocol == "p1" else (self.args.seed * 1_000_003 + step) * 64 + self._draw[1]
            view = self._train_simulator(seed)(inputs)
        if self.mmkd_method != "mmckd":
            return [view]
        # MVSC in training: one student view per availability pattern (MM-CKD's students), each with the training
        # protocol's drops; plus the protocol's own view when it has one, so that the pattern the evaluation
        # mostly sees (all modalities, some steps dropped, e.g. P2) is trained too.
        if per_pattern:
            return [restrict_to_pattern(view, p) for p in per_pattern]
        views = [restrict_to_pattern(view, p) for p in availability_patterns(wrapper.student.config.modalities)]
        return views if view is inputs else [*views, view]

    def fill_teacher_cache(self) -> None:
        """Run the frozen teacher once over the training set, in order, before training.

        With cross-fitted `fold_teachers` (K of them, fold k trained on every training row whose `row_key % K != k`),
        each row's cached logits come from the fold teacher that did not train on it (out-of-fold); the
        representations stay the full teacher's, one space for every row (the fold teachers' spaces differ).

        The cached values then do not depend on which batch a row first appeared in (the last bits of a forward
        pass depend on the batch's shape), so a resumed run, which refills the cache, matches exactly.

        With several processes, process k runs the teacher on rows k, k + N, k + 2N, ... only and the processes
        then exchange their outputs: each row is computed once in the whole job, and every process holds every
        row once (`TeacherOutputCache.computed` counts the rows this process computed).
        """
        if self._teacher_cache is None or self.train_dataset is None or self._teacher_cache.rows:
            return
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = self.train_dataset if world == 1 else torch.utils.data.Subset(
            self.train_dataset, range(rank, len(self.train_dataset), world))
        loader = torch.utils.data.DataLoader(share, batch_size=self.args.per_device_eval_batch_size,
                                             shuffle=False, collate_fn=self.data_collator)
        folds = [self.accelerator.prepare_model(f, evaluation_mode=True) for f in self._fold_teachers]
        for batch in loader:
            if "row_key" not in batch:
                raise ValueError("cache_teacher_outputs needs row keys: build the collator with return_row_keys=True")
            batch = teacher_view(self._prepare_inputs(batch))
            with torch.no_grad():
                out = self._frozen_teacher(**model_inputs(batch))
                if folds:  # cross-fitting: each row's response from the fold teacher that never trained on it
                    out = _Output({name: getattr(out, name, None) for name in OUTPUT_FIELDS})
                    fold_of = batch["row_key"] % len(folds)  # (B,) the fold each row belongs to (training.py)
                    for k, teacher in enumerate(folds):
                        rows = fold_of == k
                        if bool(rows.any()):
                            out["logits"] = out["logits"].index_copy(
                                0, rows.nonzero().squeeze(1), teacher(**model_inputs(select_rows(batch, rows))).logits)
                self._teacher_cache.store(batch["row_key"], out)
        self._teacher_cache.computed = len(self._teacher_cache.rows)
        if world > 1:
            from accelerate.utils import gather_object

            for part in gather_object([self._teacher_cache.rows]):
                self._teacher_cache.rows.update(part)
        logger.info("teacher outputs cached: %d training rows held, %d computed by process %d of %d",
                    len(self._teacher_cache.rows), self._teacher_cache.computed, rank, world)

    def train(self, *args, **kwargs):
        self.fill_teacher_cache()
        return super().train(*args, **kwargs)

    def _frozen_teacher_outputs(self, inputs: dict, train: bool):
        index = inputs.get("row_key")
        use_cache = train and self._teacher_cache is not None and index is not None
        if use_cache:
            cached = self._teacher_cache.lookup(index, inputs["modality_mask"].device)
            if cached is not None:
                return cached
        with torch.no_grad():
            out = self._frozen_teacher(**model_inputs(inputs))
        if use_cache:
            self._teacher_cache.store(index, out)
        return out

    # ------------------------------------------------------------------ loss, evaluation, logging

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        train = model.training
        student_batches = self._student_batches(inputs, train)
        teacher_out = None
        teacher_batch = teacher_view(inputs)  # the teacher's own text ids, when it tokenises differently
        if self._frozen_teacher is not None:
            teacher_out = self._frozen_teacher_outputs(teacher_batch, train)
        term_scale = self.distillation_scale() if train else 1.0
        row_weights = self._row_weights(inputs, student_batches)
        loss, terms, student_out = model(teacher_batch=teacher_batch, student_batches=student_batches,
                                         teacher_out=teacher_out, term_scale=term_scale, row_weights=row_weights,
                                         fallback=self.args.recoverability_fallback)
        split = "train" if train else "eval"
        for name, value in terms.items():
            self._metrics[split][name].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
        wrapper = self.accelerator.unwrap_model(model)
        if train and self._diagnostics_due():
            self._record_diagnostics(wrapper, terms, inputs, student_batches)
        if train and term_scale > 0 and self._balance_due():
            self._update_term_scales(wrapper, terms)
        wrapper.last_outputs = None
        return (loss, student_out) if return_outputs else loss

    # ------------------------------------------------------------------ shaping the distillation terms

    def _balance_due(self) -> bool:
        """On the first micro-batch of every `balance_steps`-th optimiser step once the terms are active."""
        if not self.args.balance_terms or not self.accelerator.unwrap_model(self.model).method.term_names:
            return False
        step = self.state.global_step
        if step % self.args.balance_steps or self._balanced_step == step:
            return False
        self._balanced_step = step
        return True

    def _update_term_scales(self, wrapper, terms: dict) -> None:
        """Move each term's scale towards keeping its gradient ratio to the task loss at most `balance_ratio`."""
        high = self.args.balance_ratio
        params = [p for p in wrapper.student.parameters() if p.requires_grad]
        task = _grad_norm(terms["loss_task"], params)
        ratios = torch.tensor([_grad_norm(terms[k], params) / task if task > 0 and k in terms else float("nan")
                               for k in wrapper.method.term_names])
        ratios = self.accelerator.reduce(ratios.to(self.args.device), reduction="mean").cpu()  # same on every rank
        current = wrapper.log_term_scales.exp().cpu()
        wanted = (high / ratios).clamp(max=1.0)  # only ever scale down (see `balance_terms`)
        wanted = torch.where(torch.isfinite(wanted), wanted, current).clamp(1e-3, 1.0).log()
        with torch.no_grad():
            if bool(wrapper.term_scales_set):
                wanted = 0.5 * (wrapper.log_term_scales.cpu() + wanted)
            wrapper.log_term_scales.copy_(wanted.to(wrapper.log_term_scales))
            wrapper.term_scales_set.fill_(True)
        for name, value in wrapper.term_scales().items():
            self._metrics["train"][f"scale_{name}"].append(float(value))

    def _row_weights(self, inputs: dict, student_batches: list[dict]) -> list[torch.Tensor] | None:
        """Per student view, (B,) recoverability weights (see `recoverability_floor`), or None when off."""
        floor = self.args.recoverability_floor
        if floor is None:
            return None
        importance = self.modality_importance()
        weights = []
        for view in student_batches:
            kept = kept_fraction(inputs, view)  # (B, 3)
            had = inputs["modality_mask"].cpu().float() * importance  # (B, 3)
            r = (kept * had).sum(1) / had.sum(1).clamp_min(1e-12)  # (B,)
            weights.append(((r - floor) / (1.0 - floor)).clamp(0.0, 1.0).to(inputs["modality_mask"].device))
        return weights

    def modality_importance(self) -> torch.Tensor:
        """(3,) a_m: how much the teacher's validation task loss grows when modality m alone is removed
        (normalised to sum 1 over the model's modalities; uniform without a teacher or validation data).
        Measured once, on at most 256 validation rows, with complete inputs otherwise."""
        if self._importance is not None:
            return self._importance
        wrapper = self.accelerator.unwrap_model(self.model)
        teacher = self._frozen_teacher or wrapper.teacher or self._importance_model
        if teacher is not None and teacher is self._importance_model:
            teacher = teacher.to(self.args.device)
        modalities = wrapper.student.config.modalities
        have = torch.tensor([float(m in modalities) for m in MODALITIES])
        importance = have / have.sum()
        if teacher is not None and self.eval_dataset is not None and len(modalities) > 1:
            rows = [self.eval_dataset[i] for i in range(min(256, len(self.eval_dataset)))]
            batch = teacher_view(self._prepare_inputs(self.data_collator(rows)))
            was_training = teacher.training
            teacher.eval()
            with torch.no_grad():
                base = teacher(**model_inputs(batch)).loss.item()
                growth = torch.zeros(len(MODALITIES))
                for i, m in enumerate(MODALITIES):
                    if m not in modalities:
                        continue
                    mask = batch["modality_mask"].clone()
                    mask[:, i] = False
                    keep = mask.any(1)  # rows left with another modality
                    if not bool(keep.any()):
                        continue
                    view = select_rows({**batch, "modality_mask": mask}, keep)
                    growth[i] = max(teacher(**model_inputs(view)).loss.item() - base, 0.0)
            teacher.train(was_training)
            if growth.sum() > 0:
                importance = growth / growth.sum()
        self._importance = importance
        logger.info("modality importance (teacher validation loss growth when removed): %s",
                    dict(zip(MODALITIES, importance.tolist())))
        return importance

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

    def distillation_scale(self) -> float:
        """Weight of the method's terms at the current training step (see `distillation_start_step`)."""
        step = self.state.global_step - self.args.distillation_start_step
        if self.args.distillation_warmup_steps == 0:
            return float(step >= 0)
        return min(1.0, max(0.0, step / self.args.distillation_warmup_steps))

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, student_out = self.compute_loss(model, inputs, return_outputs=True)
        logits = None if prediction_loss_only else student_out.logits.detach()
        return loss.detach(), logits, inputs.get("labels")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "train" if self.model.training else "eval"
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[split].items() if v}
        if split == "eval":
            averaged = {f"eval_{k}": v for k, v in averaged.items()}
        logs.update(averaged)
        super().log(logs, start_time)
        self._metrics[split].clear()

    def create_optimizer(self, model=None):
        """Trainer's optimiser, with the backbones' parameters moved to groups at `backbone_learning_rate`."""
        optimizer = super().create_optimizer(model)
        if self.args.backbone_learning_rate is None:
            return optimizer
        model = self.model if model is None else model
        backbone = {id(p) for n, p in model.named_parameters() if ".backbone." in n}
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in backbone]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in backbone]
                settings = {k: v for k, v in group.items() if k != "params"}
                optimizer.add_param_group({**settings, "params": moved, "lr": self.args.backbone_learning_rate})
        return optimizer

    # ------------------------------------------------------------------ saving

    def _save(self, output_dir: str | None = None, state_dict=None):
        """One copy of the weights per checkpoint: `student/` (and `teacher/`) as Hub checkpoints, and in the
        checkpoint's own `model.safetensors` only the rest of the optimised module (the method's parameters)."""
        output_dir = output_dir or self.args.output_dir
        wrapper = self.accelerator.unwrap_model(self.model)
        state_dict = wrapper.state_dict() if state_dict is None else state_dict
        super()._save(output_dir, state_dict={k: v for k, v in state_dict.items() if not k.startswith(_SAVED_APART)})
        if not self.args.should_save:
            return
        for i, student in enumerate(wrapper.students):
            student.save_pretrained(os.path.join(output_dir, _student_folder(wrapper, i)))
        if wrapper.teacher is not None:
            wrapper.teacher.save_pretrained(os.path.join(output_dir, "teacher"))

    def _load_wrapper_state(self, checkpoint: str, model=None) -> None:
        """Rebuild the whole module's state from a checkpoint written by `_save` (the method's parameters from
        `model.safetensors`, students and teacher from their folders); strict, so nothing is silently left out."""
        from safetensors.torch import load_file

        model = self.accelerator.unwrap_model(self.model if model is None else model)
        state = load_file(os.path.join(checkpoint, "model.safetensors"), device="cpu")
        if any(k.startswith(_SAVED_APART) for k in state):  # a checkpoint saved before this layout: all in one file
            model.load_state_dict(state, strict=True)
            return
        for i in range(len(model.students)):
            part = load_file(os.path.join(checkpoint, _student_folder(model, i), "model.safetensors"), device="cpu")
            state.update({f"students.{i}.{k}": v for k, v in part.items()})
        if model.teacher is not None:
            part = load_file(os.path.join(checkpoint, "teacher", "model.safetensors"), device="cpu")
            state.update({f"teacher.{k}": v for k, v in part.items()})
        model.load_state_dict(state, strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        self._load_wrapper_state(resume_from_checkpoint, model)

    def _load_best_model(self):
        self._load_wrapper_state(self.state.best_model_checkpoint)

    @property
    def student(self) -> Any:
        return self.accelerator.unwrap_model(self.model).student
