"""MMKDProcessor: what the collator builds for training, from raw inputs or features; saved with the checkpoint and
loaded with AutoProcessor (remote code), including feature-only models that have no sub-processor at all."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import backbone_config_kwargs, feature_config_kwargs
from transformers import AutoProcessor, BertTokenizer, ViTImageProcessorPil, Wav2Vec2FeatureExtractor

from hf_mmkd import MMKDConfig
from hf_mmkd.data import MMKDDataCollator
from hf_mmkd.data.media import decode_wav, encode_wav
from hf_mmkd.inference import build_processor
from hf_mmkd.modeling.processing_mmkd import MMKDProcessor

WORDS = ["it", "was", "really", "good", "and", "the", "movie", "bad", "not", "a", "film", "sucker", "punch"]


def tiny_tokenizer():
    """A BertTokenizer from a vocab dict (ids < 99, the tiny BERT's vocab size): no download."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    assert len(vocab) < 99
    return BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})


def tiny_image_processor():
    return ViTImageProcessorPil(size={"height": 12, "width": 12})


def stats(dims):
    g = np.random.default_rng(0)
    return {m: {"mean": g.normal(size=d).tolist(), "std": (0.5 + g.random(d)).tolist()} for m, d in dims.items()}


@pytest.fixture
def backbone_config():
    return MMKDConfig(**backbone_config_kwargs())


@pytest.fixture
def feature_config():
    return MMKDConfig(**feature_config_kwargs(), feature_standardization=stats({"audio": 5, "vision": 6}))


def _image(seed, size=(12, 12)):
    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _assert_same(a, b):
    # The collator's `<m>_dropped` flags (all False) are training-only; the processor emits none.
    for k in [k for k in b if k.endswith("_dropped") and k not in a]:
        assert not b[k].any(), k
    b = {k: v for k, v in b.items() if k in a or not k.endswith("_dropped")}
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


# ---- equal to the collator (what training saw) ------------------------------------------------------------------
def test_raw_features_equal_the_collator(feature_config):
    g = np.random.default_rng(1)
    rows = [
        {"text_features": g.normal(size=(4, 7)), "audio_features": 50 + 9 * g.normal(size=(3, 5)),
         "vision_features": g.normal(size=(6, 6)), "has_text": True, "has_audio": True, "has_vision": True},
        {"text_features": None, "audio_features": g.normal(size=(2, 5)), "vision_features": None,
         "has_text": False, "has_audio": True, "has_vision": False},
    ]
    expected = MMKDDataCollator(feature_config)(rows)
    processor = build_processor(feature_config)
    got = processor(**{f"{m}_features": [r[f"{m}_features"] for r in rows] for m in ("text", "audio", "vision")})
    _assert_same(dict(got), expected)
    # both pass the features raw (the model standardises them: one place)
    np.testing.assert_allclose(got["audio_features"][0, :3].numpy(), rows[0]["audio_features"], rtol=1e-6)
    assert not hasattr(processor, "feature_standardization")


