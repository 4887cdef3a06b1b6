"""Configuration of hf_mmkd models (shipped to the Hub as remote code).

Imports only the standard library and transformers, so that `trust_remote_code=True` works for users
who do not have hf_mmkd installed.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PretrainedConfig

MODALITIES = ("text", "audio", "vision")
ENCODER_KINDS = ("backbone", "features")
TEMPORAL_ENCODERS = ("transformer", "mib_trl")
FUSIONS = ("concat", "attention")
TASKS = ("regression", "classification")
ROLES = ("teacher", "student")
PIPELINE_TASK = "multimodal-sentiment"  # the task of the shipped pipeline (pipeline_mmkd.py)


def _as_sub_config(value, name: str):
    """Accept a `PretrainedConfig`, its `to_dict()` (from config.json) or None."""
    if value is None or isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        value = dict(value)
        model_type = value.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"{name} is a dict without 'model_type'; cannot tell which backbone it describes")
        return AutoConfig.for_model(model_type, **value)
    raise ValueError(f"{name} must be a transformers config, a dict or None, got {type(value).__name__}")


class MMKDConfig(PretrainedConfig):
    r"""Configuration of a multimodal sentiment model whose modalities may be missing.

    Each modality (text, audio, vision) has at most one encoder, of one of two kinds:

    - **backbone**: a transformers sub-config (`text_config`: BERT family; `audio_config`: wav2vec2 / HuBERT /
      WavLM on 16 kHz waveforms; `vision_config`: ViT applied frame by frame, then a small temporal encoder
      over the frame vectors);
    - **features**: a pre-extracted feature sequence of width `<modality>_feature_dim` (GloVe 300, COVAREP 74,
      Facet 35, openSMILE 73, ...), encoded as in CorrKD by Conv1d(k=3) + sinusoidal positions + Transformer.

    A modality with neither is not part of the model. Giving both for one modality is an error.

    Args:
        text_config / audio_config / vision_config: backbone sub-configs (or their dicts), or None.
        text_feature_dim / audio_feature_dim / vision_feature_dim: input width of feature sequences, or None.
        hidden_size: width `d` of every per-modality representation (CorrKD uses 40).
        num_encoder_layers / num_attention_heads / intermediate_size: the feature / temporal Transformer.
        temporal_encoder: `"transformer"`, or `"mib_trl"` to add MITR-DNet's modality-invariant bidirectional
            temporal block (forward + time-reversed gated dilated causal convolutions) after each encoder.
        mib_filters / mib_dilations / mib_kernel_size: size of the MIB-TRL block (MITR-DNet: 25, (1, 2, 4, 8)).
        fusion: `"concat"` (MLP over the concatenated pooled vectors, CorrKD-style) or `"attention"` (a
            Transformer layer over one token per modality plus a fusion token).
        fusion_dim: width of the fused vector.
        pattern_embedding: add a learned embedding of the row's availability pattern to the fused vector (one
            shared student for every pattern, MM-CKD's alternative to one student per pattern).
        dropout: dropout in encoders and fusion; head_dropout: before the output layer.
        task: `"regression"` (1 output, MMSA's L1 or MSE loss) or `"classification"` (`num_labels` outputs, CE).
        regression_loss: `"l1"` (MMSA default) or `"mse"`.
        role: `"teacher"` or `"student"`; distillation_method: the method that produced the checkpoint, if any.
        student_modalities: for a student trained for one availability pattern, that pattern (list of names).
        feature_standardization: per-modality `{"mean": [...], "std": [...]}` fitted on the training split;
            the data pipeline and processor apply it so that inference sees what training saw.
        dataset_spec: the data-set spec of the training data (`hf_mmkd.data.spec.DatasetSpec.to_dict()`: name,
            task, label range and neutral band or class names, modalities, source), or None. Cards, `predict`
            and pipelines read what the labels mean from here.
    """

    model_type = "mmkd"
    sub_configs = {"text_config": AutoConfig, "audio_config": AutoConfig, "vision_config": AutoConfig}

    def __init__(
        self,
        text_config=None,
        audio_config=None,
        vision_config=None,
        text_feature_dim: int | None = None,
        audio_feature_dim: int | None = None,
        vision_feature_dim: int | None = None,
        hidden_size: int = 64,
        num_encoder_layers: int = 1,
        num_attention_heads: int = 4,
        intermediate_size: int | None = None,
        temporal_encoder: str = "transformer",
        mib_filters: int = 25,
        mib_dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8),
        mib_kernel_size: int = 2,
        fusion: str = "concat",
        fusion_dim: int | None = None,
        pattern_embedding: bool = False,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
        initializer_range: float = 0.02,
        task: str = "regression",
        regression_loss: str = "l1",
        role: str = "teacher",
        distillation_method: str | None = None,
        student_modalities: list[str] | None = None,
        feature_standardization: dict | None = None,
        dataset_spec: dict | None = None,
        **kwargs,
    ):
        self.text_config = _as_sub_config(text_config, "text_config")
        self.audio_config = _as_sub_config(audio_config, "audio_config")
        self.vision_config = _as_sub_config(vision_config, "vision_config")
        self.text_feature_dim = text_feature_dim
        self.audio_feature_dim = audio_feature_dim
        self.vision_feature_dim = vision_feature_dim
        self.hidden_size = hidden_size
        self.num_encoder_layers = num_encoder_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size if intermediate_size is not None else 4 * hidden_size
        self.temporal_encoder = temporal_encoder
        self.mib_filters = mib_filters
        self.mib_dilations = list(mib_dilations)
        self.mib_kernel_size = mib_kernel_size
        self.fusion = fusion
        self.fusion_dim = fusion_dim if fusion_dim is not None else hidden_size
        self.pattern_embedding = pattern_embedding
        self.dropout = dropout
        self.head_dropout = head_dropout
        self.initializer_range = initializer_range
        self.task = task
        self.regression_loss = regression_loss
        self.role = role
        self.distillation_method = distillation_method
        self.student_modalities = list(student_modalities) if student_modalities is not None else None
        self.feature_standardization = feature_standardization
        self.dataset_spec = dict(dataset_spec) if dataset_spec is not None else None

        if task == "regression":
            kwargs["num_labels"] = 1
            kwargs.setdefault("problem_type", "regression")
        elif task == "classification":
            kwargs.setdefault("problem_type", "single_label_classification")
        # The default prediction_step returns every non-None output field as "logits"; keep only the logits.
        kwargs.setdefault(
            "keys_to_ignore_at_inference",
            [f"{m}_{k}" for m in MODALITIES for k in ("pooled", "sequence", "step_mask")]
            + ["fused", "modality_mask", "hidden_states"],
        )
        super().__init__(**kwargs)
        self._validate()

    @staticmethod
    def check_pipeline_task(name_or_path, task) -> None:
        """transformers' `pipeline()` loads config and model with `_from_pipeline=<task>`. A text-only task (e.g.
        "text-classification") would tokenise text and call the model with inputs it does not take: refuse it."""
        if task not in (None, PIPELINE_TASK):
            raise ValueError(f"{name_or_path} is a multimodal hf_mmkd checkpoint with its own pipeline: use "
                             f"pipeline(model=..., trust_remote_code=True) (task {PIPELINE_TASK!r}), not task {task!r}")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        cls.check_pipeline_task(pretrained_model_name_or_path, kwargs.get("_from_pipeline"))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def prediction_label(self, values) -> tuple[float, str]:
        """`(value, label)` of one row's head output (`values`: a sequence of floats, the row's logits).

        Classification: `(probability of the arg-max class, its name)`; names from `dataset_spec["class_names"]`,
        else `id2label`. Regression: `(score, "negative" | "neutral" | "positive")`, where "neutral" is the closed
        band `dataset_spec["neutral_band"]` = [a, b] of scores that the data set calls neutral (below a: negative,
        above b: positive); without a spec the band is [0, 0].
        """
        values = [float(v) for v in values]
        if self.task == "classification":
            top = max(values)
            exps = [math.exp(v - top) for v in values]
            index = exps.index(max(exps))
            return exps[index] / sum(exps), self.label_names(len(values))[index]
        score = values[0]
        low, high = (self.dataset_spec or {}).get("neutral_band") or (0.0, 0.0)
        return score, "negative" if score < low else "positive" if score > high else "neutral"

    def label_names(self, num_classes: int | None = None) -> list[str]:
        """Classification: the class names in id order, from `dataset_spec["class_names"]`, else `id2label`."""
        names = (self.dataset_spec or {}).get("class_names")
        if names:
            return [str(n) for n in names]
        return [str(self.id2label.get(i, i)) for i in range(num_classes or self.num_labels)]

    def encoder_kind(self, modality: str) -> str | None:
        """`"backbone"`, `"features"` or None (the model has no encoder for this modality)."""
        if getattr(self, f"{modality}_config") is not None:
            return "backbone"
        if getattr(self, f"{modality}_feature_dim") is not None:
            return "features"
        return None

    @property
    def modalities(self) -> list[str]:
        """The modalities this model has an encoder for, in the fixed order (text, audio, vision)."""
        return [m for m in MODALITIES if self.encoder_kind(m) is not None]

    def _validate(self):
        for m in MODALITIES:
            if getattr(self, f"{m}_config") is not None and getattr(self, f"{m}_feature_dim") is not None:
                raise ValueError(f"{m}: give either {m}_config (backbone) or {m}_feature_dim (features), not both")
            dim = getattr(self, f"{m}_feature_dim")
            if dim is not None and (not isinstance(dim, int) or dim <= 0):
                raise ValueError(f"{m}_feature_dim must be a positive int, got {dim!r}")
        if not self.modalities:
            raise ValueError("MMKDConfig needs at least one modality encoder (a *_config or a *_feature_dim)")
        for name in ("hidden_size", "num_encoder_layers", "num_attention_heads", "intermediate_size", "fusion_dim",
                     "mib_filters", "mib_kernel_size"):  # a JSON "8" or a -1 would fail deep inside torch
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value, allowed in (
            ("temporal_encoder", self.temporal_encoder, TEMPORAL_ENCODERS),
            ("fusion", self.fusion, FUSIONS),
            ("task", self.task, TASKS),
            ("regression_loss", self.regression_loss, ("l1", "mse")),
            ("role", self.role, ROLES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.fusion == "attention" and self.fusion_dim != self.hidden_size:
            raise ValueError("fusion='attention' works at hidden_size: leave fusion_dim unset or equal to hidden_size")
        if self.task == "classification" and self.num_labels < 2:
            raise ValueError(f"task='classification' needs num_labels >= 2, got {self.num_labels}")
        if self.student_modalities is not None:
            unknown = set(self.student_modalities) - set(MODALITIES)
            if unknown:
                raise ValueError(f"student_modalities has unknown names {sorted(unknown)}; use {MODALITIES}")
        if self.feature_standardization is not None:
            for m, stats in self.feature_standardization.items():
                if m not in MODALITIES or not {"mean", "std"} <= set(stats):
                    raise ValueError(f"feature_standardization[{m!r}] must be a modality with 'mean' and 'std' lists")


__all__ = ["MMKDConfig", "MODALITIES", "PIPELINE_TASK"]
