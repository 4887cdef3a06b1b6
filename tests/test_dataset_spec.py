"""hf_mmkd.data.spec: the data-set spec's JSON, its validation, its defaults and what it derives."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_mmkd.data.demo import demo_spec, make_demo_dataset
from hf_mmkd.data.prepared import dataset_spec, load_dataset_and_spec, save_prepared
from hf_mmkd.data.spec import (
    SPEC_FILE,
    SPEC_KEYS,
    DatasetSpec,
    SpecError,
    build_spec,
    default_neutral_band,
    load_spec,
    save_spec,
)
from hf_mmkd.distillation import CorrKDLoss, MVSCLoss
from hf_mmkd.distillation.functional import class_targets, label_mapping

COUNTS = {"train": {"rows": 4, "audio": 4, "left_out": ["x"]}}


def spec(**changes):
    fields = dict(name="ratings", task="regression", label_column="label", label_range=(0, 10), neutral_band=(4, 6),
                  class_names=None, modalities={"audio": {"kind": "features", "dim": 5}}, source="tests",
                  splits=COUNTS)
    return DatasetSpec(**{**fields, **changes})


def classes(**changes):
    return spec(task="classification", label_column="classification_label", label_range=None, neutral_band=None,
                class_names=("neg", "neu", "pos"), **changes)


def test_json_round_trip_with_the_fixed_keys(tmp_path):
    s = spec()
    path = save_spec(s, tmp_path)
    data = json.loads(path.read_text())
    assert path.name == SPEC_FILE and list(data) == list(SPEC_KEYS)
    assert data["label_range"] == [0.0, 10.0] and data["class_names"] is None and data["version"] == 1
    assert load_spec(tmp_path) == s == DatasetSpec.from_dict(s.to_dict())
    c = classes()
    assert DatasetSpec.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize("change, message", [
    ({"task": "ordinal"}, "key 'task': expected 'regression' or 'classification', got 'ordinal'"),
    ({"label_range": None}, "key 'label_range': a regression data set needs its label range"),
    ({"label_range": [3, 3]}, "key 'label_range': low must be below high"),
    ({"neutral_band": [5, 11]}, "key 'neutral_band': expected low <= a <= b <= high"),
    ({"class_names": ["a", "b"]}, "key 'class_names': must be null for a regression data set"),
    ({"modalities": {"smell": {"kind": "features", "dim": 3}}}, "key 'modalities': unknown modality 'smell'"),
    ({"modalities": {"audio": {"kind": "mfcc", "dim": 3}}}, "key 'modalities': audio: kind must be one of"),
    ({"splits": {"train": {"rows": -1, "left_out": []}}}, "key 'splits': train: rows must be a row count >= 0"),
    ({"version": 2}, "key 'version': this hf_mmkd reads version 1, got 2"),
    ({"colour": "red"}, "key 'colour': unknown key"),
])
def test_bad_specs_name_the_file_and_the_key(tmp_path, change, message):
    (tmp_path / SPEC_FILE).write_text(json.dumps({**spec().to_dict(), **change}))
    with pytest.raises(SpecError, match=f"^{tmp_path / SPEC_FILE}: {message}".replace("[", r"\[")):
        load_spec(tmp_path)
    with pytest.raises(SpecError, match="key 'class_names': a classification data set needs at least 2"):
        DatasetSpec.from_dict({**classes().to_dict(), "class_names": ["only"]})


def test_a_folder_without_a_spec_asks_to_rerun_the_converter(tmp_path):
    with pytest.raises(SpecError, match=r"has no dataset_spec.json .*re-run the converter"):
        load_spec(tmp_path)


@pytest.mark.parametrize("label_range, band, metric_set", [
    ((-3, 3), (-0.5, 0.5), "mmsa_pm3"),  # MMSA's Acc-3 neutral class (clip to [-1, 1], round)
    ((-1, 1), (-0.1, 0.1), "mmsa_pm1"),  # MMSA's SIMS Acc-3 bin (-0.1, 0.1]
    ((0, 10), (4.166667, 5.833333), "generic_regression"),  # centre +- range / 12
    ((1, 5), (2.666667, 3.333333), "generic_regression"),
])
def test_defaults_come_from_the_label_range(label_range, band, metric_set):
    assert default_neutral_band(label_range) == pytest.approx(band)
    s = spec(label_range=label_range, neutral_band=default_neutral_band(label_range))
    assert s.metric_set == metric_set and s.num_labels == 1
    assert s.neutral_point == pytest.approx((band[0] + band[1]) / 2)
    assert classes().metric_set == "classification" and classes().num_labels == 3


def test_label_bin_mapping_maps_the_range_onto_minus_three_three():
    assert spec(label_range=(-3, 3), neutral_band=(-0.5, 0.5)).label_bin_mapping == (0.0, 1.0)  # MOSI: identity
    assert spec(label_range=(1, 5), neutral_band=(3, 3)).label_bin_mapping == (-3.0, 1.5)
    assert spec().label_bin_mapping == (-5.0, 0.6)
    # ratings 1..5 -> (y - 3) * 1.5 = -3, -1.5, 0, 1.5, 3 -> round half to even -> -3, -2, 0, 2, 3 -> bins + 3
    config = type("Config", (), {"dataset_spec": spec(label_range=(1, 5), neutral_band=(3, 3)).to_dict()})()
    shift, scale = label_mapping(config, "regression")
    ratings = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert class_targets(ratings, "regression", "7class", shift, scale).tolist() == [0, 1, 3, 5, 6]
    assert class_targets(ratings, "regression", "sign", shift, scale).tolist() == [0, 0, 1, 1, 1]
    assert label_mapping(config, "regression", label_shift=-3) == (-3.0, 1.0)  # explicit arguments win


def test_losses_take_their_bins_from_the_model_spec():
    from test_distillation_losses import make_config

    mosi = make_config(dataset_spec=spec(label_range=(-3, 3), neutral_band=(-0.5, 0.5)).to_dict())
    assert (CorrKDLoss(mosi).label_shift, CorrKDLoss(mosi).label_scale) == (0.0, 1.0)  # as without a spec
    ratings = make_config(dataset_spec=spec().to_dict())
    assert (MVSCLoss(ratings).label_shift, MVSCLoss(ratings).label_scale) == (-5.0, 0.6)
    cls = make_config(task="classification", num_labels=3, dataset_spec=classes().to_dict())
    assert (CorrKDLoss(cls).label_shift, CorrKDLoss(cls).label_scale) == (0.0, 1.0)


def tiny_dsd(labels, column="label", **extra_columns):
    n = len(labels)
    cols = {"id": [f"r{i}" for i in range(n)], column: labels, "raw_text": ["words"] * n, "has_text": [True] * n,
            **extra_columns}
    return DatasetDict({"train": Dataset.from_dict(cols), "test": Dataset.from_dict(cols)})


def test_build_spec_defaults_from_the_labels():
    s = build_spec(tiny_dsd([0.4, 7.2, 3.0]), name="t", source="s")
    assert s.task == "regression" and s.label_range == (0.0, 8.0) and s.neutral_band == default_neutral_band((0, 8))
    c = build_spec(tiny_dsd([0, 2, 1], column="classification_label"), name="t", source="s")
    assert c.task == "classification" and c.class_names == ("0", "1", "2")
    assert c.label_column == "classification_label" and c.splits["train"] == {"rows": 3, "text": 3, "left_out": []}
    assert c.modalities == {"text": {"kind": "raw_text", "dim": None}}
    with pytest.raises(ValueError, match="both a regression 'label' and a 'classification_label' column"):
        build_spec(tiny_dsd([1.0], classification_label=[1]), name="t", source="s")
    with pytest.raises(ValueError, match="split 'train', id 'r1': label 9 lies outside the label range"):
        build_spec(tiny_dsd([1.0, 9.0]), name="t", source="s", label_range=(-3, 3))
    with pytest.raises(ValueError, match="id 'r1': label 2 is not a class id in \\[0, 1\\]"):
        build_spec(tiny_dsd([0, 2], column="classification_label"), name="t", source="s", class_names=["a", "b"])


def test_the_demo_spec_is_one_for_files_and_memory(tmp_path):
    dsd = make_demo_dataset(seed=0)
    spec_demo = demo_spec(dsd)
    assert dataset_spec("demo") == spec_demo and load_dataset_and_spec("demo")[1] == spec_demo
    assert spec_demo.label_range == (-3.0, 3.0) and spec_demo.metric_set == "mmsa_pm3"
    save_prepared(dsd, tmp_path / "demo", "demo", spec_demo)
    assert load_spec(tmp_path / "demo") == spec_demo
    with pytest.raises(ValueError, match="do not describe the data"):
        save_prepared(make_demo_dataset(sizes={"train": 3}, seed=0), tmp_path / "x", "x", spec_demo)


def test_labels_match_check():
    s = spec()
    s.check_labels_match(None, "checkpoint 'old'")  # a checkpoint without a spec passes
    s.check_labels_match(spec(name="other name, same labels").to_dict(), "checkpoint 'a'")
    with pytest.raises(ValueError, match="checkpoint 'b' was trained on 'ratings', whose labels are 3 classes"):
        s.check_labels_match(classes().to_dict(), "checkpoint 'b'")
    assert np.isclose(s.neutral_point, 5.0)
