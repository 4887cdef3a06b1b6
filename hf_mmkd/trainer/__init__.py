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

The package, one module per concern:
    arguments        MMKDTrainingArguments
    wrapper          MMKDDistillationModel and the helpers that run several views in one forward
    trainer          MMKDTrainer: compute_loss, evaluation, logging, the optimiser, saving and resuming
    views            the student's view(s) of a batch (training and evaluation protocols, MM-CKD's patterns)
    teacher_outputs  a frozen teacher's outputs, cached per training row (and cross-fitted folds)
    shaping          warm-up, per-term balancing scales, recoverability weights, modality importance
    diagnostics      what explains a run (diagnostics_steps)
"""

from hf_mmkd.trainer.arguments import MMKDTrainingArguments
from hf_mmkd.trainer.diagnostics import diagnostics
from hf_mmkd.trainer.teacher_outputs import TeacherOutputCache
from hf_mmkd.trainer.trainer import MMKDTrainer
from hf_mmkd.trainer.views import availability_patterns, restrict_to_pattern
from hf_mmkd.trainer.wrapper import (
    MODALITY_INPUT_KEYS,
    OUTPUT_FIELDS,
    MMKDDistillationModel,
    auxiliary_model,
    concat_batches,
    select_rows,
    split_output,
)

__all__ = [
    "MODALITY_INPUT_KEYS",
    "OUTPUT_FIELDS",
    "MMKDDistillationModel",
    "MMKDTrainer",
    "MMKDTrainingArguments",
    "TeacherOutputCache",
    "auxiliary_model",
    "availability_patterns",
    "concat_batches",
    "diagnostics",
    "restrict_to_pattern",
    "select_rows",
    "split_output",
]
