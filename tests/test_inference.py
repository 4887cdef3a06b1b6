"""hf_mmkd.inference: predict from the REAL raw files in ../shared/data/raw with a tiny backbone checkpoint (every
subset of modalities), from features with a feature-only checkpoint, clear errors, and predict_dataset files."""

import csv
import json
import logging

import numpy as np
import pytest
import torch
from conftest import RAW_DIR, SHARED_DATA
from test_processing import stats, tiny_image_processor, tiny_tokenizer
from tiny import backbone_config_kwargs, feature_config_kwargs
from transformers import Wav2Vec2FeatureExtractor

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data import MMKDDataCollator
from hf_mmkd.data.media import MediaError, load_audio, load_frames
from hf_mmkd.data.prepared import save_prepared
from hf_mmkd.data.spec import build_spec
from hf_mmkd.inference import build_processor, load_checkpoint, predict, predict_dataset

WAV = RAW_DIR / "mosi_03bSnISJMiM_1.wav"  # 16 kHz stereo, no video
MP4 = RAW_DIR / "mosi_Oz06ZWiO20M_6.mp4"  # video with an audio track
LABELS = {"positive", "negative", "neutral"}


def transcript(utterance_id):
    with open(SHARED_DATA / "mosi" / "label.csv", newline="") as f:
        return next(r["text"] for r in csv.DictReader(f) if r["id"] == utterance_id)


@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory):
    """A tiny BERT + wav2vec2 + ViT checkpoint saved with its processor (tokenizer, feature extractor, images)."""
    torch.manual_seed(0)
    config = MMKDConfig(**backbone_config_kwargs())
    folder = tmp_path_factory.mktemp("backbone_ckpt")
    MMKDForSentiment(config).save_pretrained(folder)
    build_processor(config, tokenizer=tiny_tokenizer(), feature_extractor=Wav2Vec2FeatureExtractor(),
                    image_processor=tiny_image_processor(), max_frames=3).save_pretrained(folder)
    return folder


def save_checkpoint(folder, task="regression", **kwargs):
    torch.manual_seed(0)
    extra = {"num_labels": 3, "id2label": {0: "negative", 1: "neutral", 2: "positive"}} if task == "classification" else {}
    config = MMKDConfig(**{**feature_config_kwargs(), "task": task, **extra, **kwargs})
    MMKDForSentiment(config).save_pretrained(folder)
    build_processor(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def feature_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("feature_ckpt"),
                           feature_standardization=stats({"text": 7, "audio": 5, "vision": 6}))


def test_real_files_each_subset_of_modalities(backbone_ckpt):
    text_wav, text_mp4 = transcript("03bSnISJMiM_1"), transcript("Oz06ZWiO20M_6")
    cases = {
        ("text",): dict(text=text_wav),
        ("audio",): dict(audio=WAV),
        ("vision",): dict(video=MP4),  # frames only, as the pipeline reads a video
        ("text", "audio"): dict(text=text_wav, audio=WAV),
        ("text", "vision"): dict(text=text_mp4, video=MP4),
        ("audio", "vision"): dict(audio=MP4, video=MP4),  # the video's own audio track, asked for
        ("text", "audio", "vision"): dict(text=text_mp4, video=MP4, use_video_audio=True),
    }
    loaded = load_checkpoint(backbone_ckpt)
    for used, kwargs in cases.items():
        result = predict(loaded, **kwargs)
        assert result["modalities_used"] == list(used), kwargs
        assert set(result["modalities_missing"]) == {"text", "audio", "vision"} - set(used)
        assert np.isfinite(result["score"]) and result["label"] in LABELS and result["task"] == "regression"
        assert result["label"] == ("positive" if result["score"] > 0 else "negative")
    # a path works as well as a loaded checkpoint, and a separate audio file overrides the video's track
    assert predict(backbone_ckpt, text=text_wav) == predict(loaded, text=text_wav)
    assert predict(loaded, video=MP4, audio=WAV) == predict(
        loaded, video=MP4, audio=load_audio(WAV))


def test_predict_equals_processor_plus_model(backbone_ckpt):
    from transformers import AutoProcessor

    model, _ = load_checkpoint(backbone_ckpt)
    processor = AutoProcessor.from_pretrained(backbone_ckpt, trust_remote_code=True)  # the checkpoint's own copy
    # In this process hf_mmkd is imported, so AutoProcessor may resolve to the registered library class; the
    # remote-code copy alone is exercised in a subprocess that cannot import hf_mmkd (test_processing.py).
    assert type(processor).__name__ == "MMKDProcessor"
    text = transcript("Oz06ZWiO20M_6")
    frames, _ = load_frames(MP4, 1.0, 4.0, fps=processor.video_fps, max_frames=processor.max_frames)
    batch = processor(text=text, audio=load_audio(MP4, 1.0, 4.0), videos=frames)
    with torch.no_grad():
        expected = float(model(**batch).logits[0, 0])
    result = predict(backbone_ckpt, text=text, video=MP4, start=1.0, end=4.0)
    assert result["score"] == pytest.approx(expected, abs=1e-6)
    assert len(frames) == 3  # the processor's max_frames
    # the label follows the training data's neutral band (config.dataset_spec), here one that holds every score
    loaded = load_checkpoint(backbone_ckpt)
    loaded.model.config.dataset_spec = {"neutral_band": [-10.0, 10.0]}
    assert predict(loaded, text=text)["label"] == "neutral"


