"""The teacher provenance record of `train.py`: what produced a teacher, and whether a run may reuse it.

`train.py` saves `hf_mmkd_provenance.json` (`hf_mmkd.io.PROVENANCE_FILE`) inside every teacher/ and student/ it
writes (it is not shipped to the Hub). The record, `training_record(...)`:

    {"version": 1,
     "source": {"dataset": "data_prepared/mosi", "hf_mmkd": "0.1.0"},          # informative, never compared
     "data": {"fingerprint": "sha256:...", "train_rows": 1284, "max_train_samples": null, "subset_seed": null,
              "max_text_length": 50, "standardize": true},
     "model": {"hidden_size": 64, "text_backbone": "minilm", ...},              # ModelArguments (see below)
     "training": {"num_train_epochs": 6, "learning_rate": 0.001, "seed": 1111, ...},
     "result": {"global_step": 246}}                                            # written after training

`data.fingerprint` is a SHA-256 of the training split's parquet files for a prepared folder (so a renamed or
moved folder with the same data matches, and re-prepared different data does not), else the `datasets`
fingerprint of the split (the synthetic demo, a Hub data set), followed by `:spec-<hash>` of what the data set's
spec says its labels and modalities mean (all of `dataset_spec.json` but its display `name` and `source`), so a
spec edited after the teacher was trained is other data. `model` holds the architecture arguments except
`pattern_embedding`, which only students use (the teacher always sees the complete pattern).

Matching rule (`check_teacher`): a run reuses an existing teacher only when `data` and `model` are equal to what
the run would record and, when the run would itself train the teacher (stage teacher/both), `training` too, and
the teacher was trained for at least one step. Otherwise it stops with the differences and the two ways out:
`--reuse_teacher never` (train a new teacher in its place) or `--reuse_teacher always` (use it as it is). Even
then a teacher that cannot teach the student (other task, feature widths or, for representation-level methods,
sizes) is refused (`teacher_incompatibility`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_mmkd.io import PROVENANCE_FILE, provenance_differences, read_json, read_provenance

# TrainingArguments that change what a teacher learns (the epochs and learning rate are the teacher's own).
TEACHER_TRAINING_ARGS = ("max_steps", "backbone_learning_rate", "weight_decay", "per_device_train_batch_size",
                         "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "seed",
                         "train_sampling_strategy", "load_best_model_at_end", "metric_for_best_model")
REUSE_TEACHER = ("matching", "always", "never")


def data_fingerprint(dataset: str, train_split, spec=None) -> str:
    """A fingerprint of a run's training data: SHA-256 of the parquet files of a prepared folder's train split,
    else the `datasets` fingerprint of the (full) train split; with `spec` (the data set's `DatasetSpec`), its
    content too, so that a spec edited after a teacher was trained (another label range, other classes) does not
    pass for the same data."""
    from hf_mmkd.data.prepared import is_builtin_demo, split_files

    folder = Path(dataset)
    meaning = None if spec is None else {k: v for k, v in spec.to_dict().items() if k not in ("name", "source")}
    spec_part = "" if spec is None else ":spec-" + hashlib.sha256(
        json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:16]
    if not is_builtin_demo(dataset) and folder.is_dir():
        h = hashlib.sha256()
        for pattern in split_files(folder).get("train", []):
            for path in sorted(Path(pattern).parent.glob(Path(pattern).name)):
                h.update(path.name.encode("utf-8") + b"\0")
                with open(path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
        return "sha256:" + h.hexdigest() + spec_part
    return "datasets:" + str(train_split._fingerprint) + spec_part


def _plain(value: Any) -> Any:
    """A JSON value: enums by their value, other objects by their text."""
    value = getattr(value, "value", value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def training_record(*, dataset: str, fingerprint: str, train_rows: int, data_args: Mapping[str, Any],
                    model_args: Mapping[str, Any], epochs: float, learning_rate: float, training_args: Any,
                    version: str) -> dict[str, Any]:
    """The provenance record a run would save with its teacher (see the module docstring)."""
    max_train_samples = data_args.get("max_train_samples")
    return {
        "version": 1,
        "source": {"dataset": str(dataset), "hf_mmkd": version},
        "data": {"fingerprint": fingerprint, "train_rows": int(train_rows), "max_train_samples": max_train_samples,
                 "subset_seed": training_args.seed if max_train_samples else None,
                 "max_text_length": data_args.get("max_text_length"), "standardize": data_args.get("standardize")},
        "model": {k: _plain(v) for k, v in model_args.items() if k != "pattern_embedding"},
        "training": {"num_train_epochs": epochs, "learning_rate": learning_rate,
                     **{k: _plain(getattr(training_args, k, None)) for k in TEACHER_TRAINING_ARGS}},
    }


def teacher_incompatibility(teacher_config: Mapping[str, Any], student_kwargs: Mapping[str, Any],
                            method: str) -> list[str]:
    """What makes a teacher (its config.json) unable to teach a student built from `student_kwargs`: another
    task or number of classes, other feature widths, and, for methods that compare representations (all but
    `logit`), another hidden or fusion size."""
    keys = ["task", "num_labels"] + [f"{m}_feature_dim" for m in ("text", "audio", "vision")]
    if method != "logit":
        keys += ["hidden_size", "fusion_dim"]
    defaults = {"task": "regression", "num_labels": 1}
    teacher_config = dict(teacher_config)
    if "num_labels" not in teacher_config and teacher_config.get("id2label"):  # config.json keeps id2label only
        teacher_config["num_labels"] = len(teacher_config["id2label"])
    out = []
    for key in keys:
        have, want = teacher_config.get(key, defaults.get(key)), student_kwargs.get(key, defaults.get(key))
        if key == "fusion_dim":  # None means hidden_size
            have = have or teacher_config.get("hidden_size")
            want = want or student_kwargs.get("hidden_size")
        if have != want:
            out.append(f"{key} {have} (teacher) vs {want} (this run)")
    return out


def check_teacher(teacher_dir: str | os.PathLike, record: Mapping[str, Any], *, trains_teacher: bool,
                  reuse: str, method: str, student_kwargs: Mapping[str, Any]) -> list[str]:
    """Whether the teacher in `teacher_dir` may be used by a run that would record `record`; raises a
    ValueError saying what differs and how to retrain or reuse on purpose. `trains_teacher`: the run would
    train the teacher itself (stage teacher/both), so its training arguments must match too. Returns the
    differences that `reuse="always"` accepted (to be shown to the user)."""
    from hf_mmkd.inference import check_weight_files

    teacher_dir = Path(teacher_dir)
    check_weight_files(teacher_dir)  # no weights, a truncated file: one line (load_model checks the rest)
    how = ("pass --reuse_teacher never to train a new teacher in its place (or choose another --output_dir), or "
           "--reuse_teacher always to use it as it is" if trains_teacher else
           "train a matching one (--stage both --reuse_teacher never), or pass --reuse_teacher always to use it as "
           "it is")
    recorded = read_provenance(teacher_dir)
    if recorded is None:
        differences = [f"it has no provenance record ({PROVENANCE_FILE})"]
        if reuse != "always":
            raise ValueError(f"{teacher_dir} holds a teacher without a provenance record ({PROVENANCE_FILE}: "
                             "trained by an older hf_mmkd or elsewhere), so this run cannot tell what it was trained "
                             f"on: {how}")
    else:
        sections = ("data", "model", "training") if trains_teacher else ("data", "model")
        differences = provenance_differences(recorded, record, sections)
        if (recorded.get("result") or {}).get("global_step") == 0:
            differences.insert(0, "it was trained for 0 steps")
        if differences and reuse != "always":
            raise ValueError(f"the teacher in {teacher_dir} was not trained on this data with these arguments "
                             f"({'; '.join(differences)}): {how}")
    problems = teacher_incompatibility(read_json(teacher_dir / "config.json"), student_kwargs, method)
    if problems:
        raise ValueError(f"the teacher in {teacher_dir} cannot teach this student ({'; '.join(problems)}): train "
                         "one for this data and model (--stage both --reuse_teacher never) or pass another "
                         "--teacher_name_or_path")
    return differences