def test_processor_saved_before_the_model_standardised_ignores_its_statistics(tmp_path, feature_config):
    """Older processors stored `feature_standardization` and applied it; the model applies it now, so a processor
    loaded from such a processor_config.json must pass features raw (else they would be standardised twice)."""
    build_processor(feature_config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert "feature_standardization" not in saved
    saved["feature_standardization"] = feature_config.feature_standardization  # what older versions wrote
    (tmp_path / "processor_config.json").write_text(json.dumps(saved))
    x = 50 + np.zeros((3, 5), np.float32)
    got = MMKDProcessor.from_pretrained(tmp_path)(audio_features=[x])
    np.testing.assert_array_equal(got["audio_features"][0].numpy(), x)


@pytest.mark.parametrize("with_sub_processors", [True, False])
def test_raw_inputs_equal_the_collator(backbone_config, with_sub_processors):
    tokenizer = tiny_tokenizer()
    fe = Wav2Vec2FeatureExtractor() if with_sub_processors else None
    ip = tiny_image_processor() if with_sub_processors else None
    size = (20, 15) if with_sub_processors else (12, 12)  # without an image processor frames must fit the ViT
    g = np.random.default_rng(2)
    waves = [0.1 * g.normal(size=n).astype(np.float32) for n in (1600, 900)]
    rows = [
        {"raw_text": "it was really good", "audio": {"bytes": encode_wav(waves[0]), "path": "a.wav"},
         "frames": [_image(1, size), _image(2, size)], "has_text": True, "has_audio": True, "has_vision": True},
        {"raw_text": None, "audio": {"bytes": encode_wav(waves[1]), "path": "b.wav"}, "frames": [_image(3, size)],
         "has_text": False, "has_audio": True, "has_vision": True},
        {"raw_text": "not a film", "audio": None, "frames": None, "has_text": True, "has_audio": False,
         "has_vision": False},
    ]
    expected = MMKDDataCollator(backbone_config, tokenizer=tokenizer, feature_extractor=fe, image_processor=ip,
                                max_text_length=8, max_audio_seconds=0.08)(rows)
    processor = build_processor(backbone_config, tokenizer=tokenizer, feature_extractor=fe, image_processor=ip,
                                max_text_length=8, max_audio_seconds=0.08)
    got = processor(text=[r["raw_text"] for r in rows],
                    audio=[decode_wav(r["audio"]) if r["audio"] else None for r in rows],
                    videos=[r["frames"] for r in rows], sampling_rate=16000)
    _assert_same(dict(got), expected)
    assert got["modality_mask"].tolist() == [[True, True, True], [False, True, True], [True, False, False]]
    assert got["input_values"].shape[1] == int(0.08 * 16000)  # cropped like training


def test_single_example_and_arrays(backbone_config):
    processor = build_processor(backbone_config, tokenizer=tiny_tokenizer(), image_processor=tiny_image_processor())
    wave = np.zeros(800, np.float32)
    video = np.zeros((3, 30, 40, 3), np.uint8)  # (F, H, W, C)
    one = processor(text="good", audio=wave, videos=video)
    assert one["input_ids"].shape[0] == 1 and one["pixel_values"].shape == (1, 3, 3, 12, 12)
    assert one["modality_mask"].tolist() == [[True, True, True]]
    only_audio = processor(audio=torch.zeros(2, 400))  # a stacked batch
    assert only_audio["modality_mask"].tolist() == [[False, True, False]] * 2
    assert only_audio["pixel_values"].shape == (2, 1, 3, 12, 12)  # absent: one zero frame of the backbone's size
    assert set(processor.model_input_names) == set(one)


# ---- errors -------------------------------------------------------------------------------------------------
def test_errors_name_the_problem(backbone_config, feature_config):
    processor = build_processor(backbone_config, tokenizer=tiny_tokenizer())
    with pytest.raises(ValueError, match="no input given"):
        processor()
    with pytest.raises(ValueError, match="text is empty"):
        processor(text="   ")
    with pytest.raises(ValueError, match="disagree on the batch size"):
        processor(text=["good", "bad"], audio=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="16000 Hz"):
        processor(audio=np.zeros(10, np.float32), sampling_rate=8000)
    with pytest.raises(ValueError, match="through a backbone"):
        processor(audio_features=np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"takes \[3, 12, 12\]"):
        processor(videos=[np.zeros((20, 20, 3), np.uint8)])  # no image processor, wrong size
    no_tokenizer = build_processor(backbone_config)
    with pytest.raises(ValueError, match="no tokenizer"):
        no_tokenizer(text="good")

    features = build_processor(feature_config)
    with pytest.raises(ValueError, match="only as pre-extracted features"):
        features(audio=np.zeros(100, np.float32))
    with pytest.raises(ValueError, match=r"expects \(steps, 5\)"):
        features(audio_features=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        features(audio_features=np.full((3, 5), np.nan, np.float32))
    with pytest.raises(ValueError, match="no audio backbone"):
        build_processor(feature_config, feature_extractor=Wav2Vec2FeatureExtractor())
    only_text = MMKDConfig(text_feature_dim=4, hidden_size=8, num_attention_heads=2)
    with pytest.raises(ValueError, match="no audio encoder"):
        build_processor(only_text)(audio_features=np.zeros((2, 4), np.float32))


# ---- saved with the checkpoint, loaded by AutoProcessor -------------------------------------------------------
def test_round_trip_through_auto_processor(tmp_path, backbone_config):
    processor = build_processor(backbone_config, tokenizer=tiny_tokenizer(), feature_extractor=Wav2Vec2FeatureExtractor(),
                                image_processor=tiny_image_processor(), max_text_length=9, max_frames=4)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_mmkd.MMKDProcessor"}
    assert saved["sub_processor_classes"] == {"tokenizer": "BertTokenizer", "feature_extractor": "Wav2Vec2FeatureExtractor",
                                              "image_processor": "ViTImageProcessorPil"}
    assert {"processing_mmkd.py", "configuration_mmkd.py", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}

    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    # In this process hf_mmkd is imported, so AutoProcessor may resolve to the registered library class; the
    # remote-code copy alone is exercised in a subprocess that cannot import hf_mmkd (test_processing.py).
    assert type(loaded).__name__ == "MMKDProcessor"
    assert (loaded.max_text_length, loaded.max_frames, loaded.modality_inputs) == (9, 4, processor.modality_inputs)
    assert type(loaded.image_processor) is ViTImageProcessorPil
    inputs = dict(text=["it was really good", None], audio=[np.linspace(-1, 1, 700, dtype=np.float32), None],
                  videos=[[_image(5, (17, 9))], [_image(6, (17, 9)), _image(7, (17, 9))]])
    _assert_same(dict(loaded(**inputs)), dict(processor(**inputs)))


def test_feature_only_round_trip_has_no_sub_processor(tmp_path, feature_config):
    processor = build_processor(feature_config)
    processor.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configuration_mmkd.py", "processing_mmkd.py",
                                                         "processor_config.json"]
    loaded = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert (loaded.tokenizer, loaded.feature_extractor, loaded.image_processor) == (None, None, None)
    x = {"audio_features": np.ones((4, 5), np.float32), "text_features": [np.ones((2, 7), np.float32)]}
    _assert_same(dict(loaded(**x)), dict(processor(**x)))
    assert MMKDProcessor.from_pretrained(tmp_path).feature_dims == {"text": 7, "audio": 5, "vision": 6}


LOADER = textwrap.dedent(
    """
    import sys
    class _BlockHfMmkd:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_mmkd" or name.startswith("hf_mmkd."):
                raise ModuleNotFoundError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _BlockHfMmkd())
    import torch
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    out = processor(text=["it was good", None], audio=[None, torch.linspace(-1, 1, 500)],
                    videos=[torch.zeros(2, 20, 16, 3, dtype=torch.uint8), None])
    torch.save(dict(out), sys.argv[2])
    assert not any(m.startswith("hf_mmkd") for m in sys.modules)
    """
)


def test_processor_loads_without_hf_mmkd(tmp_path, backbone_config):
    processor = build_processor(backbone_config, tokenizer=tiny_tokenizer(), image_processor=tiny_image_processor())
    processor.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "load.py").write_text(LOADER)
    result = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "ckpt"), str(tmp_path / "out.pt")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = processor(text=["it was good", None], audio=[None, torch.linspace(-1, 1, 500)],
                         videos=[torch.zeros(2, 20, 16, 3, dtype=torch.uint8), None])
    _assert_same(torch.load(tmp_path / "out.pt"), dict(expected))
