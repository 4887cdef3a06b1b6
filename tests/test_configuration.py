"""MMKDConfig: round trips, nested backbone configs, and clear errors for invalid settings."""

import pytest
from tiny import backbone_config_kwargs, feature_config_kwargs

from hf_mmkd import MMKDConfig


def test_feature_config_round_trip(tmp_path):
    config = MMKDConfig(**feature_config_kwargs(), role="student", distillation_method="corrkd",
                        student_modalities=["text", "audio"],
                        feature_standardization={"audio": {"mean": [0.0] * 5, "std": [1.0] * 5}})
    config.save_pretrained(tmp_path)
    loaded = MMKDConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.modalities == ["text", "audio", "vision"]
    assert loaded.encoder_kind("audio") == "features"
    assert loaded.num_labels == 1 and loaded.problem_type == "regression"


def test_backbone_sub_configs_keep_their_type(tmp_path):
    config = MMKDConfig(**backbone_config_kwargs())
    config.save_pretrained(tmp_path)
    loaded = MMKDConfig.from_pretrained(tmp_path)
    assert type(loaded.text_config).__name__ == "BertConfig"
    assert type(loaded.audio_config).__name__ == "Wav2Vec2Config"
    assert type(loaded.vision_config).__name__ == "ViTConfig"
    assert loaded.text_config.hidden_size == 32 and loaded.audio_config.conv_stride == [4, 4, 4]
    assert loaded.encoder_kind("vision") == "backbone"


def test_modalities_subset():
    config = MMKDConfig(text_feature_dim=300, audio_feature_dim=73)
    assert config.modalities == ["text", "audio"] and config.encoder_kind("vision") is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "at least one modality encoder"),
        ({"audio_feature_dim": 0}, "audio_feature_dim must be a positive int"),
        ({"text_feature_dim": 3, "fusion": "sum"}, "fusion must be one of"),
        ({"text_feature_dim": 3, "task": "ranking"}, "task must be one of"),
        ({"text_feature_dim": 3, "hidden_size": 10, "num_attention_heads": 4}, "divisible"),
        ({"text_feature_dim": 3, "task": "classification", "num_labels": 1}, "num_labels"),
        ({"text_feature_dim": 3, "student_modalities": ["smell"]}, "unknown names"),
        ({"text_feature_dim": 3, "text_config": {"model_type": "bert"}}, "not both"),
        ({"text_config": {"hidden_size": 8}}, "without 'model_type'"),
    ],
)
def test_invalid_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MMKDConfig(**kwargs)


def test_prediction_label_reads_the_dataset_spec():
    from hf_mmkd import MMKDConfig

    reg = MMKDConfig(audio_feature_dim=3, dataset_spec={"task": "regression", "neutral_band": [-0.5, 0.5]})
    assert reg.prediction_label([0.5]) == (0.5, "neutral")
    assert reg.prediction_label([-0.6]) == (-0.6, "negative")
    assert reg.prediction_label([0.51]) == (0.51, "positive")
    assert MMKDConfig(audio_feature_dim=3).prediction_label([0.001]) == (0.001, "positive")  # no spec: band [0, 0]
    cls = MMKDConfig(audio_feature_dim=3, task="classification", num_labels=3,
                     dataset_spec={"task": "classification", "class_names": ["neg", "neu", "pos"]})
    prob, label = cls.prediction_label([0.0, 1.0, 0.0])
    assert label == "neu" and abs(prob - 2.718281828 / (2 + 2.718281828)) < 1e-9
