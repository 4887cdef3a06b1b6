"""Collator, train-only standardisation and the synthetic demo dataset."""

import importlib.util

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from tiny import feature_config_kwargs

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data import (
    FeatureStandardizer,
    MissingModalitySimulator,
    MMKDDataCollator,
    load_prepared,
    make_demo_dataset,
    model_inputs,
    row_key,
)


@pytest.fixture(scope="module")
def demo():
    return make_demo_dataset()


def pooled(split):
    """(N, 16 + 8 + 8) mean-pooled features of a demo split, and labels."""
    parts = [np.stack([np.asarray(x, np.float32).mean(0) for x in split[f"{m}_features"]])
             for m in ("text", "audio", "vision")]
    return parts, np.asarray(split["label"])


def test_demo_shape_and_every_modality_carries_part_of_the_label(demo):
    from sklearn.linear_model import Ridge

    assert {s: len(d) for s, d in demo.items()} == {"train": 600, "validation": 150, "test": 300}
    lengths = [len(x) for x in demo["train"]["audio_features"]]
    assert min(lengths) == 4 and max(lengths) == 12
    assert np.asarray(demo["train"][0]["text_features"]).shape[1] == 16
    assert np.asarray(demo["train"][0]["vision_features"]).shape[1] == 8
    (tr, ytr), (te, yte) = pooled(demo["train"]), pooled(demo["test"])

    def acc2(keep):
        x_tr = np.concatenate([tr[i] for i in keep], 1)
        x_te = np.concatenate([te[i] for i in keep], 1)
        pred = Ridge(alpha=1.0).fit(x_tr, ytr).predict(x_te)
        return np.mean((pred >= 0) == (yte >= 0))

    full = acc2([0, 1, 2])
    assert full > 0.88
    for dropped in range(3):
        assert full - acc2([i for i in range(3) if i != dropped]) > 0.05  # each modality matters
    # deterministic in its seed
    again, other = make_demo_dataset(seed=0), make_demo_dataset(seed=1)
    assert np.array_equal(again["test"][7]["audio_features"], demo["test"][7]["audio_features"])
    assert again["test"]["label"] == demo["test"]["label"] != other["test"]["label"]


def test_make_demo_script_writes_a_synthetic_card(tmp_path):
    spec = importlib.util.spec_from_file_location("make_demo", REPO_ROOT / "dataset_scripts" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path / "demo")])
    card = (tmp_path / "demo" / "README.md").read_text()
    assert "SYNTHETIC" in card and "- synthetic" in card
    dsd = load_prepared(tmp_path / "demo")
    assert len(dsd["train"]) == 600 and dsd["train"].features["audio_features"].shape == (None, 8)


