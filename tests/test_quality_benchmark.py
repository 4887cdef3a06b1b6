"""benchmarks/quality.py end to end on ICT-MMMO (real data, tiny budget): train, evaluate P5 on test, write reports."""

import importlib.util
import json
import math
import shlex

import numpy as np
import pytest
from conftest import MMMO_PKL, REPO_ROOT


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mmmo_dir(tmp_path_factory):
    if not MMMO_PKL.is_file():
        pytest.fail(f"real ICT-MMMO pickle not found at {MMMO_PKL} (the project reads ../shared/data)")
    prepare = load_module(REPO_ROOT / "dataset_scripts" / "prepare_mmsa.py", "prepare_mmsa")
    out = tmp_path_factory.mktemp("prepared") / "mmmo"
    assert prepare.main([str(MMMO_PKL), str(out), "--label-range", "1", "5"]) == 0
    return out


def finite_numbers(metrics: dict) -> bool:
    return bool(metrics) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in metrics.values())


def test_mmmo_quality_benchmark_end_to_end(mmmo_dir, tmp_path, capsys):
    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_benchmark")
    argv = ["--dataset-name", "mmmo", "--dataset", str(mmmo_dir), "--seeds", "1111", "--methods", "none", "logit",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--train-args=--num_train_epochs 1 --teacher_num_train_epochs 1 --max_train_samples 64"]
    assert quality.main(argv) == 0

    out = tmp_path / "out"
    record = json.loads((out / "quality_mmmo.json").read_text())
    # the recorded command, split as a shell would, gives back exactly the arguments of the run
    assert shlex.split(record["command"]) == ["python", "benchmarks/quality.py", *argv]
    assert record["seeds"] == [1111] and record["dataset_name"] == "mmmo" and record["protocols"] == ["p5"]
    assert isinstance(record["git_commit"], str) and record["git_commit"]
    assert {"torch", "transformers", "python"} <= set(record["versions"])
    assert {"cpu_count", "device", "platform"} <= set(record["machine"])
    # Text is absent from the train split, present in test: found from the data and reported; train.py built no
    # text encoder, so no checkpoint reads text and P5 keeps the patterns of audio and vision.
    assert record["modality_rows"]["train"]["text"] == 0 and record["untrained_modalities"] == ["text"]

    p5 = record["results"]["p5"]
    # ratings 1..5: the spec (--label-range 1 5) gives the generic regression metrics; no name is matched
    assert p5["dataset"] == "mmmo" and p5["split"] == "test" and p5["metric_set"] == "generic_regression"
    assert "label_shift" not in p5 and p5["dataset_spec"]["label_range"] == [1.0, 5.0]
    reference = record["reference"]
    assert reference.startswith("constant: train median") and reference == p5["reference"]
    assert set(p5["checkpoints"]) == {"teacher", "none", "logit", reference}
    assert all(mods == ["audio", "vision"] for mods in p5["modalities"].values()), p5["modalities"]
    for name, seeds in p5["checkpoints"].items():
        conditions = seeds["1111"]
        assert list(conditions) == ["{a}", "{v}", "{a,v}"], name  # the CMAD patterns without text
        assert all(set(m) == {"Sign_acc_2", "Sign_bal_acc_2", "Sign_F1_score", "Band_acc_3", "MAE", "Corr"}
                   for m in conditions.values())
        # a constant's Corr is undefined (NaN); every other number is finite
        assert all(finite_numbers({k: v for k, v in m.items() if name != reference or k != "Corr"})
                   for m in conditions.values()), name
    for name, s in record["p5_summary"].items():
        (label, row), = s["summary"].items()
        assert label == "Avg. (3 patterns)"
        assert all(math.isfinite(cell["mean"]) and math.isfinite(cell["std"]) for metric, cell in row.items()
                   if name != reference or metric != "Corr"), name

    summary = (out / "quality_mmmo_summary.md").read_text()
    assert all(f"| {name} | 1 | Avg. (3 patterns) |" in summary for name in ("teacher", "none", "logit", reference))
    assert "| Acc-2 (sign) | Bal. Acc-2 (sign) | F1 (sign) | Acc-3 (band) | MAE | Corr |" in summary
    assert "the models have no text encoder" in summary and "left out: {l}, {l,a}, {l,v}, {l,a,v}" in summary
    assert "train.py builds no encoder for them" in summary
    assert (out / "quality_mmmo_p5.md").is_file() and (out / "quality_mmmo_p5.png").stat().st_size > 0
    assert not (out / "quality_mmmo_targets.md").exists()  # the targets are MOSI's

    # The per-seed evaluation is cached next to the checkpoints: a second call reads it (same numbers, nothing
    # evaluated), and a changed checkpoint is evaluated again.
    cache = tmp_path / "work" / "seed1111" / "evaluation_p5.json"
    assert cache.is_file()
    import hf_mmkd.evaluation

    calls, real = [], hf_mmkd.evaluation.evaluate_checkpoints

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    hf_mmkd.evaluation.evaluate_checkpoints = counting
    code_changed_since = quality.code_changed_since
    try:
        quality.code_changed_since = lambda commit: True  # the evaluating code changed: evaluated again
        assert quality.main([*argv[:-3], "--out", str(tmp_path / "again"), argv[-1]]) == 0
        assert len(calls) == 1
        calls.clear()
        quality.code_changed_since = lambda commit: False
        assert quality.main([*argv[:-3], "--out", str(tmp_path / "again"), argv[-1]]) == 0
        assert calls == []
        again = json.loads((tmp_path / "again" / "quality_mmmo.json").read_text())
        assert again["results"]["p5"]["checkpoints"] == record["results"]["p5"]["checkpoints"]
        config = tmp_path / "work" / "seed1111" / "logit" / "student" / "config.json"
        config.write_text(config.read_text() + "\n")  # same model, different bytes: evaluated again
        assert quality.main([*argv[:-3], "--out", str(tmp_path / "again"), argv[-1]]) == 0
        assert len(calls) == 1
    finally:
        hf_mmkd.evaluation.evaluate_checkpoints = real
        quality.code_changed_since = code_changed_since
    # A student trained with other settings than its YAML (plus --train-args) now asks for is never reported
    # under the new ones: the run stops in one line naming the folder and what differs, and keeps the folder.
    changed = argv[-1] + " --recoverability_floor 0.5"
    capsys.readouterr()
    assert quality.main([*argv[:-3], "--out", str(tmp_path / "third"), changed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed1111/none/student was trained with other settings" in err[0]
    assert "recoverability_floor: None -> 0.5" in err[0]
    assert (tmp_path / "work" / "seed1111" / "none" / "student" / "config.json").is_file()
    assert not (tmp_path / "third").exists()
    assert code_changed_since("unknown")
    if quality.git_commit() != "unknown" and quality.git_dirty() is False:  # a clean checkout: its own code
        assert not code_changed_since(quality.git_commit())


def test_readme_benchmark_tables_are_the_generated_reports():
    """The README's benchmark tables are the committed reports, not numbers typed in: each `quality:<name>` section
    equals the body of benchmarks/results/quality_<name>_{targets,summary}.md, and `ablations:mosi` the body of
    ablations_mosi.md."""
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    sections = dict(re.findall(r"<!-- (\S+):start -->\n(.*?)\n<!-- \1:end -->", readme, re.S))
    results = REPO_ROOT / "benchmarks" / "results"
    expected = {}
    for name in ("mosi", "mosi_folds", "mmmo"):
        report = next(p for p in (results / f"quality_{name}_targets.md", results / f"quality_{name}_summary.md")
                      if p.is_file())
        expected[f"quality:{name}"] = report.read_text().split("\n", 2)[2].strip()
    expected["ablations:mosi"] = (results / "ablations_mosi.md").read_text().split("\n", 2)[2].strip()
    for key, body in expected.items():
        assert sections.get(key) == body, f"README section {key} differs from its generated report"


def _summary(rows: dict) -> dict:
    """A `report.summarize`-shaped summary: {checkpoint: {"n_seeds", "summary": {label: {metric: cell}}}}."""
    return {name: {"n_seeds": 2, "summary": {"mean r=0.0-0.9": {m: {"mean": v, "std": 0.01, "n": 2}
                                                                 for m, v in row.items()}}}
            for name, row in rows.items()}


def test_tables_show_a_metric_where_the_run_has_it_and_n_a_where_not():
    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_tables")
    na = quality.NOT_IN_RUN
    assert na == "n/a: not in this run"
    summary = _summary({"new": {"Non0_acc_2": 0.70, "Non0_bal_acc_2": 0.64, "MAE": 1.1},
                        "old": {"Non0_acc_2": 0.72, "MAE": 1.0}})
    table = quality.summary_table(summary, ["Non0_acc_2", "Non0_bal_acc_2", "MAE"])
    assert "| Acc-2 (Non0) | Bal. Acc-2 (Non0) | MAE |" in table
    assert "| new | 2 | mean r=0.0-0.9 | 70.00 ± 1.00 | 64.00 ± 1.00 | 1.100 ± 0.010 |" in table
    assert f"| old | 2 | mean r=0.0-0.9 | 72.00 ± 1.00 | {na} | 1.000 ± 0.010 |" in table
    config = {"targets": {"Non0_acc_2": [">=", 0.71]}}
    targets = quality.targets_table(summary, "2 seed(s)", config, "P2", None, ["Non0_acc_2", "Non0_bal_acc_2"])
    assert f"| old | 0.7200 ± 0.0100 | {na} |" in targets and "| target | >= 0.71 | - |" in targets
    assert "Best student by mean Non0_acc_2: **old**; targets met: ['Non0_acc_2']" in targets
    diffs = {"logit": {"Non0_acc_2": [0.01, -0.03], "MAE": [0.0, 0.02]}}  # a run without the balanced metric
    paired = quality.paired_table(diffs, {"kd_vs_none": {"Non0_bal_acc_2": {"every": 0.0}, "Non0_acc_2": {}}})
    assert f"| logit | {na} | -1.00 ± 2.00 | {na} | {na} |" in paired
    assert f"- KD vs `none` on Non0_bal_acc_2: {na}" in paired and "NOT met" not in paired
    diffs["logit"]["Non0_bal_acc_2"] = [0.02, 0.01]
    paired = quality.paired_table(diffs, {"kd_vs_none": {"Non0_bal_acc_2": {"every": 0.0, "best": 2.0}}})
    assert "| logit | +1.50 ± 0.50 | +2.00, +1.00 | 2/2 |" in paired
    assert "improves Non0_bal_acc_2 over `none` by >= 0 points (paired mean): met." in paired
    assert "(logit) improves Non0_bal_acc_2 over `none` by +1.50 points (target >= 2): NOT met." in paired


def test_reports_rewritten_from_the_stored_records_match_the_committed_ones(tmp_path):
    """`--from-record` retrains nothing and reproduces the committed summary and ablation tables from their JSON
    records (up to the commit that rewrote them); a missing record is a one-line error."""
    import re
    import shutil

    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_record")
    ablations = load_module(REPO_ROOT / "benchmarks" / "ablations.py", "ablations_record")
    results = REPO_ROOT / "benchmarks" / "results"
    for name in ("quality_mmmo.json", "ablations_mosi.json"):
        shutil.copy(results / name, tmp_path / name)
    assert quality.main(["--dataset-name", "mmmo", "--dataset", str(tmp_path), "--from-record",
                         "--out", str(tmp_path)]) == 0
    assert ablations.main(["--from-record", "--out", str(tmp_path)]) == 0

    def body(path):
        return re.sub(r"--from-record` \(commit \w+", "--from-record` (commit X", path.read_text())

    for name in ("quality_mmmo_summary.md", "ablations_mosi.md"):
        assert body(tmp_path / name) == body(results / name), name
    assert "n/a: not in this run" in body(tmp_path / "ablations_mosi.md")
    assert quality.main(["--dataset-name", "mmmo", "--dataset", str(tmp_path), "--from-record",
                         "--out", str(tmp_path / "none")]) == 2


def test_a_rewritten_report_says_when_the_training_configs_changed_since_its_run(tmp_path):
    """`--from-record` keeps a run's figures; when configs/NAME_*.yaml (not the benchmark config, which is read as
    it is now) differ from the run's commit, the report names them, so no table is read as the current configs'."""
    import subprocess

    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_configs_changed")
    assert quality.configs_changed_since("0" * 40, "mosi") is None  # not in this repository: cannot be told
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "configs"], cwd=REPO_ROOT, capture_output=True,
                           text=True).stdout
    if not dirty:
        assert quality.configs_changed_since(head, "mmmo") == []
    # The first fold run (its record committed at e6bc0cd) validated at r = 0.5; the MOSI configs now select on the
    # mean over r. Its tables rewritten from that record name the configs changed since.
    stored = subprocess.run(["git", "show", "e6bc0cd:benchmarks/results/quality_mosi_folds.json"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    if stored.returncode != 0:
        pytest.skip("commit e6bc0cd is not in this clone")
    record = json.loads(stored.stdout)
    changed = quality.configs_changed_since(record["git_commit"], "mosi")
    if changed is None:
        pytest.skip(f"commit {record['git_commit'][:10]} is not in this clone")
    assert "configs/mosi_none.yaml" in changed and "configs/mosi_benchmark.yaml" not in changed
    (tmp_path / "quality_mosi_folds.json").write_text(stored.stdout)
    assert quality.main(["--dataset-name", "mosi", "--dataset", str(tmp_path), "--folds",
                         str(REPO_ROOT / "benchmarks" / "folds" / "mosi_folds.json"), "--from-record",
                         "--out", str(tmp_path)]) == 0
    summary = (tmp_path / "quality_mosi_folds_summary.md").read_text()
    assert "The training configs changed since that run (`configs/mosi_corrkd.yaml`" in summary
    assert "| logit | +0.06 ± 0.96 |" in summary  # that run's figures, not the current record's


def test_quality_benchmark_fold_mode_end_to_end(tmp_path, capsys):
    """`--folds`: the same training and evaluation per fold (one seed), on fold k's data set, with the summary over
    folds (`n_folds` in every row) in quality_<name>_folds.json. Tiny synthetic scores in [1, 5], grouped by a
    declared id pattern (ids `train_17` -> group `train_1`), so no group is in two splits of a fold."""
    from any_data import write_mmsa_pickle

    from hf_mmkd.data.folds import fold_splits
    from hf_mmkd.data.prepared import load_prepared
    from hf_mmkd.io import run_main

    prepare = load_module(REPO_ROOT / "dataset_scripts" / "prepare_mmsa.py", "prepare_mmsa")
    make_folds = load_module(REPO_ROOT / "dataset_scripts" / "make_folds.py", "make_folds")
    write_mmsa_pickle(tmp_path / "any.pkl", label_range=(1.0, 5.0), sizes=(40, 12, 16))
    data, fold_file = tmp_path / "prepared", tmp_path / "folds.json"
    assert prepare.main([str(tmp_path / "any.pkl"), str(data), "--label-range", "1", "5"]) == 0
    assert make_folds.main(["build", str(data), str(fold_file), "--folds", "2", "--seed", "3",
                            "--group-pattern", r"([a-z]+_\d*?)\d"]) == 0
    folds = json.loads(fold_file.read_text())
    assert len(folds["groups"]) == 8 and folds["rows"] == 68  # train_, train_1..3, valid_, valid_1, test_, test_1
    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_benchmark_folds")
    argv = ["--dataset-name", "mmmo", "--dataset", str(data), "--folds", str(fold_file), "--methods", "none", "logit",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--train-args=--num_train_epochs 1 --teacher_num_train_epochs 1"]
    assert quality.main(argv) == 0
    record = json.loads((tmp_path / "out" / "quality_mmmo_folds.json").read_text())
    assert record["n_folds"] == 2 and record["seeds"] == [1111] and record["folds"] == str(fold_file)
    for k in range(2):  # fold k's test split is fold k of the fold file
        test_ids = load_prepared(tmp_path / "work" / f"fold{k}" / "data")["test"]["id"]
        assert sorted(test_ids) == sorted(fold_splits(folds, k)["test"])
    p5 = record["results"]["p5"]
    reference = record["reference"]
    assert reference == quality.FOLD_REFERENCE and set(record["reference_value"]) == {"fold0", "fold1"}
    assert set(p5["checkpoints"]) == {"teacher", "none", "logit", reference}
    assert all(set(per_fold) == {"fold0", "fold1"} for per_fold in p5["checkpoints"].values())
    # every summary row: the mean over the two folds, n_folds = 2, one seed each
    for name, row in record["p5_summary"].items():
        assert row["n_folds"] == 2 and row["n_seeds"] == 1, name
        (label, cells), = row["summary"].items()
        per_fold = [np.mean([c["MAE"] for c in p5["checkpoints"][name][f].values()]) for f in ("fold0", "fold1")]
        assert cells["MAE"]["mean"] == pytest.approx(np.mean(per_fold)), name
    assert set(record["paired_differences"]) == {"logit"}
    assert len(record["paired_differences"]["logit"]["MAE"]) == 2  # paired per fold
    summary = (tmp_path / "out" / "quality_mmmo_folds_summary.md").read_text()
    assert "mean ± std over 2 folds (seed 1111 each)" in summary
    # said per fold, not per seed; each fold's own notes (its data set's name, its constant) once, not once a fold
    assert "| checkpoint | folds |" in summary and "| none | 2 |" in summary
    paired = quality.paired_table(record["paired_differences"], {"kd_vs_none": {"MAE": {"every": 0.0}}}, "fold")
    assert ("the `none` student of the same fold (same teacher, same test masks), main protocol mean; mean ± std "
            "(population) over folds, then the per-fold differences and the folds where KD is better") in paired
    assert "| student | MAE | per-fold MAE | KD better |" in paired
    assert "fold 0 of 2" not in summary and "fold 1 of 2" not in summary
    assert summary.count("Each fold's data set") == 1 and "fold0 " in summary and "fold1 " in summary
    per_condition = (tmp_path / "out" / "quality_mmmo_folds_p5.md").read_text()
    assert "Mean ± std over folds" in per_condition and "(2 folds)" in per_condition
    assert "seeds)" not in per_condition and "(1 run)" not in per_condition  # each fold's complete pattern is a run
    assert not (tmp_path / "out" / "quality_mmmo.json").exists()
    # a second run reuses the folds' data sets and checkpoints; a work folder of another fold file is refused
    other = tmp_path / "other.json"
    assert make_folds.main(["build", str(data), str(other), "--folds", "2", "--seed", "4",
                            "--group-pattern", r"([a-z]+_\d*?)\d"]) == 0
    capsys.readouterr()
    assert run_main("quality.py", quality.main, [*argv[:5], str(other), *argv[6:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds fold 0 of another fold file" in err[0]

    # --reuse-record on a fold run: both folds come from the record (a clean HEAD's), nothing is trained again
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    if head and not quality.files_changed_since(head, "hf_mmkd", "modeling", "train.py", "configs/mmmo_*.yaml"):
        assert record["fold_file_sha256"] == quality._file_sha256(fold_file)
        record.update(git_commit=head, git_dirty=False, evaluated_at_commits=[head])
        stored = tmp_path / "stored.json"
        stored.write_text(json.dumps(record))
        again = [*argv[:argv.index("--work")], "--work", str(tmp_path / "work2"), "--out", str(tmp_path / "out2"),
                 argv[-1], "--reuse-record", str(stored)]
        assert quality.main(again) == 0
        assert not list((tmp_path / "work2").glob("fold*/teacher"))  # only the folds' data sets were written
        rerun = json.loads((tmp_path / "out2" / "quality_mmmo_folds.json").read_text())
        assert rerun["reused"]["units"] == ["fold0", "fold1"]
        assert rerun["results"]["p5"]["checkpoints"] == record["results"]["p5"]["checkpoints"]
        assert rerun["p5_summary"] == record["p5_summary"]
        capsys.readouterr()
        elsewhere = [*again[:5], str(other), "--methods", "none", "logit", "--work", str(tmp_path / "work3"),
                     *again[again.index("--out"):]]
        assert run_main("quality.py", quality.main, elsewhere) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "quality.py" in line]
        assert len(err) == 1 and "another fold file" in err[0] and str(stored) in err[0]
        # --fold-ids: part of the folds (here all reused); a fold the file does not have is a one-line error
        part = [*again[:again.index("--out")], "--out", str(tmp_path / "out3"), *again[again.index("--out") + 2:]]
        assert quality.main([*part, "--fold-ids", "1"]) == 0
        one = json.loads((tmp_path / "out3" / "quality_mmmo_folds.json").read_text())
        assert one["n_folds"] == 1 and one["results"]["p5"]["seeds"] == ["fold1"]
        fold1 = record["results"]["p5"]["checkpoints"]["none"]["fold1"]
        assert one["results"]["p5"]["checkpoints"]["none"] == {"fold1": fold1}
        capsys.readouterr()
        assert run_main("quality.py", quality.main, [*part, "--fold-ids", "0", "2"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "quality.py" in line]  # not the folds' writes
        assert len(err) == 1 and "--fold-ids 2:" in err[0] and str(fold_file) in err[0]


def test_fold_notes_name_the_fold_files_count_when_a_run_holds_part_of_its_folds():
    """A `--fold-ids 1 3` run merges two folds of a five-fold file: the one merged note says "fold k of 5" (what
    the spec names say), not the number of folds in the run."""
    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_notes")
    notes = [f"Shown as 'mosi' (--dataset-name); the data set's spec names it 'CMU-MOSI fold {k} of 5'. The name "
             "changes titles only." for k in (1, 3)] + ["Reference row 'constant: train median 0.2' ...", "other"]
    merged = quality.fold_notes({"notes": notes, "reference_value": {"fold1": 0.2, "fold3": 0.0}})
    assert merged[0] == "other" and len(merged) == 2
    assert "(spec name '... fold k of 5')" in merged[1] and "(fold1 0.2, fold3 0)" in merged[1]
    assert quality.fold_notes({"notes": merged, "reference_value": {"fold1": 0.2, "fold3": 0.0}}) == merged
    # fold 0 taken from an earlier one-fold record brings its merged note: replaced, not kept beside the new one
    earlier = "Each fold's data set (spec name '... fold k of 1') is shown under one name. (fold0 0)"
    joined = quality.fold_notes({"notes": [earlier, *notes], "reference_value": {"fold0": 0, "fold1": 0.2, "fold3": 0}})
    assert joined[0] == "other" and len(joined) == 2 and "fold k of 5" in joined[1] and "(fold0 0, fold1" in joined[1]


def test_reuse_record_takes_the_seeds_an_earlier_run_measured(tmp_path, capsys):
    """`--reuse-record`: a run of seeds 1111 1112 takes seed 1111 from an earlier run's record (trains and
    evaluates nothing for it: its work folder stays absent) and reports the same figures for it as that run; a record
    that cannot stand for the current code, configs, data or flags is a one-line error that names it."""
    import subprocess

    from any_data import write_mmsa_pickle

    from hf_mmkd.io import run_main

    quality = load_module(REPO_ROOT / "benchmarks" / "quality.py", "quality_reuse")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    if not head or quality.files_changed_since(head, "hf_mmkd", "modeling", "train.py", "configs/mmmo_*.yaml"):
        pytest.skip("needs a git checkout whose hf_mmkd/, modeling/, train.py and configs equal its HEAD")
    prepare = load_module(REPO_ROOT / "dataset_scripts" / "prepare_mmsa.py", "prepare_mmsa")
    write_mmsa_pickle(tmp_path / "any.pkl", label_range=(1.0, 5.0), sizes=(40, 12, 16))
    data = tmp_path / "prepared"
    assert prepare.main([str(tmp_path / "any.pkl"), str(data), "--label-range", "1", "5"]) == 0
    common = ["--dataset-name", "mmmo", "--dataset", str(data), "--methods", "none", "logit",
              "--train-args=--num_train_epochs 1 --teacher_num_train_epochs 1"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert quality.main([*common, "--seeds", "1111", "--work", str(tmp_path / "w1"), "--out", str(first)]) == 0
    record_path = first / "quality_mmmo.json"
    record = json.loads(record_path.read_text())
    record.update(git_commit=head, git_dirty=False, evaluated_at_commits=[head])  # as if run from a clean HEAD
    record_path.write_text(json.dumps(record))
    argv = [*common, "--seeds", "1111", "1112", "--work", str(tmp_path / "w2"), "--out", str(second),
            "--reuse-record", str(record_path)]
    assert quality.main(argv) == 0
    assert not (tmp_path / "w2" / "seed1111").exists() and (tmp_path / "w2" / "seed1112").is_dir()
    both = json.loads((second / "quality_mmmo.json").read_text())
    assert both["seeds"] == [1111, 1112] and both["reused"] == {"record": str(record_path), "units": [1111]}
    p5, earlier = both["results"]["p5"], record["results"]["p5"]
    for name, per_seed in earlier["checkpoints"].items():
        assert p5["checkpoints"][name]["1111"] == per_seed["1111"], name
        assert set(p5["checkpoints"][name]) == {"1111", "1112"}, name
    assert len(both["paired_differences"]["logit"]["MAE"]) == 2
    summary = (second / "quality_mmmo_summary.md").read_text()
    assert "Seeds 1111: trained and evaluated by `python benchmarks/quality.py" in summary
    # what the record cannot stand for: each a one-line error naming the record, nothing trained
    for change, words in [({"train_args": "--num_train_epochs 2"}, "was trained with --train-args"),
                          ({"git_commit": "0" * 40}, "is not in this repository"),
                          ({"git_dirty": True}, "uncommitted changes"),
                          ({"results": {"p5": {**record["results"]["p5"], "seeds": [7]}}}, "none of this run's"),
                          ({"dataset_name": "mosi"}, "not a seed run of 'mmmo'"),
                          ({"folds": "f.json"}, "is a fold run of 'mmmo', not a seed run")]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**record, **change}))
        capsys.readouterr()
        assert run_main("quality.py", quality.main, [*argv[:-1], str(bad)]) == 2, change
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(bad) in err[0] and words in err[0], (change, err)
