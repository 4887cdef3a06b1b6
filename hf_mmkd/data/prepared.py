"""Prepared datasets: the on-disk layout shared by every `dataset_scripts/prepare_*.py`, and its loader.

datasets >= 4 has no loading scripts: a prepared dataset is a folder of parquet
shards plus a `README.md` whose YAML front matter declares the splits (`configs:`), which is exactly what the
Hub expects of a dataset repository, plus `dataset_spec.json` (`hf_mmkd.data.spec`): what the labels mean and
which modalities the rows have. `load_prepared` reads such a folder (or a Hub repo of the same layout);
`load_dataset_and_spec` reads both (and the in-memory demo).

Rows with no modality at all cannot be predicted. The converters leave them out by default
(`drop_rows_without_modality`; their ids go to the spec's `splits[split]["left_out"]` and the card), and
`train.py` / `hf-mmkd evaluate` leave out, with a warning / a note naming their ids, any row that has none of
the model's modalities.

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
| `classification_label` | int64 | class id (MMSA `classification_labels`); names in the spec's `class_names` |
| `label_T` / `label_A` / `label_V` | float32 | SIMS unimodal labels |
| `annotation` | string | MMSA `annotations` |
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from hf_mmkd.io import MANIFEST, OutputFolder, parse_yaml

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


# The longest feature sequence (steps) of one row that hf_mmkd accepts. Self-attention over L steps holds
# L x L float32 scores per head and layer: 0.4 GB at this limit, 160 GB for a row of 200 000 steps. A clear error
# beats an allocator failure. Real corpora stay far below (MOSI/MOSEI: at most a few hundred steps per row; 100 Hz
# acoustic frames of a one-minute clip: 6 000).
MAX_STEPS = 10_000


def check_steps(steps: int, where: str) -> None:
    """Refuse a feature sequence longer than `MAX_STEPS` (`where` names it: split, key, row)."""
    if steps > MAX_STEPS:
        gigabytes = 4 * steps * steps / 1e9
        raise ValueError(f"{where} has {steps} steps per row; hf_mmkd accepts at most {MAX_STEPS} (self-attention "
                         f"over one such row needs about {gigabytes:,.1f} GB per head and layer): cut or downsample "
                         "the sequences")


def output_folder(out_dir, command: str = "save_prepared", overwrite: bool = False, inputs=()) -> OutputFolder:
    """The guard (`hf_mmkd.io.OutputFolder`) of a prepared data-set folder: the whole folder is the output."""
    return OutputFolder(out_dir, command, inputs=inputs, overwrite=overwrite, flag="output folder")


def save_prepared(dataset_dict, out_dir: str | os.PathLike | OutputFolder, card_body: str, spec,
                  overwrite: bool = False,
                  card_metadata: dict | None = None) -> Path:
    """Write `dataset_dict` as `OUT_DIR/data/<split>-00000-of-00001.parquet` plus `OUT_DIR/README.md` and
    `OUT_DIR/dataset_spec.json` (`spec`, a `DatasetSpec` describing these splits; see `build_spec`).

    `out_dir` is a path or the command's `output_folder(...)` guard (which knows its inputs). Everything is
    written to a temporary folder next to OUT_DIR and renamed into place at the end, so a failure (a full disk
    included) never leaves a partial OUT_DIR. A non-empty OUT_DIR is refused unless `overwrite`, and then only if
    everything in it was written by hf_mmkd (see `hf_mmkd.io.OutputFolder`).
    """
    from hf_mmkd.data.spec import DatasetSpec, save_spec

    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"save_prepared needs the data set's DatasetSpec (hf_mmkd.data.spec.build_spec), got "
                         f"{type(spec).__name__}")
    extra = sorted(set(spec.splits) ^ set(dataset_dict))
    if extra or any(spec.splits[s]["rows"] != len(dataset_dict[s]) for s in dataset_dict):
        raise ValueError(f"the spec's splits {dict((s, c['rows']) for s, c in spec.splits.items())} do not describe "
                         f"the data {dict((s, len(d)) for s, d in dataset_dict.items())}")
    guard = out_dir if isinstance(out_dir, OutputFolder) else output_folder(out_dir, overwrite=overwrite)
    splits = [s for s in SPLITS if s in dataset_dict] + [s for s in dataset_dict if s not in SPLITS]
    for split in splits:
        if len(dataset_dict[split]) == 0:
            raise ValueError(f"split {split!r} has 0 rows; a prepared data set needs at least one row per split")
    with guard.write() as tmp:
        (tmp / "data").mkdir(parents=True)
        for split in splits:
            dataset_dict[split].to_parquet(str(tmp / "data" / f"{split}-00000-of-00001.parquet"))
        (tmp / "README.md").write_text(card_front_matter(splits, card_metadata) + "\n" + card_body.strip() + "\n")
        save_spec(spec, tmp)
    return guard.path.resolve()


def _card_metadata(readme: Path) -> dict:
    """The YAML front matter of a data-set card (`{}` without one); invalid YAML names the file."""
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    parts = text.split("---", 2)
    if len(parts) < 3:
        raise ValueError(f"{readme}: the YAML front matter has no closing '---' line")
    meta = parse_yaml(parts[1], f"{readme}: the YAML front matter")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ValueError(f"{readme}: the YAML front matter must be a mapping, got {type(meta).__name__}")
    return meta


def rows_without_modality(dataset, modalities=MODALITIES) -> list[int]:
    """Indices of the rows whose `has_<m>` flags are False for every m in `modalities` (a modality without a
    flag column counts as absent)."""
    flags = [dataset[f"has_{m}"] for m in modalities if f"has_{m}" in dataset.column_names]
    return [i for i in range(len(dataset)) if not any(f[i] for f in flags)]


def drop_rows_without_modality(dataset, modalities=MODALITIES):
    """`(dataset without the rows that have none of `modalities`, their ids)`; ids fall back to row numbers."""
    bad = rows_without_modality(dataset, modalities)
    if not bad:
        return dataset, []
    ids = [str(dataset[i]["id"]) if "id" in dataset.column_names else str(i) for i in bad]
    drop = set(bad)
    return dataset.select([i for i in range(len(dataset)) if i not in drop]), ids


def finish_prepared(dataset_dict, *, name: str, source: str, keep_rows_without_modality: bool = False,
                    **spec_kwargs):
    """What every converter does last: leave out the rows without any modality (unless
    `keep_rows_without_modality`), then build the spec of what remains (`build_spec(..., **spec_kwargs)`, with the
    left-out ids). Returns `(DatasetDict, DatasetSpec)`, ready for `save_prepared`."""
    from hf_mmkd.data.spec import build_spec

    left_out = {}
    if not keep_rows_without_modality:
        for split in list(dataset_dict):
            n = len(dataset_dict[split])
            dataset_dict[split], left_out[split] = drop_rows_without_modality(dataset_dict[split])
            if n and not len(dataset_dict[split]):
                raise ValueError(f"split {split!r}: none of its {n} rows has any modality (ids {left_out[split][:5]}"
                                 f"{' ...' if n > 5 else ''}); there is nothing to learn from or predict")
    return dataset_dict, build_spec(dataset_dict, name=name, source=source, left_out=left_out, **spec_kwargs)


def load_dataset_and_spec(dataset, **load_kwargs):
    """`(DatasetDict, DatasetSpec)` of "demo" (the synthetic demo, seed 0, as `train.py` trains on it), a prepared
    folder or Hub dataset id (`load_prepared` + its `dataset_spec.json`), or a `DatasetDict` (its spec from
    `build_spec`'s defaults). The spec's label column must exist in every split."""
    from datasets import DatasetDict

    from hf_mmkd.data.spec import load_spec

    if str(dataset) == "demo":
        from hf_mmkd.data.demo import demo_spec, make_demo_dataset

        splits = make_demo_dataset(seed=0)
        spec = demo_spec(splits, seed=0)
    elif isinstance(dataset, DatasetDict):
        splits, spec = dataset, load_spec(dataset)
    elif Path(dataset).is_dir():
        spec = load_spec(dataset)  # first: a folder without a spec fails before its parquet is read
        splits = load_prepared(dataset, **load_kwargs)
    else:
        splits = load_prepared(dataset, **load_kwargs)  # a bad path fails here, naming it
        spec = load_spec(dataset)
    for name, split in splits.items():
        if spec.label_column not in split.column_names:
            raise ValueError(f"{dataset if isinstance(dataset, (str, os.PathLike)) else 'the data set'}: its spec "
                             f"names the label column {spec.label_column!r}, which split {name!r} lacks")
    return splits, spec


def _data_files_from_card(folder: Path) -> dict[str, list[str]] | None:
    """`{split: [files]}` declared by the card's `configs:` (its first config), or None without one."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    configs = _card_metadata(readme).get("configs") or []
    if not configs:
        return None
    first = configs[0] if isinstance(configs, list) else None
    entries = first.get("data_files") if isinstance(first, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{readme}: configs[0] must hold a list 'data_files' of {{split, path}} entries")
    files = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "path" not in entry or "split" not in entry:
            raise ValueError(f"{readme}: configs[0].data_files[{i}] must have a 'split' and a 'path' "
                             f"(e.g. {{split: train, path: data/train-*.parquet}}), got {entry!r}")
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        files[str(entry["split"])] = [str(folder / p) for p in paths]
    return files


def split_files(folder: str | os.PathLike) -> dict[str, list[str]]:
    """`{split: [file patterns]}` of a prepared folder: its card's `configs:`, else `data/<split>-*.parquet`."""
    folder = Path(folder)
    files = _data_files_from_card(folder)
    if files is None:
        files = {}
        for p in sorted((folder / "data").glob("*-*.parquet")):
            files.setdefault(p.name.split("-")[0], []).append(str(p))
    if not files:
        raise ValueError(f"{folder} holds no prepared dataset (no README configs and no data/*.parquet)")
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
        files = split_files(folder)
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
    api.upload_folder(repo_id=repo_id, folder_path=str(out_dir), repo_type="dataset", ignore_patterns=[MANIFEST])
