"""Test set-up: offline Hugging Face, a throw-away HF_HOME, seeded torch, tiny backbone configs.

The environment variables must be set before any Hugging Face library is imported (they are read at import).
"""

import os
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_mmkd_test_home_")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test models run fastest on one thread (and a busy machine slows multi-threaded kernels a lot).
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
MOSI_PKL = SHARED_DATA / "mosi" / "mosi_text_audio.pkl"
MMMO_PKL = SHARED_DATA / "mmmo" / "mmmo_features.pkl"
RAW_DIR = SHARED_DATA / "raw"

sys.path.insert(0, str(REPO_ROOT / "tests"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real data folder not found at {SHARED_DATA} (the project reads ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def online(monkeypatch):
    """The Hub as if reachable: HF_HUB_OFFLINE off (set above), a token; HfApi itself is mocked by the test."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
