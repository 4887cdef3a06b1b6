"""Multimodal sentiment models whose modalities may be missing (shipped to the Hub as remote code).

One family serves teacher and students: `MMKDModel` encodes each available modality and fuses them;
`MMKDForSentiment` adds the regression / classification head and its loss. A modality that a row lacks (its
inputs are None, `modality_mask` is False for the row, or its length is 0) contributes only through a learned
"missing" embedding, so rows of one batch may differ in which modalities they have.

Per modality the encoder is either a transformers backbone (BERT-family text, wav2vec2-family waveforms,
ViT frames + a temporal encoder) or a pre-extracted feature sequence encoded as in CorrKD (Li et al., CVPR 2024):
Conv1d(k=3) -> sinusoidal positions -> Transformer. With `temporal_encoder="mib_trl"` each sequence then passes
through MITR-DNet's modality-invariant bidirectional temporal block (Wang et al., ICASSP 2025).

Feature inputs are raw: the model standardises them itself with `config.feature_standardization` (the training
split's statistics), so a direct call, the processor and the pipeline all give the same answer
(`MMKDModel.standardize_features`). `<m>_dropped` inputs exist for training and robustness evaluation only: the
steps a missing-modality simulator dropped, which then stand at the training mean.

Imports: standard library, torch, transformers and the sibling configuration file only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mmkd import MODALITIES, PIPELINE_TASK, MMKDConfig
from .pipeline_mmkd import MMKDSentimentPipeline  # a sibling import: saved with this file (see save_pretrained)
from .processing_mmkd import MMKDProcessor  # a sibling import too: from_backbones_pretrained saves the processor

# Inputs of each modality, by encoder kind: (main input, its step mask or lengths).
_FEATURE_INPUTS = {m: (f"{m}_features", f"{m}_lengths") for m in MODALITIES}
_BACKBONE_INPUTS = {
    "text": ("input_ids", "attention_mask"),
    "audio": ("input_values", "audio_attention_mask"),
    "vision": ("pixel_values", "frame_mask"),
}


@dataclass
class MMKDModelOutput(ModelOutput):
    """Encoders + fusion.

    Args:
        fused: (B, fusion_dim) joint representation (before the dropout that `MMKDForSentiment` applies to its
            head's input, so distillation compares representations without dropout noise).
        text_pooled / audio_pooled / vision_pooled: (B, hidden_size) per-modality vectors; for a row that lacks
            the modality, the learned missing embedding. None if the model has no encoder for the modality.
        text_sequence / audio_sequence / vision_sequence: (B, L, hidden_size) per-step features (zeros where
            the row lacks the modality); None when no row of the batch has the modality.
        text_step_mask / audio_step_mask / vision_step_mask: (B, L) bool, valid steps of those sequences.
        modality_mask: (B, 3) bool, which modalities each row effectively had (text, audio, vision).
    """

    fused: torch.FloatTensor | None = None
    text_pooled: torch.FloatTensor | None = None
    audio_pooled: torch.FloatTensor | None = None
    vision_pooled: torch.FloatTensor | None = None
    text_sequence: torch.FloatTensor | None = None
    audio_sequence: torch.FloatTensor | None = None
    vision_sequence: torch.FloatTensor | None = None
    text_step_mask: torch.BoolTensor | None = None
    audio_step_mask: torch.BoolTensor | None = None
    vision_step_mask: torch.BoolTensor | None = None
    modality_mask: torch.BoolTensor | None = None


@dataclass
class MMKDSentimentOutput(ModelOutput):
    """`MMKDModelOutput` plus the head: `logits` (B, 1) for regression or (B, num_labels), and `loss`."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    fused: torch.FloatTensor | None = None
    text_pooled: torch.FloatTensor | None = None
    audio_pooled: torch.FloatTensor | None = None
    vision_pooled: torch.FloatTensor | None = None
    text_sequence: torch.FloatTensor | None = None
    audio_sequence: torch.FloatTensor | None = None
    vision_sequence: torch.FloatTensor | None = None
    text_step_mask: torch.BoolTensor | None = None
    audio_step_mask: torch.BoolTensor | None = None
    vision_step_mask: torch.BoolTensor | None = None
    modality_mask: torch.BoolTensor | None = None


def _sinusoidal_positions(length: int, dim: int, device, dtype) -> torch.Tensor:
    """(L, dim) sine/cosine positions (Vaswani et al.), as MulT/CorrKD encoders use; no length limit."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return pe.to(dtype)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, d) over the valid steps of (B, L) mask -> (B, d)."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _reverse_valid(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of (B, L, C) within its valid length; padding stays on the right."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, L)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, L)
    return x.gather(1, index[..., None].expand_as(x))


class MMKDFeatureEncoder(nn.Module):
    """CorrKD's per-modality encoder: Conv1d(k=3) -> + sinusoidal positions -> Transformer -> LayerNorm.

    Also the temporal encoder over ViT frame vectors. Input (B, L, input_dim) with a (B, L) step mask;
    output (B, L, hidden_size), zero at padded steps.
    """

    def __init__(self, config: MMKDConfig, input_dim: int):
        super().__init__()
        d = config.hidden_size
        self.conv = nn.Conv1d(input_dim, d, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d, config.num_attention_heads, config.intermediate_size, config.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_encoder_layers, enable_nested_tensor=False)
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x * mask[..., None].to(x.dtype)  # padding must not leak through the k=3 convolution
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, D_in, L) -> (B, d, L) -> (B, L, d)
        h = h + _sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        h = self.encoder(self.dropout(h), src_key_padding_mask=~mask)
        return self.layer_norm(h) * mask[..., None].to(h.dtype)


class MMKDTemporalAwareBlock(nn.Module):
    """One MIB-TRL block: gated dilated causal conv tanh(W_f * x) ⊙ σ(W_g * x), 1x1 conv, residual."""

    def __init__(self, filters: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.filter_conv = nn.Conv1d(filters, filters, kernel_size, dilation=dilation)
        self.gate_conv = nn.Conv1d(filters, filters, kernel_size, dilation=dilation)
        self.out_conv = nn.Conv1d(filters, filters, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, L) -> (B, F, L)
        padded = F.pad(x, (self.left_pad, 0))  # causal: step t sees steps <= t only
        gated = torch.tanh(self.filter_conv(padded)) * torch.sigmoid(self.gate_conv(padded))
        return x + self.out_conv(self.dropout(gated))


class MMKDBidirectionalTemporalBlock(nn.Module):
    """MITR-DNet's MIB-TRL (Wang et al., ICASSP 2025; docs/methods.md#mitr-dnet, recovered from the authors' bytecode).

    The sequence and its time-reversed copy each pass a 1x1 conv to `mib_filters` channels, then a shared
    stack of temporal-aware blocks (dilations 1, 2, 4, 8). After each block the forward output and the
    backward output (re-reversed, so that step t lines up with step t) are summed; the block outputs are
    concatenated (4 x 25 = 100 channels in the paper) and projected back to hidden_size. Causal convolutions
    on right-padded rows never see the padding, in either direction, because reversal stays within each row's
    valid length.
    """

    def __init__(self, config: MMKDConfig):
        super().__init__()
        filters = config.mib_filters
        self.input_conv = nn.Conv1d(config.hidden_size, filters, 1)
        self.blocks = nn.ModuleList(
            MMKDTemporalAwareBlock(filters, config.mib_kernel_size, dilation, config.dropout)
            for dilation in config.mib_dilations
        )
        self.out_proj = nn.Linear(filters * len(config.mib_dilations), config.hidden_size)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, d), (B, L)
        lengths = mask.sum(1)
        forward = self.input_conv(h.transpose(1, 2))  # (B, F, L)
        backward = self.input_conv(_reverse_valid(h, lengths).transpose(1, 2))  # (B, F, L)
        outputs = []
        for block in self.blocks:
            forward, backward = block(forward), block(backward)
            realigned = _reverse_valid(backward.transpose(1, 2), lengths)  # (B, L, F)
            outputs.append(forward.transpose(1, 2) + realigned)
        z = self.out_proj(torch.cat(outputs, dim=-1))  # (B, L, n_blocks * F) -> (B, L, d)
        return z * mask[..., None].to(z.dtype)


class MMKDBackboneEncoder(nn.Module):
    """A transformers backbone for one modality, projected to hidden_size.

    text: BERT-family on (input_ids, attention_mask); audio: wav2vec2-family on (input_values,
    audio_attention_mask), step mask at the backbone's frame rate; vision: an image backbone (ViT) applied to
    every valid frame of (B, F, C, H, W), its [CLS] vector per frame, then a small temporal encoder over frames.
    """

    def __init__(self, config: MMKDConfig, modality: str, backbone: PreTrainedModel | None = None):
        super().__init__()
        self.modality = modality
        sub_config = getattr(config, f"{modality}_config")
        self.backbone = backbone if backbone is not None else AutoModel.from_config(sub_config)
        # The encoders pool themselves (masked mean); an unused pooler would get no gradient.
        if getattr(self.backbone, "pooler", None) is not None:
            self.backbone.pooler = None
        width = self.backbone.config.hidden_size
        if modality == "vision":
            self.temporal = MMKDFeatureEncoder(config, width)
        else:
            self.proj = nn.Linear(width, config.hidden_size)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.modality == "text":
            h = self.backbone(input_ids=inputs, attention_mask=mask.long()).last_hidden_state  # (B, L, H)
            return self.proj(h), mask
        if self.modality == "audio":
            h = self.backbone(input_values=inputs, attention_mask=mask.long()).last_hidden_state  # (B, T', H)
            frames = self.backbone._get_feat_extract_output_lengths(mask.sum(1))
            step_mask = torch.arange(h.shape[1], device=h.device)[None, :] < frames[:, None]
            return self.proj(h) * step_mask[..., None].to(h.dtype), step_mask
        batch, n_frames = inputs.shape[:2]
        flat_mask = mask.reshape(-1)  # (B*F,)
        frames = inputs.reshape(batch * n_frames, *inputs.shape[2:])[flat_mask]  # (n_valid, C, H, W)
        cls = self.backbone(pixel_values=frames).last_hidden_state[:, 0]  # (n_valid, H)
        per_frame = cls.new_zeros(batch * n_frames, cls.shape[-1]).index_copy(
            0, flat_mask.nonzero().squeeze(1), cls
        ).view(batch, n_frames, -1)  # (B, F, H)
        return self.temporal(per_frame, mask), mask


class MMKDPreTrainedModel(PreTrainedModel):
    config_class = MMKDConfig
    base_model_prefix = "mmkd"
    main_input_name = "input_ids"
    input_modalities = ("text", "audio", "image")
    supports_gradient_checkpointing = True  # applies to the transformers backbones
    _no_split_modules = ["MMKDFeatureEncoder", "MMKDBackboneEncoder"]
    # Our own attention (torch's TransformerEncoderLayer) runs on scaled_dot_product_attention.
    _supports_sdpa = True
    # Losses are plain means over the batch; the Trainer must scale them under gradient accumulation.
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MMKDModel):
            init.normal_(module.missing_embeddings, std=std)
        elif isinstance(module, MMKDFusion) and module.fusion_token is not None:
            init.normal_(module.fusion_token, std=std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # The remote-code route: AutoModel resolves to the base model, as for every transformers model.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": "modeling_mmkd.MMKDModel"}
        # pipeline(model=..., trust_remote_code=True): config.json names the shipped pipeline, whose file is saved
        # with this one (a sibling import, so transformers copies it like the configuration file).
        self.config.custom_pipelines = {PIPELINE_TASK: {
            "impl": f"pipeline_mmkd.{MMKDSentimentPipeline.__name__}", "pt": ["AutoModelForSequenceClassification"],
            "type": "multimodal"}}
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        if getattr(self, "processor", None) is not None and kwargs.get("is_main_process", True):
            self.processor.save_pretrained(save_directory)  # a model built by from_backbones_pretrained
        return saved

    @classmethod
    def from_backbones_pretrained(cls, text=None, audio=None, vision=None, **config_kwargs):
        r"""Build a model on pretrained backbones (paths, Hub ids or loaded `PreTrainedModel`s).

        Each backbone is loaded with `AutoModel.from_pretrained` here, never inside `__init__` (transformers v5
        builds models on the meta device). The heads are new and need training; reload the trained model with
        plain `from_pretrained`. Remaining kwargs go to `MMKDConfig` (e.g. `audio_feature_dim=73`).

        Example:

        ```python
        >>> model = MMKDForSentiment.from_backbones_pretrained(text="path/to/bert", audio_feature_dim=73)
        ```
        """
        backbones, attention, preprocessors = {}, {}, {}
        for modality, source in (("text", text), ("audio", audio), ("vision", vision)):
            if source is None:
                continue
            backbone = source if isinstance(source, PreTrainedModel) else AutoModel.from_pretrained(source)
            backbones[f"{modality}_backbone"] = backbone
            config_kwargs[f"{modality}_config"] = backbone.config
            attention[f"{modality}_config"] = backbone.config._attn_implementation
            preprocessors[_PREPROCESSOR_ARGUMENT[modality]] = _backbone_preprocessor(modality, source, backbone)
        model = cls(MMKDConfig(**config_kwargs), **backbones)
        # Building the composite config resets its sub-configs' attention choice; give each backbone back its own.
        model.set_attn_implementation({k: v for k, v in attention.items() if v is not None})
        # The backbones' own tokenizer / feature extractor / image processor, saved with the model (save_pretrained),
        # so that pipeline() and predict read raw inputs as the backbones expect.
        model.processor = MMKDProcessor.from_config(model.config, **preprocessors)
        return model


_PREPROCESSOR_ARGUMENT = {"text": "tokenizer", "audio": "feature_extractor", "vision": "image_processor"}


def _backbone_preprocessor(modality: str, source, backbone):
    """The tokenizer / feature extractor / image processor stored with a backbone (a path or Hub id, or the
    folder a loaded backbone came from); None when it has none (the processor then reads raw input as is)."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    path = source if isinstance(source, str) else getattr(backbone, "name_or_path", None)
    if not path:
        return None
    loader = {"text": AutoTokenizer, "audio": AutoFeatureExtractor, "vision": AutoImageProcessor}[modality]
    try:
        return loader.from_pretrained(path)
    except (OSError, ValueError):
        return None


