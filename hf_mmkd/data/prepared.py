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


def is_builtin_demo(dataset) -> bool:
    """`dataset` names the built-in synthetic demo: the string "demo" when no folder `./demo` exists. A local
    folder wins over the built-in name (as a local path wins over a Hub id in `datasets.load_dataset`), so a demo
    prepared with `make_demo.py demo` and then edited is the one read."""
    return isinstance(dataset, (str, os.PathLike)) and str(dataset) == "demo" and not Path("demo").is_dir()


def dataset_spec(dataset):
    """The `DatasetSpec` of `dataset` without reading its rows: the demo's for the built-in demo
    (`is_builtin_demo`), else `hf_mmkd.data.spec.load_spec` (a folder's or Hub repo's `dataset_spec.json`)."""
    from hf_mmkd.data.spec import load_spec

    if is_builtin_demo(dataset):
        from hf_mmkd.data.demo import demo_spec, make_demo_dataset

        return demo_spec(make_demo_dataset(seed=0), seed=0)
    return load_spec(dataset)


def load_dataset_and_spec(dataset, **load_kwargs):
    """`(DatasetDict, DatasetSpec)` of "demo" (the synthetic demo, seed 0, as `train.py` trains on it; a folder
    `./demo` wins, see `is_builtin_demo`), a prepared folder or Hub dataset id (`load_prepared` + its
    `dataset_spec.json`), or a `DatasetDict` (its spec from `build_spec`'s defaults). The spec must describe the
    data (`check_against_spec`: label column, labels, splits, row counts, feature widths, ids)."""
    from datasets import DatasetDict

    from hf_mmkd.data.spec import load_spec

    if is_builtin_demo(dataset):
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
    check_against_spec(splits, spec, str(dataset) if isinstance(dataset, (str, os.PathLike)) else "the data set")
    return splits, spec


def check_against_spec(splits, spec, where: str) -> None:
    """Refuse, in one line naming the data set (`where`), the split and the row id, data that its spec does not
    describe: a missing label column; a label outside the spec's range, beyond +-`MAX_LABEL`, not finite, or not one
    of its class ids; row counts or feature widths that differ from the spec's; an id of the train split in another
    split (a row seen in training then scored; validation and test may share rows)."""
    import numpy as np

    from hf_mmkd.data.spec import MAX_LABEL

    train = splits["train"] if "train" in splits else None
    train_ids = set(map(str, train["id"])) if train is not None and "id" in train.column_names else set()
    for name, split in splits.items():
        if spec.label_column not in split.column_names:
            raise ValueError(f"{where}: its spec names the label column {spec.label_column!r}, which split "
                             f"{name!r} lacks")
        counted = spec.splits.get(name, {}).get("rows")
        if counted is not None and counted != len(split):
            raise ValueError(f"{where}: split {name!r} has {len(split)} rows but its dataset_spec.json says "
                             f"{counted}: the spec was written for other data; re-run the converter")
        ids = split["id"] if "id" in split.column_names else [f"row {i}" for i in range(len(split))]
        for i in ids if name != "train" and "id" in split.column_names else []:
            if str(i) in train_ids:
                raise ValueError(f"{where}: id {str(i)!r} is in split 'train' and in split {name!r}; a row the "
                                 "model trains on must not be scored (it inflates every score): keep each id in one "
                                 "split")
        y = np.array([np.nan if v is None else float(v) for v in split[spec.label_column]], dtype=np.float64)
        given = ~np.isnan(y)
        if spec.task == "regression":
            lo, hi = spec.label_range
            bad = given & ~((y >= lo) & (y <= hi) & (np.abs(y) <= MAX_LABEL))
            what = f"outside the spec's label range [{lo:g}, {hi:g}]"
        else:
            k = len(spec.class_names)
            bad = given & ~((y >= 0) & (y < k) & (y == np.round(y)))
            what = f"not one of the spec's {k} class ids 0..{k - 1}"
        if bad.any():
            i = int(np.nonzero(bad)[0][0])
            raise ValueError(f"{where}: split {name!r}, id {str(ids[i])!r}: label {y[i]:g} is {what} "
                             f"({int(bad.sum())} such row(s)); the spec (dataset_spec.json) does not describe these "
                             "labels: re-run the converter with the right --label-range / --class-names")
        for m, entry in spec.modalities.items():
            feature = split.features.get(f"{m}_features")
            width = getattr(feature, "shape", (None, None))[-1] if feature is not None else None
            if entry.get("dim") is not None and width is not None and int(width) != int(entry["dim"]):
                raise ValueError(f"{where}: split {name!r}: {m}_features are {width} wide but dataset_spec.json "
                                 f"says {entry['dim']}: the spec was written for other data; re-run the converter")


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
        for p in paths:
            inside = os.path.realpath(folder / str(p))
            if Path(str(p)).is_absolute() or not inside.startswith(os.path.realpath(folder) + os.sep):
                raise ValueError(f"{readme}: configs[0].data_files[{i}] path {p!r} points outside the data set's "
                                 f"folder {folder}; a prepared data set reads only its own files (e.g. "
                                 "data/train-*.parquet)")
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
        _check_rows(folder, files)
        try:
            return datasets.load_dataset("parquet", data_files=files, **load_kwargs)
        except Exception as err:  # pyarrow.ArrowInvalid on a truncated/corrupt shard, FileNotFoundError, ...
            cause = err.__cause__ or err.__context__  # datasets wraps the real error in DatasetGenerationError
            detail = f"{type(err).__name__}: {err}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
            raise ValueError(f"cannot read the prepared dataset in {folder} (corrupt, truncated or missing "
                             f"parquet file?): {detail}") from err
    name = str(path_or_repo_id)
    prepare = (f"prepare it first: python dataset_scripts/prepare_mmsa.py IN.pkl {name} (or prepare_media.py CSV "
               f"{name}, make_demo.py {name})")
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"{name} is not a folder (and does not look like a Hub dataset id 'owner/name'): the "
                         f"folder {folder.resolve()} does not exist; {prepare}")
    try:
        return datasets.load_dataset(str(path_or_repo_id), **load_kwargs)
    except Exception as err:  # offline, no such repository: say first that the folder does not exist
        raise ValueError(f"the folder {folder.resolve()} does not exist and {name!r} cannot be read as a Hub data "
                         f"set ({type(err).__name__}); {prepare}") from None


def _check_rows(folder: Path, files: dict[str, list[str]]) -> None:
    """Refuse a split with 0 rows (its parquet files hold no row) by name, before `datasets` reports it as a corrupt
    file; files that cannot be read are left to `load_dataset`'s error."""
    import glob

    import pyarrow.parquet as pq

    for split, patterns in files.items():
        paths = [p for pattern in patterns for p in sorted(glob.glob(pattern))]
        try:
            rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        except Exception:  # noqa: BLE001 - corrupt or missing: load_dataset names it
            continue
        if paths and rows == 0:
            raise ValueError(f"{folder}: split {split!r} has 0 rows ({', '.join(Path(p).name for p in paths)}); "
                             "every split needs at least one row: leave the split out or re-run the converter")


def push_prepared(out_dir: str | os.PathLike, repo_id: str, private: bool = True) -> None:
    """Upload a prepared folder to a (private by default) Hub dataset repo; the layout is already Hub-ready."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(out_dir), repo_type="dataset", ignore_patterns=[MANIFEST])
