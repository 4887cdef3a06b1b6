"""Prepared datasets: the on-disk layout shared by every `dataset_scripts/prepare_*.py`, and its loader.

datasets >= 4 has no loading scripts: a prepared dataset is a folder of parquet
shards plus a `README.md` whose YAML front matter declares the splits (`configs:`), which is exactly what the
Hub expects of a dataset repository. `load_prepared` reads such a folder (or a Hub repo of the same layout).

Column schema (every column optional except `id`, `label` and the three `has_*` flags):

| column | feature | meaning |
|---|---|---|
| `id` | string | utterance id (unique within a split; the missing-modality simulator keys eval draws on it) |
| `raw_text` | string | transcript |
| `text_input_ids` | List(int64) | MMSA `text_bert` token ids, truncated to their attention mask |
| `text_features` / `audio_features` / `vision_features` | Array2D((None, D), float32) | feature sequence, truncated to its length |
| `audio` | Audio(16 kHz, decode=False) | mono 16 kHz wav bytes (decode with `hf_mmkd.data.media.decode_wav`) |
| `frames` | List(Image) | frames sampled at a fixed rate |
| `has_text` / `has_audio` / `has_vision` | bool | the row has that modality (a missing Array2D reads back as nan, so never infer it) |
| `label` | float32 | regression label (MMSA `regression_labels`) |
| `classification_label` | int64 | MMSA `classification_labels` |
| `label_T` / `label_A` / `label_V` | float32 | SIMS unimodal labels |
| `annotation` | string | MMSA `annotations` |
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from hf_mmkd.io import atomic_folder

SPLITS = ("train", "validation", "test")
MODALITIES = ("text", "audio", "vision")


def card_front_matter(splits, extra: dict | None = None) -> str:
    """YAML front matter declaring one parquet file pattern per split (Hub "manual configuration")."""
    meta = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ]
    }
    meta.update(extra or {})
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse a non-empty OUT_DIR unless `overwrite`; call this before any work so nothing partial is written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out} is not empty; pass --overwrite to replace it")
    return out


def save_prepared(dataset_dict, out_dir: str | os.PathLike, card_body: str, overwrite: bool = False,
                  card_metadata: dict | None = None) -> Path:
    """Write `dataset_dict` as `OUT_DIR/data/<split>-00000-of-00001.parquet` plus `OUT_DIR/README.md`.

    Everything is written to a temporary folder next to OUT_DIR and renamed into place at the end, so a
    failure never leaves a partial OUT_DIR. A non-empty OUT_DIR is refused unless `overwrite`.
    """
    out = check_out_dir(out_dir, overwrite).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        (tmp / "data").mkdir(parents=True)
        splits = [s for s in SPLITS if s in dataset_dict] + [s for s in dataset_dict if s not in SPLITS]
        for split in splits:
            dataset_dict[split].to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        (tmp / "README.md").write_text(card_front_matter(splits, card_metadata) + "\n" + card_body.strip() + "\n")
        check_out_dir(out, overwrite)  # re-check: someone may have written there meanwhile
    return out


def _data_files_from_card(folder: Path) -> dict[str, list[str]] | None:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text()
    if not text.startswith("---"):
        return None
    meta = yaml.safe_load(text.split("---", 2)[1]) or {}
    configs = meta.get("configs") or []
    if not configs:
        return None
    files = {}
    for entry in configs[0].get("data_files", []):
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        files[entry["split"]] = [str(folder / p) for p in paths]
    return files


def load_prepared(path_or_repo_id: str | os.PathLike, **load_kwargs):
    """Load a prepared dataset (local folder or Hub dataset id) as a `DatasetDict`.

    A folder is read with `datasets.load_dataset("parquet", data_files=...)`, the splits taken from its README
    `configs:` YAML (or `data/<split>-*.parquet` if the card has none). Anything else is passed to
    `datasets.load_dataset` as a Hub id (the card's `configs:` then does the same job).
    """
    import datasets

    folder = Path(path_or_repo_id)
    if folder.is_dir():
        files = _data_files_from_card(folder)
        if files is None:
            files = {}
            for p in sorted((folder / "data").glob("*-*.parquet")):
                files.setdefault(p.name.split("-")[0], []).append(str(p))
        if not files:
            raise ValueError(f"{folder} holds no prepared dataset (no README configs and no data/*.parquet)")
        try:
            return datasets.load_dataset("parquet", data_files=files, **load_kwargs)
        except Exception as err:  # pyarrow.ArrowInvalid on a truncated/corrupt shard, FileNotFoundError, ...
            cause = err.__cause__ or err.__context__  # datasets wraps the real error in DatasetGenerationError
            detail = f"{type(err).__name__}: {err}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
            raise ValueError(f"cannot read the prepared dataset in {folder} (corrupt, truncated or missing "
                             f"parquet file?): {detail}") from err
    name = str(path_or_repo_id)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"{name} is not a folder (and does not look like a Hub dataset id 'owner/name')")
    return datasets.load_dataset(str(path_or_repo_id), **load_kwargs)


def push_prepared(out_dir: str | os.PathLike, repo_id: str, private: bool = True) -> None:
    """Upload a prepared folder to a (private by default) Hub dataset repo; the layout is already Hub-ready."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(out_dir), repo_type="dataset")
