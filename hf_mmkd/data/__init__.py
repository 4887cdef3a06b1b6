"""Data for hf_mmkd: prepared datasets (parquet + card + spec), standardisation, collation, missing-modality protocols.

- `load_prepared(path_or_repo_id)` -> `DatasetDict` (folders written by `dataset_scripts/prepare_*.py`);
  `load_spec(...)` -> its `DatasetSpec` (`dataset_spec.json`: what the labels mean, the modalities);
  `dataset_spec(...)` -> the same, "demo" included;
  `load_dataset_and_spec(...)` -> both (also for "demo" and an in-memory `DatasetDict`).
- `make_demo_dataset()` -> the synthetic three-modality demo (the default of the main job).
- `FeatureStandardizer.fit(train_split).to_dict()` -> `MMKDConfig.feature_standardization`.
- `MMKDDataCollator(config, tokenizer=..., feature_extractor=..., image_processor=...)` -> padded batches.
- `MissingModalitySimulator(protocol, rate=..., availability=..., training=..., seed=...)(batch)` -> the
  degraded view of a collated batch (P1-P5 of docs/protocols.md); `model_inputs(batch)` keeps
  the keys `forward` takes.
"""

from hf_mmkd.data.collator import MMKDDataCollator
from hf_mmkd.data.demo import make_demo_dataset
from hf_mmkd.data.missing import (
    MODEL_INPUT_KEYS,
    P1_SEEDS,
    P4_SHARES,
    P5_WEIGHTS,
    PATTERNS,
    PROTOCOLS,
    WAVEFORM_CHUNK,
    MissingModalitySimulator,
    availability_flags,
    model_inputs,
    row_key,
)
from hf_mmkd.data.prepared import dataset_spec, load_dataset_and_spec, load_prepared, save_prepared
from hf_mmkd.data.spec import DatasetSpec, build_spec, load_spec, save_spec
from hf_mmkd.data.standardize import FeatureStandardizer

__all__ = [
    "DatasetSpec",
    "FeatureStandardizer",
    "MMKDDataCollator",
    "MODEL_INPUT_KEYS",
    "MissingModalitySimulator",
    "P1_SEEDS",
    "P4_SHARES",
    "P5_WEIGHTS",
    "PATTERNS",
    "PROTOCOLS",
    "WAVEFORM_CHUNK",
    "availability_flags",
    "build_spec",
    "dataset_spec",
    "load_dataset_and_spec",
    "load_prepared",
    "load_spec",
    "make_demo_dataset",
    "model_inputs",
    "row_key",
    "save_prepared",
    "save_spec",
]