def test_standardizer_is_fitted_on_train_only(demo):
    stats = FeatureStandardizer.fit(demo["train"])
    d = stats.to_dict()
    steps = np.concatenate([np.asarray(x, np.float64) for x in demo["train"]["vision_features"]])
    np.testing.assert_allclose(d["vision"]["mean"], steps.mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d["vision"]["std"], steps.std(0), rtol=1e-6)
    test_steps = np.concatenate([np.asarray(x, np.float64) for x in demo["test"]["vision_features"]])
    assert not np.allclose(d["vision"]["mean"], test_steps.mean(0))
    import json

    assert FeatureStandardizer(json.loads(json.dumps(d))).to_dict() == d  # JSON-able round trip
    z = (steps - np.asarray(d["vision"]["mean"])) / np.asarray(d["vision"]["std"])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_collator_pads_and_marks_missing_rows_and_the_model_standardises(demo):
    rows = [dict(demo["train"][i]) for i in range(4)]
    rows[1]["has_audio"] = False
    rows[2]["vision_features"] = float("nan")  # how a null Array2D reads back
    rows[2]["has_vision"] = False
    stats = FeatureStandardizer.fit(demo["train"]).to_dict()
    config = MMKDConfig(text_feature_dim=16, audio_feature_dim=8, vision_feature_dim=8, hidden_size=16,
                        num_attention_heads=2, feature_standardization=stats)
    batch = MMKDDataCollator(config, return_row_keys=True)(rows)
    lengths = [len(r["text_features"]) for r in rows]
    assert batch["text_features"].shape == (4, max(lengths), 16)
    assert batch["text_lengths"].tolist() == lengths
    assert batch["modality_mask"].tolist() == [[True, True, True], [True, False, True], [True, True, False],
                                               [True, True, True]]
    assert batch["audio_lengths"][1] == 0 and torch.all(batch["audio_features"][1] == 0)
    assert batch["vision_lengths"][2] == 0
    # padding stays zero; valid steps stay raw, no step is flagged as dropped
    assert torch.all(batch["text_features"][0, lengths[0]:] == 0)
    raw = np.asarray(rows[0]["audio_features"], np.float32)
    np.testing.assert_array_equal(batch["audio_features"][0, : len(raw)].numpy(), raw)
    assert batch["audio_dropped"].shape == batch["audio_features"].shape[:2] and not batch["audio_dropped"].any()
    assert batch["labels"].dtype == torch.float32 and batch["row_key"][0] == row_key(rows[0]["id"])
    model = MMKDForSentiment(config)
    out = model(**model_inputs(batch))
    assert torch.isfinite(out.loss)
    # the model standardises the valid steps (hand-computed) and zeroes padding and dropped steps
    expected = (raw - np.asarray(stats["audio"]["mean"], np.float32)) / np.asarray(stats["audio"]["std"], np.float32)
    steps = torch.arange(batch["audio_features"].shape[1])[None] < batch["audio_lengths"][:, None]
    dropped = torch.zeros_like(steps)
    dropped[0, 0] = True
    z = model.mmkd.standardize_features("audio", batch["audio_features"], steps, dropped)
    np.testing.assert_allclose(z[0, 1: len(raw)].numpy(), expected[1:], rtol=1e-6, atol=1e-6)
    assert torch.all(z[0, 0] == 0) and torch.all(z[~steps] == 0)


def test_collator_rejects_a_feature_width_mismatch(demo):
    config = MMKDConfig(**feature_config_kwargs())  # text 7 / audio 5 / vision 6
    with pytest.raises(ValueError, match="'demo_train_0'.*text_features has shape .*\\(steps, 7\\)"):
        MMKDDataCollator(config)([demo["train"][0]])


def test_collator_with_simulator_is_batch_independent(demo):
    """Evaluation masks depend on (protocol, rate, seed, row id) only, not on batch size or order."""
    config = MMKDConfig(text_feature_dim=16, audio_feature_dim=8, vision_feature_dim=8, hidden_size=16,
                        num_attention_heads=2)
    collator = MMKDDataCollator(config, return_row_keys=True)
    sim = MissingModalitySimulator("p1", rate=0.5)
    rows = [demo["test"][i] for i in range(12)]
    whole = sim(collator(rows))
    reordered = sim(collator(rows[::-1][:5]))  # rows 11..7
    for j, i in enumerate(range(11, 6, -1)):
        n = int(whole["audio_lengths"][i])
        assert torch.equal(whole["audio_dropped"][i, :n], reordered["audio_dropped"][j, :n])


def test_collator_tokens_from_text_input_ids_and_classification_labels():
    from tiny import tiny_bert_config

    config = MMKDConfig(text_config=tiny_bert_config(), task="classification", num_labels=3, hidden_size=16,
                        num_attention_heads=2)
    rows = [
        {"id": "a", "text_input_ids": [2, 10, 11, 3], "has_text": True, "has_audio": False, "has_vision": False,
         "classification_label": 2},
        {"id": "b", "text_input_ids": [2, 12, 3], "has_text": True, "has_audio": False, "has_vision": False,
         "classification_label": 0},
    ]
    batch = MMKDDataCollator(config, label_column="classification_label")(rows)
    assert batch["input_ids"].tolist() == [[2, 10, 11, 3], [2, 12, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [2, 0]
    assert MMKDForSentiment(config)(**model_inputs(batch)).logits.shape == (2, 3)