def test_features_only_checkpoint(feature_ckpt, tmp_path):
    g = np.random.default_rng(0)
    feats = {"text": g.normal(size=(5, 7)), "audio": 40 + g.normal(size=(3, 5))}
    result = predict(feature_ckpt, features=feats)
    assert result["modalities_used"] == ["text", "audio"] and result["modalities_missing"] == ["vision"]
    # the same number as the model on the collated row (what training saw; the model standardises)
    model = MMKDForSentiment.from_pretrained(feature_ckpt).eval()
    row = {"text_features": feats["text"], "audio_features": feats["audio"], "vision_features": None,
           "has_text": True, "has_audio": True, "has_vision": False}
    with torch.no_grad():
        expected = float(model(**MMKDDataCollator(model.config)([row])).logits[0, 0])
    assert result["score"] == pytest.approx(expected, abs=1e-6)
    np.savez(tmp_path / "f.npz", text_features=feats["text"], audio=feats["audio"])
    assert predict(feature_ckpt, features=tmp_path / "f.npz")["score"] == pytest.approx(expected, abs=1e-6)

    with pytest.raises(ValueError, match="only as pre-extracted features.*features="):
        predict(feature_ckpt, audio=WAV)
    with pytest.raises(ValueError, match="only as pre-extracted features"):
        predict(feature_ckpt, text="it was really good")
    with pytest.raises(ValueError, match=r"vision only as pre-extracted features.*cannot be computed from the video"):
        predict(feature_ckpt, video=MP4)


def test_classification_label_is_the_argmax_name(tmp_path):
    ckpt = save_checkpoint(tmp_path / "cls", task="classification")
    result = predict(ckpt, features={"vision": np.ones((2, 6))})
    assert result["label"] in LABELS and set(result["probabilities"]) == LABELS
    assert result["score"] == pytest.approx(max(result["probabilities"].values()))
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)


def test_mixed_checkpoint_refuses_raw_audio_for_feature_audio(tmp_path):
    """Text backbone + openSMILE-style audio features: a wav or a video's audio track cannot become features."""
    config = MMKDConfig(text_config=backbone_config_kwargs()["text_config"], audio_feature_dim=5, hidden_size=16,
                        num_attention_heads=2)
    MMKDForSentiment(config).save_pretrained(tmp_path)
    build_processor(config, tokenizer=tiny_tokenizer()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"audio only as pre-extracted features \(audio_feature_dim=5.*audio file"):
        predict(tmp_path, text="good", audio=WAV)
    with pytest.raises(ValueError, match=r"audio track of .*command line: --features X.npz.*leave the video out") as err:
        predict(tmp_path, text="good", video=MP4, use_video_audio=True)
    assert "use_video_audio" not in str(err.value)  # no Python argument the CLI does not have
    with pytest.raises(ValueError, match="nothing in .* can be used"):
        predict(tmp_path, text="good", video=MP4)
    result = predict(tmp_path, text="good", features={"audio": np.ones((4, 5))})
    assert result["modalities_used"] == ["text", "audio"]


def test_bad_inputs(backbone_ckpt, tmp_path):
    loaded = load_checkpoint(backbone_ckpt)
    with pytest.raises(MediaError, match="nope.wav"):
        predict(loaded, audio=tmp_path / "nope.wav")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 not a video" * 100)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        predict(loaded, video=corrupt)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        predict(loaded, audio=corrupt)
    with pytest.raises(ValueError, match="text is empty"):
        predict(loaded, text="  ")
    with pytest.raises(ValueError, match="no modality given"):
        predict(loaded)
    with pytest.raises(ValueError, match="through a backbone"):
        predict(loaded, features={"audio": np.ones((3, 5))})
    with pytest.raises(ValueError, match="unknown key"):
        predict(loaded, text="good", features={"smell": np.ones((3, 5))})
    with pytest.raises(ValueError, match="not a checkpoint folder"):
        predict(tmp_path, text="good")


def test_checkpoint_without_processor_falls_back_to_its_config(tmp_path, caplog):
    config = MMKDConfig(**feature_config_kwargs())
    MMKDForSentiment(config).save_pretrained(tmp_path)  # as training saved them before processors
    with caplog.at_level(logging.WARNING):
        result = predict(tmp_path, features={"text": np.ones((2, 7))})
    assert result["modalities_used"] == ["text"] and "processor_config.json" in caplog.text


