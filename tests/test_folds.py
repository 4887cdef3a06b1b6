"""dataset_scripts/make_folds.py: group-disjoint folds, the shipped MOSI fold file, fold k as a prepared data set."""

import json

import pytest
from conftest import MOSI_PKL, REPO_ROOT
from test_quality_benchmark import load_module

from hf_mmkd.data import folds as folds_lib

SHIPPED = REPO_ROOT / "benchmarks" / "folds" / "mosi_folds.json"

make_folds = load_module(REPO_ROOT / "dataset_scripts" / "make_folds.py", "make_folds")


def cli(*argv) -> int:
    """The script as its command line runs it: a user error is one line on stderr and a non-zero status."""
    from hf_mmkd.io import run_main

    return run_main("make_folds.py", make_folds.main, [str(a) for a in argv])


def check_partition(folds: dict, group_of) -> None:
    """Every fold's three splits are disjoint, cover every row, and no group is in two of them; the test splits
    of the folds are disjoint and cover every row."""
    every = [r for rows in folds["groups"].values() for r in rows]
    assert len(every) == len(set(every)) == folds["rows"]
    tests = []
    for k in range(folds["n_folds"]):
        parts = folds_lib.fold_splits(folds, k)
        assert sorted(r for rows in parts.values() for r in rows) == sorted(every)
        groups = {s: {group_of(r) for r in rows} for s, rows in parts.items()}
        assert not groups["train"] & groups["validation"] and not groups["train"] & groups["test"]
        assert not groups["validation"] & groups["test"]
        assert {s: len(rows) for s, rows in parts.items()} == folds["folds"][k]["rows"]
        tests += parts["test"]
    assert sorted(tests) == sorted(every)


def test_assign_folds_balances_whole_groups():
    # largest first into the fold with the fewest rows: a->0, b->1, c->2, d->2 (3 < 4, 5), then the two groups
    # of one row (their order is the seed's): the first to fold 1 (4 rows), the second to fold 0 (5, 5, 5: lowest)
    sizes = {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1, "f": 1}
    for seed in (0, 1, 2, 3):
        folds = folds_lib.assign_folds(sizes, 3, seed, validation_fraction=0.2)
        tests = [f["test"] for f in folds]
        assert tests[2] == ["c", "d"] and {tests[0][0], tests[1][0]} == {"a", "b"} and tests[0][0] == "a"
        assert sorted(tests[0][1:] + tests[1][1:]) == ["e", "f"]
        for f in folds:  # validation: whole groups of the other folds, until >= 20% of their rows (10 or 11)
            rest = [g for g in sizes if g not in f["test"]]
            assert set(f["validation"]) <= set(rest) and sum(sizes[g] for g in f["validation"]) >= 2
    assert folds_lib.assign_folds(sizes, 3, 7, 0.2) == folds_lib.assign_folds(sizes, 3, 7, 0.2)
    with pytest.raises(ValueError, match="6 groups cannot make 6 folds"):
        folds_lib.assign_folds(sizes, 6, 0, 0.2)


@pytest.fixture(scope="module")
def mosi_dir(tmp_path_factory):
    if not MOSI_PKL.is_file():
        pytest.fail(f"real CMU-MOSI pickle not found at {MOSI_PKL} (the project reads ../shared/data)")
    prepare = load_module(REPO_ROOT / "dataset_scripts" / "prepare_mmsa.py", "prepare_mmsa")
    out = tmp_path_factory.mktemp("prepared") / "mosi"
    # as configs/mosi_benchmark.yaml prepares it (the spec's name is recorded in the fold file)
    assert prepare.main([str(MOSI_PKL), str(out), "--name", "CMU-MOSI"]) == 0
    return out


def test_shipped_mosi_fold_file_is_rebuilt_byte_for_byte(mosi_dir, tmp_path, capsys):
    rebuilt = tmp_path / "mosi_folds.json"
    assert cli("build", str(mosi_dir), str(rebuilt), "--folds", "5", "--seed", "0") == 0
    assert rebuilt.read_bytes() == SHIPPED.read_bytes()
    folds = json.loads(SHIPPED.read_text())
    assert folds["rows"] == 2195 and folds["n_folds"] == 5 and len(folds["groups"]) == 93  # MOSI's 93 videos
    assert folds["group_by"] == {"id_pattern": folds_lib.DEFAULT_GROUP_PATTERN}
    # the video of a MOSI id is everything before its last underscore (video ids contain underscores too)
    check_partition(folds, lambda row_id: row_id.rsplit("_", 1)[0])
    assert all(f["rows"]["test"] >= 400 for f in folds["folds"])  # five test sets of ~439 rows, not one of 685
    # not replaced without --overwrite; a file this script did not write is never replaced
    capsys.readouterr()
    assert cli("build", str(mosi_dir), str(rebuilt)) != 0
    foreign = tmp_path / "other" / "folds.json"
    foreign.parent.mkdir()
    foreign.write_text("mine")
    assert cli("build", str(mosi_dir), str(foreign), "--overwrite") != 0
    assert foreign.read_text() == "mine"


