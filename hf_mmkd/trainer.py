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
import os
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from hf_mmkd.data.missing import MissingModalitySimulator, model_inputs
from hf_mmkd.distillation import build_distillation_loss, canonical_method
from hf_mmkd.modeling.configuration_mmkd import MODALITIES

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
        if self.students not in ("shared", "per_pattern"):
            raise ValueError(f"students must be 'shared' or 'per_pattern', got {self.students!r}")
        if self.auxiliary_modality is not None and self.auxiliary_modality not in MODALITIES:
            raise ValueError(f"auxiliary_modality must be one of {MODALITIES}, got {self.auxiliary_modality!r}")


def concat_batches(batches: list[dict]) -> dict:
    """Stack several views of one batch along the batch axis (they share shapes) for a single forward."""
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0] if torch.is_tensor(batches[0][k])}


def split_output(output, n: int) -> list[dict]:
    """Undo `concat_batches` on a model output: n outputs as attribute-accessible dicts."""
    parts = [dict() for _ in range(n)]
    for name in OUTPUT_FIELDS + ("loss",):
        value = getattr(output, name, None)
        for i, chunk in enumerate(value.chunk(n) if torch.is_tensor(value) and value.ndim > 0 else [value] * n):
            parts[i][name] = chunk
    return [_Output(p) for p in parts]


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
    each a scalar (as logged), and loss = task losses + term_scale * method terms.
    """

    def __init__(self, students: list[nn.Module], method: nn.Module, teacher: nn.Module | None = None,
                 teacher_loss_weight: float = 1.0, auxiliary_modality: str | None = None):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.method = method
        self.teacher = teacher  # registered (so optimised and saved) only when it trains online
        self.teacher_loss_weight = teacher_loss_weight
        self.auxiliary_modality = auxiliary_modality

    @property
    def student(self) -> nn.Module:
        return self.students[0]

    def _run(self, model: nn.Module, batches: list[dict]) -> list:
        """One forward of `model` over several same-shaped views."""
        if len(batches) == 1:
            return [model(**model_inputs(batches[0]))]
        return split_output(model(**model_inputs(concat_batches(batches))), len(batches))

    def forward(self, teacher_batch: dict, student_batches: list[dict], teacher_out=None, term_scale: float = 1.0):
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

        terms["loss_task"] = torch.stack([o.loss for o in student_outs]).mean()
        if mode in ("online", "shared"):
            terms["loss_task_teacher"] = self.teacher_loss_weight * teacher_out.loss
        aux = None
        if self.method.needs_aux_features:
            aux = getattr(teacher_out, f"{self.auxiliary_modality}_pooled")
        method_terms = self.method(teacher_out, student_outs, teacher_batch.get("labels"),
                                   teacher_batch=teacher_batch, student_batches=student_batches, aux_features=aux)
        loss = torch.stack(list(terms.values())).sum()
        if method_terms:
            loss = loss + term_scale * torch.stack(list(method_terms.values())).sum()
        terms.update(method_terms)
        return loss, terms, student_outs[0]


class TeacherOutputCache:
    """Per-row outputs of a frozen teacher on complete inputs, kept on the CPU.

    Rows are keyed by `row_key` (the collator's stable hash of the row id). Per-step sequences are stored trimmed to the
    row's valid length and padded again when a batch is assembled.
    """

    def __init__(self):
        self.rows: dict[int, dict] = {}

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

    def __init__(self, model=None, args: MMKDTrainingArguments = None, teacher: nn.Module | None = None, **kwargs):
        students = list(model) if isinstance(model, (list, tuple)) else [model]
        student_config = students[0].config
        method = build_distillation_loss(args.method, student_config, **args.method_kwargs)
        mode = method.teacher_mode
        if mode in ("frozen", "online") and teacher is None:
            raise ValueError(f"method {args.method!r} needs a teacher (teacher_name_or_path)")
        auxiliary = None
        if method.needs_aux_features:
            auxiliary = args.auxiliary_modality or student_config.modalities[-1]
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
            teacher_loss_weight=args.teacher_loss_weight, auxiliary_modality=auxiliary,
        )
        self._frozen_teacher = teacher if mode == "frozen" else None
        self._teacher_cache = TeacherOutputCache() if (mode == "frozen" and args.cache_teacher_outputs) else None
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
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

        The cached values then do not depend on which batch a row first appeared in (the last bits of a forward
        pass depend on the batch's shape), so a resumed run, which refills the cache, matches exactly.
        """
        if self._teacher_cache is None or self.train_dataset is None or self._teacher_cache.rows:
            return
        loader = torch.utils.data.DataLoader(self.train_dataset, batch_size=self.args.per_device_eval_batch_size,
                                             shuffle=False, collate_fn=self.data_collator)
        for batch in loader:
            if "row_key" not in batch:
                raise ValueError("cache_teacher_outputs needs row keys: build the collator with return_row_keys=True")
            batch = self._prepare_inputs(batch)
            with torch.no_grad():
                self._teacher_cache.store(batch["row_key"], self._frozen_teacher(**model_inputs(batch)))

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
        if self._frozen_teacher is not None:
            teacher_out = self._frozen_teacher_outputs(inputs, train)
        term_scale = self.distillation_scale() if train else 1.0
        loss, terms, student_out = model(teacher_batch=inputs, student_batches=student_batches,
                                         teacher_out=teacher_out, term_scale=term_scale)
        split = "train" if train else "eval"
        for name, value in terms.items():
            self._metrics[split][name].append(self.accelerator.gather_for_metrics(value.detach()).mean().item())
        return (loss, student_out) if return_outputs else loss

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
