"""Tiny backbone configs (from the transformers model testers) and batch builders, shared by the tests."""

from __future__ import annotations

import torch
from transformers import BertConfig, ViTConfig, Wav2Vec2Config

SUBSETS = [  # the 7 non-empty subsets of (text, audio, vision)
    (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)
]


def tiny_bert_config():
    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)


def tiny_wav2vec2_config():
    return Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20,
                          conv_dim=(32, 32, 32), conv_stride=(4, 4, 4), conv_kernel=(8, 8, 8),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=32,
                          mask_time_prob=0.5, mask_time_length=2, layerdrop=0.0)


def tiny_vit_config():
    return ViTConfig(image_size=12, patch_size=6, num_channels=3, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=4, intermediate_size=37)


def feature_config_kwargs():
    return dict(text_feature_dim=7, audio_feature_dim=5, vision_feature_dim=6, hidden_size=16,
                num_attention_heads=2, num_encoder_layers=1)


def backbone_config_kwargs():
    return dict(text_config=tiny_bert_config(), audio_config=tiny_wav2vec2_config(),
                vision_config=tiny_vit_config(), hidden_size=16, num_attention_heads=2)


def feature_batch(batch_size=4, seq=6, dims=(7, 5, 6), modality_mask=None, labels=True):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, seq + 1, (batch_size,), generator=g)
    batch = {}
    for name, d in zip(("text", "audio", "vision"), dims):
        batch[f"{name}_features"] = torch.randn(batch_size, seq, d, generator=g)
        batch[f"{name}_lengths"] = lengths.clone()
    if modality_mask is not None:
        batch["modality_mask"] = torch.as_tensor(modality_mask, dtype=torch.bool)
    if labels:
        batch["labels"] = torch.empty(batch_size).uniform_(-3, 3, generator=g)
    return batch


def backbone_batch(batch_size=4, modality_mask=None, labels=True, frames=3):
    g = torch.Generator().manual_seed(2)
    batch = {
        "input_ids": torch.randint(5, 99, (batch_size, 9), generator=g),
        "attention_mask": torch.ones(batch_size, 9, dtype=torch.long),
        "input_values": torch.randn(batch_size, 1024, generator=g),
        "audio_attention_mask": torch.ones(batch_size, 1024, dtype=torch.long),
        "pixel_values": torch.randn(batch_size, frames, 3, 12, 12, generator=g),
        "frame_mask": torch.ones(batch_size, frames, dtype=torch.bool),
    }
    batch["attention_mask"][0, 6:] = 0
    batch["audio_attention_mask"][1, 700:] = 0
    batch["frame_mask"][2, 2:] = False
    if modality_mask is not None:
        batch["modality_mask"] = torch.as_tensor(modality_mask, dtype=torch.bool)
    if labels:
        batch["labels"] = torch.empty(batch_size).uniform_(-3, 3, generator=g)
    return batch


ABSOLUTE_PATH_MARKERS = ("/tmp/", "/home/", "/root/", "/work/", "/usr/", "/var/", "/private/", "/Users/", ".venv/")


def assert_honest_card(text: str, training_data: str | None, config_text: str | None = None) -> None:
    """What every generated card must satisfy: no absolute local path (in the card or the config.json beside it),
    a filled method section, and the training data the model saw (the spec's name, or "unknown" without a
    spec), never a data set it did not see."""
    import os
    import re
    import sys

    local = [sys.prefix, os.getcwd(), *ABSOLUTE_PATH_MARKERS]
    for name, body in (("card", text), ("config.json", config_text or "")):
        leaks = [m for m in local if m in body]
        assert not leaks, f"{name} leaks local paths {leaks}"
    method = re.search(r"## Method and hyper-parameters\n(.*?)\n## ", text, re.S)
    assert method and "- **" in method.group(1) and "**Load**" in method.group(1), "empty method section"
    data = re.search(r"## Training data, provenance and terms\n(.*?)\n## ", text, re.S).group(1)
    expected = ("The training data of this checkpoint are not recorded" if training_data is None
                else f"Trained on **{training_data}**.")
    assert expected in data, data
    for other in ("CMU-MOSI", "ICT-MMMO", "MOSEI", "IEMOCAP"):
        if training_data is None or other.lower().replace("-", "") not in training_data.lower().replace("-", ""):
            assert other not in data, f"the card lists {other}, which the model did not see"
