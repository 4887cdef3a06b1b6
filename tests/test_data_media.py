"""dataset_scripts/make_raw_csv.py + prepare_media.py on the real clips in ../shared/data/raw."""

import csv
import importlib.util

import numpy as np
import pytest
import torch
from conftest import RAW_DIR, REPO_ROOT, SHARED_DATA
from tiny import tiny_vit_config, tiny_wav2vec2_config

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data import MMKDDataCollator, load_prepared, load_spec, model_inputs
from hf_mmkd.data.media import decode_wav


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "dataset_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_raw_csv, prepare_media = load_script("make_raw_csv"), load_script("prepare_media")
OPTS = ["--fps", "1", "--max-frames", "4", "--frame-size", "32"]


@pytest.fixture(scope="module")
def raw_csv(tmp_path_factory):
    if not RAW_DIR.is_dir():
        pytest.fail(f"{RAW_DIR} not found")
    path = tmp_path_factory.mktemp("raw") / "raw.csv"
    make_raw_csv.main([str(RAW_DIR), str(path)])
    return path


@pytest.fixture(scope="module")
def media_dir(raw_csv):
    out = raw_csv.parent / "media"
    prepare_media.main([str(raw_csv), str(out), *OPTS])
    return out


def test_raw_csv_is_replaced_only_with_overwrite(raw_csv, tmp_path):
    """A CSV that make_raw_csv wrote is replaced with --overwrite only (same content: the run is deterministic)."""
    path = tmp_path / "raw.csv"
    assert make_raw_csv.main([str(RAW_DIR), str(path)]) == 0
    before = path.read_bytes()
    with pytest.raises(ValueError, match="exists .written by make_raw_csv.py.; pass --overwrite"):
        make_raw_csv.main([str(RAW_DIR), str(path)])
    assert make_raw_csv.main([str(RAW_DIR), str(path), "--overwrite"]) == 0
    assert path.read_bytes() == before and b"mosi_" in before


def test_raw_csv_rows(raw_csv):
    rows = list(csv.DictReader(open(raw_csv)))
    assert [r["id"] for r in rows] == ["mosi_03bSnISJMiM_1", "mosi_Oz06ZWiO20M_6"] + [
        f"moud_101_movies_{k}" for k in range(5)]
    labels = {r["id"]: r for r in csv.DictReader(open(SHARED_DATA / "mosi" / "label.csv"))}
    assert rows[1]["text"] == labels["Oz06ZWiO20M_6"]["text"] and float(rows[1]["label"]) == -0.8
    assert (rows[2]["start"], rows[2]["end"], rows[2]["label"]) == ("0.0", "6.643", "1.0")


def test_media_dataset_has_audio_frames_and_text(media_dir):
    dsd = load_prepared(media_dir)
    assert {s: len(d) for s, d in dsd.items()} == {"train": 2, "test": 5}
    wav, mp4 = dsd["train"][0], dsd["train"][1]
    assert wav["raw_text"] == "anyhow it was really good" and wav["label"] == pytest.approx(2.4)
    assert wav["has_audio"] and not wav["has_vision"] and wav["frames"] is None
    assert len(decode_wav(wav["audio"])) / 16000 == pytest.approx(3.33, abs=0.01)
    assert mp4["has_vision"] and len(mp4["frames"]) == 4 and max(mp4["frames"][0].size) == 32  # 7.4 s at 1 fps, cap 4
    assert len(decode_wav(mp4["audio"])) / 16000 == pytest.approx(7.44, abs=0.05)
    moud = dsd["test"]
    ends = [6.643, 17.290, 23.475, 26.714, 33.367]
    starts = [0.0] + ends[:-1]
    for row, s, e in zip(moud, starts, ends):
        seconds = len(decode_wav(row["audio"])) / 16000
        assert seconds == pytest.approx(min(e, 33.34) - s, abs=0.05)
        assert all(s <= t < e for t in row["frame_times"]) and len(row["frames"]) == min(4, int(e - s))
        assert row["has_text"] and row["label"] == 1.0
    wave = decode_wav(moud[1]["audio"])
    assert wave.dtype == np.float32 and 0.05 < np.abs(wave).max() <= 1.0
    spec = load_spec(media_dir)
    assert spec.modalities == {"text": {"kind": "raw_text", "dim": None}, "audio": {"kind": "waveform", "dim": None},
                               "vision": {"kind": "frames", "dim": None}}
    # no --label-range: the labels (2.4, -0.8, 1.0) give [floor(min), ceil(max)]
    assert spec.label_range == (-1.0, 3.0) and spec.splits["train"] == {"rows": 2, "text": 2, "audio": 2,
                                                                         "vision": 1, "left_out": []}


