"""`MMKDTrainer`: the Trainer of the distillation (see the package docstring); its views, teacher outputs,
term shaping and diagnostics are mixins beside it."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from hf_mmkd.data.missing import MissingModalitySimulator, teacher_view
from hf_mmkd.distillation import build_distillation_loss
from hf_mmkd.trainer.arguments import MMKDTrainingArguments
from hf_mmkd.trainer.diagnostics import Diagnostics
from hf_mmkd.trainer.shaping import TermShaping
from hf_mmkd.trainer.teacher_outputs import FrozenTeacherOutputs, TeacherOutputCache
from hf_mmkd.trainer.views import StudentViews
from hf_mmkd.trainer.wrapper import MMKDDistillationModel, auxiliary_model

_SAVED_APART = ("students.", "teacher.")  # wrapper state kept in the student/ and teacher/ folders of a checkpoint


def _student_folder(wrapper, i: int) -> str:
    student = wrapper.students[i]
    return "student" if len(wrapper.students) == 1 else f"student_{'_'.join(student.config.student_modalities)}"


class MMKDTrainer(StudentViews, FrozenTeacherOutputs, TermShaping, Diagnostics, Trainer):
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
            response_weight=args.response_weight,
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

    # ------------------------------------------------------------------ training, loss, evaluation, logging

    def train(self, *args, **kwargs):
        self.fill_teacher_cache()  # teacher_outputs.FrozenTeacherOutputs: once, before the first step
        return super().train(*args, **kwargs)

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

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate` under the evaluation view; with `eval_missing_rates`, once per rate, plus the mean of
        every metric over the rates under the plain keys (`eval_<metric>`: what model selection reads)."""
        rates = self.args.eval_missing_rates
        if not rates:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        per_rate = [self.evaluate_view(self.eval_view(rate), eval_dataset, ignore_keys,
                                       f"{metric_key_prefix}_r{rate:g}") for rate in rates]
        means, first = {}, f"{metric_key_prefix}_r{rates[0]:g}_"
        for name in per_rate[0]:
            metric = name[len(first):]  # eval_r0.5_MAE -> MAE
            if not name.startswith(first) or metric in ("runtime", "samples_per_second", "steps_per_second"):
                continue
            values = [m.get(f"{metric_key_prefix}_r{rate:g}_{metric}") for m, rate in zip(per_rate, rates)]
            if all(isinstance(v, (int, float)) for v in values):
                means[f"{metric_key_prefix}_{metric}"] = float(sum(values) / len(values))
        self.log(dict(means))
        return {k: v for m in per_rate for k, v in m.items()} | means

    def evaluate_view(self, simulator: MissingModalitySimulator, eval_dataset=None, ignore_keys=None,
                      metric_key_prefix: str = "eval") -> dict[str, float]:
        """One `Trainer.evaluate` under `simulator` (the evaluation view restored afterwards)."""
        saved, self.eval_simulator = self.eval_simulator, simulator
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self.eval_simulator = saved

    def eval_view(self, rate: float, protocol: str | None = None) -> MissingModalitySimulator:
        """The deterministic evaluation view of `protocol` (default: `eval_missing_protocol`) at `rate`, with this
        run's mask seed and unknown-token id."""
        return MissingModalitySimulator(protocol or self.args.eval_missing_protocol, rate, training=False,
                                        seed=self.args.missing_seed, unk_token_id=self._unk_token_id)

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