class MMKDFusion(nn.Module):
    """Fuse the per-modality vectors: an MLP over their concatenation, or attention over modality tokens."""

    def __init__(self, config: MMKDConfig):
        super().__init__()
        self.mode = config.fusion
        n, d = len(config.modalities), config.hidden_size
        self.fusion_token = None
        if self.mode == "concat":
            self.mlp = nn.Sequential(nn.Linear(n * d, config.fusion_dim), nn.GELU())
        else:
            self.fusion_token = nn.Parameter(torch.zeros(1, 1, d))
            self.type_embeddings = nn.Embedding(n, d)
            self.layer = nn.TransformerEncoderLayer(
                d, config.num_attention_heads, config.intermediate_size, config.dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            self.layer_norm = nn.LayerNorm(d)

    def forward(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        if self.mode == "concat":
            return self.mlp(torch.cat(pooled, dim=-1))  # (B, n*d) -> (B, fusion_dim)
        tokens = torch.stack(pooled, dim=1) + self.type_embeddings.weight[None]  # (B, n, d)
        tokens = torch.cat([self.fusion_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # (B, 1+n, d)
        return self.layer_norm(self.layer(tokens)[:, 0])


class MMKDModel(MMKDPreTrainedModel):
    r"""Per-modality encoders, missing embeddings and fusion. Returns `MMKDModelOutput`.

    Example:

    ```python
    >>> import torch
    >>> from hf_mmkd import MMKDConfig, MMKDModel
    >>> model = MMKDModel(MMKDConfig(text_feature_dim=300, audio_feature_dim=74, hidden_size=32))
    >>> out = model(text_features=torch.randn(2, 5, 300), audio_features=torch.randn(2, 7, 74),
    ...             modality_mask=torch.tensor([[True, True, False], [False, True, False]]))
    >>> out.fused.shape
    torch.Size([2, 32])
    ```
    """

    def __init__(self, config: MMKDConfig, text_backbone=None, audio_backbone=None, vision_backbone=None):
        super().__init__(config)
        given = {"text": text_backbone, "audio": audio_backbone, "vision": vision_backbone}
        self.encoders = nn.ModuleDict()
        for m in config.modalities:
            if config.encoder_kind(m) == "backbone":
                self.encoders[m] = MMKDBackboneEncoder(config, m, given[m])
            else:
                self.encoders[m] = MMKDFeatureEncoder(config, getattr(config, f"{m}_feature_dim"))
        self.temporal = None
        if config.temporal_encoder == "mib_trl":
            self.temporal = nn.ModuleDict({m: MMKDBidirectionalTemporalBlock(config) for m in config.modalities})
        self.missing_embeddings = nn.Parameter(torch.zeros(len(MODALITIES), config.hidden_size))
        self.fusion = MMKDFusion(config)
        self.pattern_embeddings = nn.Embedding(8, config.fusion_dim) if config.pattern_embedding else None
        self.post_init()

    def standardize_features(self, modality: str, x: torch.Tensor, step_mask: torch.Tensor,
                             dropped: torch.Tensor | None = None) -> torch.Tensor:
        """`(x - mean) / std` per feature at the valid steps of a (B, L, D) feature sequence; 0 elsewhere.

        The statistics are `config.feature_standardization[modality]` (fitted on the training split by
        `hf_mmkd.data.FeatureStandardizer`); a modality without statistics is only zeroed at padded steps. This is
        the ONE place where standardisation happens: processors, collators and pipelines pass raw features, so a
        direct call on raw features gives the same answer as every other route. `dropped` (B, L) marks steps that a
        missing-modality simulator dropped (training / robustness evaluation only): they become 0, the training
        mean, exactly as when the simulator zeroed already standardised steps.
        """
        if dropped is not None and tuple(dropped.shape) != tuple(step_mask.shape):
            raise ValueError(f"{modality}_dropped must be (batch, steps) = {tuple(step_mask.shape)}, got "
                             f"{tuple(dropped.shape)}")
        keep = step_mask if dropped is None else step_mask & ~dropped.bool()  # (B, L)
        stats = (self.config.feature_standardization or {}).get(modality)
        if stats is not None:
            mean = torch.tensor(stats["mean"], dtype=torch.float32, device=x.device)
            std = torch.tensor(stats["std"], dtype=torch.float32, device=x.device)
            if mean.shape[0] != x.shape[-1]:
                raise ValueError(f"feature_standardization[{modality!r}] has {mean.shape[0]} features but "
                                 f"{modality}_features has {x.shape[-1]}")
            x = ((x.float() - mean) / std).to(x.dtype)  # in float32, as the statistics were fitted
        return torch.where(keep[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))

    def _modality_inputs(self, inputs: dict, modality_mask: torch.Tensor | None):
        """Validate the inputs; return {modality: (x, step_mask) or None} and the (B, 3) presence mask."""
        batch_sizes = {k: v.shape[0] for k, v in inputs.items() if v is not None}
        if not batch_sizes:
            raise ValueError("no inputs given: pass at least one modality's inputs")
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"inputs disagree on the batch size: {batch_sizes}")
        batch = next(iter(batch_sizes.values()))
        device = next(v for v in inputs.values() if v is not None).device
        for name, value in inputs.items():
            if value is not None and value.is_floating_point() and not torch.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or inf values")
        if modality_mask is None:
            modality_mask = torch.ones(batch, len(MODALITIES), dtype=torch.bool, device=device)
        elif tuple(modality_mask.shape) != (batch, len(MODALITIES)):
            raise ValueError(f"modality_mask must have shape ({batch}, 3) (text, audio, vision), got {tuple(modality_mask.shape)}")
        modality_mask = modality_mask.bool()

        per_modality, present = {}, torch.zeros_like(modality_mask)
        for i, m in enumerate(MODALITIES):
            kind = self.config.encoder_kind(m)
            wrong = _BACKBONE_INPUTS[m] if kind == "features" else _FEATURE_INPUTS[m]
            if kind is None:
                wrong = _BACKBONE_INPUTS[m] + _FEATURE_INPUTS[m]
            given_wrong = [k for k in wrong if inputs.get(k) is not None]
            if given_wrong:
                expected = "no inputs" if kind is None else f"{m} as {kind} ({', '.join((_BACKBONE_INPUTS if kind == 'backbone' else _FEATURE_INPUTS)[m])})"
                raise ValueError(f"got {given_wrong} but this model takes {expected}")
            if kind is None:
                per_modality[m] = None
                continue
            x_name, mask_name = (_BACKBONE_INPUTS if kind == "backbone" else _FEATURE_INPUTS)[m]
            x, step = inputs.get(x_name), inputs.get(mask_name)
            if x is None:
                per_modality[m] = None
                continue
            if kind == "features":
                dim = getattr(self.config, f"{m}_feature_dim")
                if x.dim() != 3 or x.shape[-1] != dim:
                    raise ValueError(f"{x_name} must be (batch, steps, {dim}) for this model ({m}_feature_dim={dim}), got {tuple(x.shape)}")
                lengths = step if step is not None else torch.full((batch,), x.shape[1], device=device)
                if (lengths < 0).any() or (lengths > x.shape[1]).any():
                    raise ValueError(f"{mask_name} must lie in [0, {x.shape[1]}], got {lengths.tolist()}")
                step = torch.arange(x.shape[1], device=device)[None, :] < lengths[:, None]  # (B, L)
            else:
                expected_dims = {"text": 2, "audio": 2, "vision": 5}[m]
                if x.dim() != expected_dims:
                    shape = {"text": "(batch, tokens)", "audio": "(batch, samples)", "vision": "(batch, frames, channels, height, width)"}[m]
                    raise ValueError(f"{x_name} must be {shape}, got shape {tuple(x.shape)}")
                step = (torch.ones(x.shape[:2], dtype=torch.bool, device=device) if step is None else step.bool())
            per_modality[m] = (x, step)
            present[:, i] = modality_mask[:, i] & step.any(1)

        empty = (~present.any(1)).nonzero().squeeze(1).tolist()
        if empty:
            raise ValueError(
                f"row(s) {empty[:10]} have no modality present (after modality_mask and zero lengths); "
                "every row needs at least one of the model's modalities "
                f"({', '.join(self.config.modalities)})"
            )
        return per_modality, present

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_mask: torch.BoolTensor | None = None,
        text_features: torch.FloatTensor | None = None,
        text_lengths: torch.LongTensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_lengths: torch.LongTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        vision_lengths: torch.LongTensor | None = None,
        modality_mask: torch.BoolTensor | None = None,
        text_dropped: torch.BoolTensor | None = None,
        audio_dropped: torch.BoolTensor | None = None,
        vision_dropped: torch.BoolTensor | None = None,
        return_dict: bool | None = None,
    ) -> MMKDModelOutput | tuple:
        inputs = dict(
            input_ids=input_ids, attention_mask=attention_mask, input_values=input_values,
            audio_attention_mask=audio_attention_mask, pixel_values=pixel_values, frame_mask=frame_mask,
            text_features=text_features, text_lengths=text_lengths, audio_features=audio_features,
            audio_lengths=audio_lengths, vision_features=vision_features, vision_lengths=vision_lengths,
        )
        per_modality, present = self._modality_inputs(inputs, modality_mask)
        self._standardize_inputs(per_modality, {"text": text_dropped, "audio": audio_dropped, "vision": vision_dropped})
        output = self._fuse(self._encode(per_modality, present), present)
        return output if return_dict is not False else output.to_tuple()

    def _standardize_inputs(self, per_modality: dict, dropped: dict) -> None:
        """Standardise every feature-sequence input in place of `per_modality` (`standardize_features`)."""
        for m in MODALITIES:
            if per_modality[m] is not None and self.config.encoder_kind(m) == "features":
                x, step = per_modality[m]
                per_modality[m] = (self.standardize_features(m, x, step, dropped.get(m)), step)

    def forward_views(self, view_masks: list[torch.Tensor], **inputs) -> list[MMKDModelOutput]:
        """The model on several views of ONE batch that differ only in which modalities each row keeps.

        `view_masks`: V masks (B, 3) bool (text, audio, vision), one per view; `inputs`: `forward`'s keyword
        inputs (any `modality_mask` among them limits every view). Each modality is encoded once, on the rows
        that some view keeps, and each view is fused from those encodings with the missing embedding where it
        lacks the modality. Equal to V separate `forward` calls in eval mode; in training the views share the
        encoders' dropout noise (the expected loss is the same). Saves MM-CKD's multi-view student the repeated
        encoder passes.
        """
        base = inputs.pop("modality_mask", None)
        dropped = {m: inputs.pop(f"{m}_dropped", None) for m in MODALITIES}
        inputs.pop("return_dict", None)
        union = torch.stack([m.bool() for m in view_masks]).any(0)  # (B, 3)
        per_modality, present = self._modality_inputs(inputs, union if base is None else union & base.bool())
        self._standardize_inputs(per_modality, dropped)
        encoded = self._encode(per_modality, present)
        outputs = []
        for v, mask in enumerate(view_masks):
            view_present = present & mask.bool()
            empty = (~view_present.any(1)).nonzero().squeeze(1).tolist()
            if empty:
                raise ValueError(f"view {v} leaves row(s) {empty[:10]} with no modality present")
            outputs.append(self._fuse(encoded, view_present))
        return outputs

    def _encode(self, per_modality: dict, present: torch.Tensor) -> dict:
        """{modality: (sequence (B, L', d), step mask (B, L'))}, encoded only on the rows that have it (no work and
        no all-masked attention for the rest; their rows are zeros); modalities no row has are left out."""
        batch = present.shape[0]
        encoded = {}
        for i, m in enumerate(MODALITIES):
            rows = present[:, i].nonzero().squeeze(1)
            if m not in self.encoders or per_modality[m] is None or rows.numel() == 0:
                continue
            x, step = per_modality[m]
            encoder = self.encoders[m]
            if isinstance(encoder, MMKDBackboneEncoder):  # a backbone may change the step rate (wav2vec2)
                h, h_mask = encoder(x[rows], step[rows])  # (R, L', d), (R, L')
            else:
                h_mask = step[rows]
                h = encoder(x[rows], h_mask)  # (R, L, d)
            if self.temporal is not None:
                h = self.temporal[m](h, h_mask)
            sequence = h.new_zeros(batch, *h.shape[1:]).index_copy(0, rows, h)  # (B, L', d)
            step_mask = h_mask.new_zeros(batch, h_mask.shape[1]).index_copy(0, rows, h_mask)  # (B, L')
            encoded[m] = (sequence, step_mask)
        return encoded

    def _fuse(self, encoded: dict, present: torch.Tensor) -> MMKDModelOutput:
        """Pool each modality the row has (`present`, (B, 3); the missing embedding elsewhere) and fuse."""
        batch = present.shape[0]
        out = {"modality_mask": present}
        pooled = []
        for i, m in enumerate(MODALITIES):
            if m not in self.encoders:
                continue
            missing = self.missing_embeddings[i].expand(batch, -1)  # (B, d)
            if m not in encoded or not bool(present[:, i].any()):
                out[f"{m}_pooled"] = missing
                pooled.append(missing)
                continue
            sequence, step_mask = encoded[m]
            has = present[:, i]  # (B,)
            sequence = sequence * has[:, None, None].to(sequence.dtype)  # rows without m: zeros
            step_mask = step_mask & has[:, None].to(step_mask.dtype)
            vector = torch.where(has[:, None], _masked_mean(sequence, step_mask), missing)  # (B, d)
            out.update({f"{m}_pooled": vector, f"{m}_sequence": sequence, f"{m}_step_mask": step_mask})
            pooled.append(vector)

        fused = self.fusion(pooled)
        if self.pattern_embeddings is not None:
            pattern = (present.long() * torch.tensor([1, 2, 4], device=present.device)).sum(1)  # (B,) in 1..7
            fused = fused + self.pattern_embeddings(pattern)
        return MMKDModelOutput(fused=fused, **out)


class MMKDForSentiment(MMKDPreTrainedModel):
    r"""`MMKDModel` + a sentiment head: regression (1 output; L1 or MSE as in MMSA) or classification (CE).

    Example:

    ```python
    >>> import torch
    >>> from hf_mmkd import MMKDConfig, MMKDForSentiment
    >>> model = MMKDForSentiment(MMKDConfig(text_feature_dim=300, audio_feature_dim=74, vision_feature_dim=35))
    >>> out = model(text_features=torch.randn(2, 5, 300), audio_features=torch.randn(2, 7, 74),
    ...             labels=torch.tensor([1.2, -0.4]))  # vision absent: its missing embedding stands in
    >>> out.logits.shape, out.loss.ndim
    (torch.Size([2, 1]), 0)
    ```
    """

    def __init__(self, config: MMKDConfig, text_backbone=None, audio_backbone=None, vision_backbone=None):
        super().__init__(config)
        self.mmkd = MMKDModel(config, text_backbone, audio_backbone, vision_backbone)
        # `fused` is the representation before dropout (what distillation compares); dropout regularises the head.
        self.fused_dropout = nn.Dropout(config.dropout)
        self.head = nn.Sequential(
            nn.Linear(config.fusion_dim, config.fusion_dim),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(config.fusion_dim, config.num_labels),
        )
        self.post_init()

    def compute_task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean task loss over the batch: L1/MSE on the score (regression) or cross-entropy (classes)."""
        if self.config.task == "regression":
            labels = labels.to(logits.dtype).view(-1)
            if not torch.isfinite(labels).all():
                raise ValueError("labels contain NaN or inf values")
            loss_fn = F.l1_loss if self.config.regression_loss == "l1" else F.mse_loss
            return loss_fn(logits.view(-1), labels)
        labels = labels.long().view(-1)
        if ((labels < 0) | (labels >= self.config.num_labels)).any():
            raise ValueError(f"classification labels must lie in [0, {self.config.num_labels - 1}], got {labels.tolist()}")
        return F.cross_entropy(logits, labels)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        input_values: torch.FloatTensor | None = None,
        audio_attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        frame_mask: torch.BoolTensor | None = None,
        text_features: torch.FloatTensor | None = None,
        text_lengths: torch.LongTensor | None = None,
        audio_features: torch.FloatTensor | None = None,
        audio_lengths: torch.LongTensor | None = None,
        vision_features: torch.FloatTensor | None = None,
        vision_lengths: torch.LongTensor | None = None,
        modality_mask: torch.BoolTensor | None = None,
        text_dropped: torch.BoolTensor | None = None,
        audio_dropped: torch.BoolTensor | None = None,
        vision_dropped: torch.BoolTensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        token_type_ids: torch.LongTensor | None = None,
    ) -> MMKDSentimentOutput | tuple:
        if token_type_ids is not None:  # what a tokenizer's output, or pipeline("text-classification"), passes
            raise ValueError(
                f"token_type_ids: this multimodal model takes {', '.join(self.config.modalities)} through its processor "
                f"(AutoProcessor.from_pretrained(..., trust_remote_code=True)), not a tokenizer's output; for a pipeline "
                f"use pipeline(model=..., trust_remote_code=True) (task {PIPELINE_TASK!r}), not 'text-classification'")
        base = self.mmkd(
            input_ids=input_ids, attention_mask=attention_mask, input_values=input_values,
            audio_attention_mask=audio_attention_mask, pixel_values=pixel_values, frame_mask=frame_mask,
            text_features=text_features, text_lengths=text_lengths, audio_features=audio_features,
            audio_lengths=audio_lengths, vision_features=vision_features, vision_lengths=vision_lengths,
            modality_mask=modality_mask, text_dropped=text_dropped, audio_dropped=audio_dropped,
            vision_dropped=vision_dropped, return_dict=True,
        )
        output = self._head(base, labels)
        return output if return_dict is not False else output.to_tuple()

    def forward_views(self, view_masks: list[torch.Tensor], labels: torch.Tensor | None = None,
                      **inputs) -> list[MMKDSentimentOutput]:
        """`MMKDModel.forward_views` plus the head (and each view's task loss when `labels` are given): one
        output per view of one batch, the encoders run once."""
        return [self._head(base, labels) for base in self.mmkd.forward_views(view_masks, **inputs)]

    def _head(self, base: MMKDModelOutput, labels: torch.Tensor | None) -> MMKDSentimentOutput:
        logits = self.head(self.fused_dropout(base.fused))  # (B, num_labels)
        loss = self.compute_task_loss(logits, labels) if labels is not None else None
        return MMKDSentimentOutput(loss=loss, logits=logits, **dict(base.items()))


__all__ = ["MMKDPreTrainedModel", "MMKDModel", "MMKDForSentiment", "MMKDModelOutput", "MMKDSentimentOutput"]

# The remote-code route: save_pretrained/push_to_hub write auto_map and copy this file and its config file.
MMKDConfig.register_for_auto_class()
MMKDModel.register_for_auto_class("AutoModel")
MMKDForSentiment.register_for_auto_class("AutoModelForSequenceClassification")
