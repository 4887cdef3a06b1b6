"""`MMKDDistillationModel`: what the Trainer optimises (student(s), an online teacher, the method's
parameters), and the helpers that run several views of a batch in one forward."""

from __future__ import annotations

import torch
from torch import nn

from hf_mmkd.data.missing import model_inputs
from hf_mmkd.distillation.base import neutral_distance, weighted_mean
from hf_mmkd.distillation.baselines import LogitKD
from hf_mmkd.modeling.configuration_mmkd import MODALITIES

MODALITY_INPUT_KEYS = {  # the forward inputs of each modality (feature and backbone encoders)
    "text": ("text_features", "text_lengths", "input_ids", "attention_mask", "text_dropped"),
    "audio": ("audio_features", "audio_lengths", "input_values", "audio_attention_mask", "audio_dropped"),
    "vision": ("vision_features", "vision_lengths", "pixel_values", "frame_mask", "vision_dropped"),
}


OUTPUT_FIELDS = ("logits", "fused", "modality_mask") + tuple(
    f"{m}_{k}" for m in MODALITIES for k in ("pooled", "sequence", "step_mask")
)


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


class MMKDDistillationModel(nn.Module):
    """What the Trainer optimises: student(s), the online teacher if any, and the method's parameters.

    `forward(teacher_batch, student_batches, teacher_out=None, term_scale=1.0)` returns
    `(loss, terms, first_student_output)` where `terms` holds the task loss(es) and the method's weighted terms,
    each a scalar (as logged, without the balancing scales), and loss = task losses + term_scale * sum_k s_k term_k
    (s_k: the per-term balancing scales, all 1 unless `balance_terms`; 1 for the fallback and response terms).
    `response_weight` > 0 adds `loss_response`, the logit-KD term between each student view and the (detached)
    teacher output (MMKDTrainingArguments.response_weight).
    """

    def __init__(self, students: list[nn.Module], method: nn.Module, teacher: nn.Module | None = None,
                 teacher_loss_weight: float = 1.0, auxiliary_modality: str | None = None,
                 auxiliary: nn.Module | None = None, response_weight: float = 0.0):
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
        self.response = LogitKD(students[0].config, weight=response_weight) if response_weight > 0 else None

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
        if self.response is not None:  # MMKDTrainingArguments.response_weight
            method_terms["loss_response"] = self.response(teacher_out, student_outs, teacher_batch.get("labels"),
                                                          row_weights=row_weights)["loss_logit"]
        loss = torch.stack(list(terms.values())).sum()
        if method_terms:
            scales = self.term_scales()
            loss = loss + term_scale * torch.stack([scales.get(k, 1.0) * v for k, v in method_terms.items()]).sum()
        terms.update(method_terms)
        self.last_outputs = dict(teacher_out=teacher_out, student_outs=student_outs, aux_features=aux,
                                 aux_mask=aux_mask)  # for the trainer's diagnostics (the graph is freed with them)
        return loss, terms, student_outs[0]