def test_media_rows_feed_a_backbone_model(media_dir):
    from transformers import ViTImageProcessor, Wav2Vec2FeatureExtractor

    dsd = load_prepared(media_dir)
    config = MMKDConfig(audio_config=tiny_wav2vec2_config(), vision_config=tiny_vit_config(), hidden_size=16,
                        num_attention_heads=2)
    collator = MMKDDataCollator(
        config, feature_extractor=Wav2Vec2FeatureExtractor(sampling_rate=16000), max_audio_seconds=2.0,
        image_processor=ViTImageProcessor(size={"height": 12, "width": 12}),
    )
    batch = collator([dsd["train"][0], dsd["train"][1], dsd["test"][3]])
    assert batch["input_values"].shape == (3, 32000) and batch["audio_attention_mask"].sum(1).tolist() == [32000] * 3
    assert batch["pixel_values"].shape == (3, 4, 3, 12, 12)  # (B, F, C, H, W); the MOSI clip has 4 frames
    assert batch["frame_mask"].tolist() == [[False] * 4, [True] * 4, [True, True, True, False]]  # MOUD 3: 3.2 s
    assert torch.all(batch["pixel_values"][2, 3] == 0) and batch["pixel_values"][1].abs().sum() > 0
    assert batch["modality_mask"].tolist() == [[False, True, False], [False, True, True], [False, True, True]]
    out = MMKDForSentiment(config)(**model_inputs(batch))
    assert torch.isfinite(out.loss)


def test_missing_and_corrupt_media_are_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    table = tmp_path / "rows.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "media", "start", "end", "text", "label", "split"])
        w.writerow(["good", str(RAW_DIR / "mosi_03bSnISJMiM_1.wav"), "", "", "anyhow", "2.4", "train"])
        w.writerow(["corrupt", "broken.mp4", "", "", "x", "0", "train"])
        w.writerow(["gone", "nowhere.wav", "", "", "y", "0", "test"])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'corrupt'.*broken.mp4"):
        prepare_media.main([str(table), str(out), *OPTS])
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    prepare_media.main([str(table), str(out), *OPTS, "--skip-bad"])
    dsd = load_prepared(out)
    assert list(dsd) == ["train"] and dsd["train"]["id"] == ["good"]
    card = (out / "README.md").read_text()
    assert "skipped corrupt" in card and "skipped gone: media file not found" in card and "nowhere.wav" in card


def test_class_labels_by_name_from_another_column(tmp_path):
    wav = str(RAW_DIR / "mosi_03bSnISJMiM_1.wav")
    table = tmp_path / "rows.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "media", "text", "sentiment", "split"])
        w.writerows([["a", wav, "anyhow it was really good", "pos", "train"], ["b", wav, "", "neg", "train"],
                     ["c", wav, "fine", "pos", "test"]])
    out = tmp_path / "out"
    prepare_media.main([str(table), str(out), "--task", "classification", "--label-column", "sentiment", *OPTS])
    spec = load_spec(out)  # no --class-names: the text labels, in sorted order
    assert spec.task == "classification" and spec.class_names == ("neg", "pos")
    assert spec.label_column == "classification_label" and spec.metric_set == "classification"
    assert load_prepared(out)["train"]["classification_label"] == [1, 0]
    assert "2 classes (0 neg, 1 pos)" in (out / "README.md").read_text()
