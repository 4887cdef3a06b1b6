"""`MMKDTrainingArguments`: `TrainingArguments` plus what distillation needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_mmkd.distillation import canonical_method
from hf_mmkd.modeling.configuration_mmkd import MODALITIES


def rate_list(name: str, value) -> list[float]:
    """A list-of-rates argument (a bare number counts as a list of one) as floats, each in [0, 1]."""
    rates = [value] if isinstance(value, (int, float)) else list(value)
    if not rates or any(not 0.0 <= float(r) <= 1.0 for r in rates):
        raise ValueError(f"{name} must be a non-empty list of rates in [0, 1], got {rates!r}")
    return [float(r) for r in rates]


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
    eval_missing_rates (`list[float]`): P1/P2 only: evaluate at each of these rates instead of `eval_missing_rate`;
        each rate's metrics are logged as `eval_r<rate>_<metric>` and their mean over the rates as `eval_<metric>`,
        which is what `metric_for_best_model` selects on. Not from the papers (LNLN validates at r = 0.5 alone): on
        CMU-MOSI's 229 validation rows, r = 0.5 under one mask selected the first of four epochs of a CorrKD student,
        whose complete-input validation MAE was 1.10 (docs/methods.md#shared-machinery).
    train_missing_rates (`list[float]`): P2 training only: each training row's view drops every modality's steps at
        one rate drawn uniformly from this list (the evaluation's mixture over r when it is `eval_missing_rates`),
        instead of LNLN's draw (per modality r ~ U(0, 1), half of the modalities of every row kept whole, so a
        mean rate of 0.25 against the 0.45 the P2 benchmark averages over). Not from the papers.
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
    response_weight (`float`): add `loss_response` = weight * the logit-KD term (`LogitKD`: MSE between the student's
        and the detached teacher's answers for regression, T^2 KL for classes) to a method that has a teacher
        (frozen, online or shared), each row weighted by its recoverability weight when `recoverability_floor` is
        set. CorrKD and MM-CKD distil representations only; nothing then ties a student's answer on a row that
        keeps little of its input to the teacher's answer on the complete row, and on CMU-MOSI their students'
        answers drifted to one sign at high missing rates (docs/methods.md#shared-machinery). Scaled like the
        distillation terms (start step, warm-up), never balanced. 0 (default): off; not for `none` or `logit`.

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
    eval_missing_rates: list[float] | None = field(default=None, metadata={"help": "P1/P2: evaluate at each of these rates; eval_<metric> is their mean (model selection)"})
    eval_missing_availability: str | None = field(default=None, metadata={"help": "P3/P5 evaluation set, e.g. la"})
    train_missing_rates: list[float] | None = field(default=None, metadata={"help": "P2 training: each row drops every modality at one rate drawn from these (default: LNLN's draw)"})
    missing_seed: int = field(default=1111, metadata={"help": "seed of the evaluation masks"})
    diagnostics_steps: int = field(default=0, metadata={"help": "every N training steps (and at step 0) log per-term gradient norms, representation norms and the method's diagnostics (diag_*); 0: off"})
    balance_terms: bool = field(default=False, metadata={"help": "scale each method term down so that its gradient at the student stays within balance_ratio x the task loss's"})
    balance_ratio: float = field(default=1.0, metadata={"help": "balance_terms: the largest gradient-norm ratio (term / task) a term keeps"})
    balance_steps: int = field(default=10, metadata={"help": "balance_terms: re-measure the ratios every N optimiser steps"})
    recoverability_floor: float | None = field(default=None, metadata={"help": "weight each row's distillation terms by clip((r - floor) / (1 - floor), 0, 1), r = the share of the complete input's information the student's view keeps; None: off"})
    response_weight: float = field(default=0.0, metadata={"help": "weight of a logit-KD term (student answer vs the detached teacher's) added to a method with a teacher; 0: off"})
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
        if not self.response_weight >= 0:
            raise ValueError(f"response_weight must be >= 0, got {self.response_weight}")
        if self.response_weight > 0 and self.method in ("none", "logit"):
            raise ValueError(f"response_weight adds the logit-KD term to another method; method {self.method!r} "
                             f"{'has no teacher' if self.method == 'none' else 'is that term already'}")
        if self.eval_missing_rates is not None:
            self.eval_missing_rates = rate_list("eval_missing_rates", self.eval_missing_rates)
            if str(self.eval_missing_protocol).lower() not in ("p1", "p2"):
                raise ValueError(f"eval_missing_rates is for rate protocols (p1, p2); eval_missing_protocol is "
                                 f"{self.eval_missing_protocol!r}")
        if self.train_missing_rates is not None:
            self.train_missing_rates = rate_list("train_missing_rates", self.train_missing_rates)
            if str(self.missing_protocol).lower() != "p2":
                raise ValueError(f"train_missing_rates is P2's training draw; missing_protocol is "
                                 f"{self.missing_protocol!r}")
        if self.students not in ("shared", "per_pattern"):
            raise ValueError(f"students must be 'shared' or 'per_pattern', got {self.students!r}")
        if self.auxiliary_modality is not None and self.auxiliary_modality not in MODALITIES:
            raise ValueError(f"auxiliary_modality must be one of {MODALITIES}, got {self.auxiliary_modality!r}")
