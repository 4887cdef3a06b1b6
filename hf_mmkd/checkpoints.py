"""What a checkpoint folder must hold, and what a Hub repository id must look like: checked before anything is
loaded, without torch and transformers (so that `hf-mmkd publish` and `evaluate` refuse a wrong folder or repo id at
once)."""

from __future__ import annotations

import os
from pathlib import Path

from hf_mmkd.io import read_json

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """Refuse anything but a `save_pretrained` folder of an hf_mmkd model; the error names what is missing."""
    ckpt = Path(path)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint folder {ckpt} does not exist")
    if not ckpt.is_dir():
        raise NotADirectoryError(f"checkpoint {ckpt} is not a folder (expected a save_pretrained folder)")
    config_path = ckpt / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} has no config.json (not a save_pretrained folder)")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint {ckpt}: config.json must hold a JSON object of settings, got a "
                         f"{type(config).__name__}")
    if config.get("model_type") != "mmkd":
        raise ValueError(f"checkpoint {ckpt} is not an hf_mmkd model (model_type {config.get('model_type')!r}, "
                         "expected 'mmkd')")
    if not any((ckpt / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"checkpoint {ckpt} has no weights (none of {', '.join(WEIGHT_FILES)})")
    return ckpt


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if the Hub accepts it as a model repository `owner/name` (huggingface_hub's own validator:
    letters, digits, `-`, `_`, `.`, at most 96 characters, no `--` or `..`); a ValueError naming it otherwise.
    Every publishing path calls this before any work, a dry run included."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id {repo_id!r} is not of the form owner/name (e.g. my-org/mmkd-student)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo id {repo_id!r} is not a valid Hub repository id: {' '.join(str(err).split())}") from None
    return repo_id