def _prepared(folder):
    from datasets import Array2D, Dataset, DatasetDict, Features, Value

    g = np.random.default_rng(3)
    dims = {"text": 7, "audio": 5, "vision": 6}
    n = 5
    has = {"text": [True, True, False, True, False], "audio": [True, False, True, True, False],
           "vision": [True, True, True, False, False]}  # row 4 has nothing
    cols = {"id": [f"u{i}" for i in range(n)], "label": [float(x) for x in g.uniform(-3, 3, n)]}
    for m, d in dims.items():
        cols[f"{m}_features"] = [g.normal(size=(int(g.integers(2, 6)), d)).astype(np.float32) if h else None
                                 for h in has[m]]
        cols[f"has_{m}"] = has[m]
    spec = {"id": Value("string"), "label": Value("float32"),
            **{f"{m}_features": Array2D(shape=(None, d), dtype="float32") for m, d in dims.items()},
            **{f"has_{m}": Value("bool") for m in dims}}
    dsd = DatasetDict({"test": Dataset.from_dict(cols, features=Features(spec))})
    save_prepared(dsd, folder, "test data", build_spec(dsd, name="test data", source="tests", label_range=(-3, 3)))
    return cols


def test_predict_dataset_json_and_csv(feature_ckpt, tmp_path):
    cols = _prepared(tmp_path / "data")
    out_json = predict_dataset(feature_ckpt, tmp_path / "data", "test", tmp_path / "out" / "pred.json", batch_size=2)
    rows = json.loads(out_json.read_text())
    assert [r["id"] for r in rows] == cols["id"]
    assert rows[4]["score"] is None and rows[4]["modalities_used"] == []
    assert rows[1]["modalities_used"] == ["text", "vision"]
    for i in range(4):  # same as one-by-one predict
        feats = {m: cols[f"{m}_features"][i] for m in ("text", "audio", "vision") if cols[f"has_{m}"][i]}
        single = predict(feature_ckpt, features=feats)
        assert rows[i]["score"] == pytest.approx(single["score"], abs=1e-5) and rows[i]["label"] == single["label"]
        assert rows[i]["reference"] == pytest.approx(cols["label"][i])
    out_csv = predict_dataset(feature_ckpt, tmp_path / "data", "test", tmp_path / "pred.csv", batch_size=3)
    with open(out_csv, newline="") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 5 and lines[0]["modalities_used"] == "text+audio+vision" and lines[4]["score"] == ""
    assert float(lines[2]["score"]) == pytest.approx(rows[2]["score"], abs=1e-6)
    # no temp files left; the manifest records the file predict_dataset wrote (hf_mmkd.io.OutputFile)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hf_mmkd_outputs.json", "data", "out", "pred.csv"]
    with pytest.raises(ValueError, match="no split 'train'"):
        predict_dataset(feature_ckpt, tmp_path / "data", "train", tmp_path / "x.json")
    out_jsonl = predict_dataset(feature_ckpt, tmp_path / "data", "test", tmp_path / "out" / "p.jsonl", batch_size=5)
    lines_jsonl = [json.loads(line) for line in out_jsonl.read_text().splitlines()]  # batch 5: padding differs
    assert [r["id"] for r in lines_jsonl] == cols["id"] and lines_jsonl[4]["score"] is None
    assert [r["score"] for r in lines_jsonl[:4]] == pytest.approx([r["score"] for r in rows[:4]], abs=1e-6)
    with pytest.raises(ValueError, match=".json, .jsonl or .csv"):
        predict_dataset(feature_ckpt, tmp_path / "data", "test", tmp_path / "x.txt")
    # an existing file: its own earlier output only with overwrite=True, a file of the user's never
    with pytest.raises(ValueError, match=r"out_path .*pred\.csv exists \(written by predict_dataset\); pass --overwrite"):
        predict_dataset(feature_ckpt, tmp_path / "data", "test", out_csv)
    before = out_csv.stat().st_ino
    assert predict_dataset(feature_ckpt, tmp_path / "data", "test", out_csv, batch_size=3, overwrite=True) == out_csv
    assert out_csv.stat().st_ino != before  # written anew (atomically), with the same rows
    assert [r["score"] for r in csv.DictReader(out_csv.open(newline=""))] == [r["score"] for r in lines]
    (tmp_path / "mine.csv").write_text("my own file\n")
    with pytest.raises(ValueError, match="mine.csv exists and was not written by hf_mmkd"):
        predict_dataset(feature_ckpt, tmp_path / "data", "test", tmp_path / "mine.csv", overwrite=True)
    assert (tmp_path / "mine.csv").read_text() == "my own file\n"