def test_mosi_fold_as_prepared_data_set(mosi_dir, tmp_path):
    from hf_mmkd.data.prepared import load_dataset_and_spec

    out = tmp_path / "fold2"
    assert cli("fold", str(SHIPPED), str(mosi_dir), "2", str(out)) == 0
    splits, spec = load_dataset_and_spec(out)
    folds = json.loads(SHIPPED.read_text())
    assert {s: len(d) for s, d in splits.items()} == folds["folds"][2]["rows"]
    assert sorted(splits["test"]["id"]) == sorted(folds_lib.fold_splits(folds, 2)["test"])
    assert spec.label_range == (-3.0, 3.0) and spec.metric_set == "mmsa_pm3" and "fold 2 of 5" in spec.name


def synthetic_classes(folder, speakers=7, seed=0):
    """A prepared 4-class data set unlike MOSI: audio features only, ids `r<n>` that say nothing of the speaker,
    whose column `speaker` is the group; speaker s has s + 1 rows."""
    import numpy as np
    from datasets import Array2D, Dataset, DatasetDict, Features, Value

    from hf_mmkd.data.prepared import finish_prepared, save_prepared

    rng = np.random.default_rng(seed)
    rows = [(f"spk{s}", int(rng.integers(0, 4))) for s in range(speakers) for _ in range(s + 1)]
    features = Features({"id": Value("string"), "speaker": Value("string"), "audio_features": Array2D((None, 3), "float32"),
                         "has_text": Value("bool"), "has_audio": Value("bool"), "has_vision": Value("bool"),
                         "classification_label": Value("int64")})
    parts = {"train": rows[::2], "validation": rows[1::4], "test": rows[3::4]}
    dsd = DatasetDict()
    start = 0
    for split, part in parts.items():
        dsd[split] = Dataset.from_dict({
            "id": [f"r{start + i}" for i in range(len(part))], "speaker": [s for s, _ in part],
            "audio_features": [rng.standard_normal((2, 3)).astype("float32").tolist() for _ in part],
            "has_text": [False] * len(part), "has_audio": [True] * len(part), "has_vision": [False] * len(part),
            "classification_label": [y for _, y in part]}, features=features)
        start += len(part)
    dsd, spec = finish_prepared(dsd, name="synthetic speakers", source="tests/test_folds.py", task="classification",
                                class_names=["a", "b", "c", "d"])
    save_prepared(dsd, folder, "# synthetic speakers\n", spec)
    return folder


def test_folds_by_a_declared_column_on_classes(tmp_path, capsys):
    data = synthetic_classes(tmp_path / "speakers")
    fold_file = tmp_path / "folds.json"
    assert cli("build", str(data), str(fold_file), "--folds", "3", "--seed", "4",
                            "--group-column", "speaker") == 0
    folds = json.loads(fold_file.read_text())
    assert folds["rows"] == 28 and sorted(folds["groups"]) == [f"spk{s}" for s in range(7)]
    assert folds["group_by"] == {"column": "speaker"}
    assert {g: len(r) for g, r in folds["groups"].items()} == {f"spk{s}": s + 1 for s in range(7)}
    # sizes 7, 6, 5, 4, 3, 2, 1 largest first into the emptiest fold: {7, 2, 1}, {6, 3}, {5, 4} -> 10, 9, 9 rows
    assert [sorted(f["test"]) for f in folds["folds"]] == [["spk0", "spk1", "spk6"], ["spk2", "spk5"],
                                                          ["spk3", "spk4"]]
    speaker = {r: g for g, rows in folds["groups"].items() for r in rows}
    check_partition(folds, speaker.__getitem__)

    from hf_mmkd.data.prepared import load_dataset_and_spec

    assert cli("fold", str(fold_file), str(data), "1", str(tmp_path / "fold1")) == 0
    splits, spec = load_dataset_and_spec(tmp_path / "fold1")
    assert sorted(set(splits["test"]["speaker"])) == ["spk2", "spk5"] and len(splits["test"]) == 9
    assert spec.task == "classification" and spec.class_names == ("a", "b", "c", "d")
    assert not set(splits["train"]["speaker"]) & set(splits["validation"]["speaker"])

    # the default id pattern cannot group ids without a `_<part>`: one line naming the row id
    capsys.readouterr()
    assert cli("build", str(data), str(tmp_path / "bad.json")) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match row id 'r0'" in err[0]
    assert cli("fold", str(fold_file), str(data), "3", str(tmp_path / "fold3")) != 0
    assert "fold K=3 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "fold3").exists()
