"""Kill-and-resume: `train.py` killed with SIGKILL in the middle of the student stage, then rerun with
`--resume_from_checkpoint true`, ends with the weights and metrics of an uninterrupted run with the same seed.

Tolerance: none, with and without the teacher-output cache. On the CPU, with one thread, the resumed run is
bit-identical (torch.equal on every tensor, == on every metric): a checkpoint holds the model, optimiser,
scheduler and RNG states; the Trainer skips the batches already seen; the student's missing-modality masks are
seeded by (seed, global step, micro-batch); the frozen teacher runs in eval mode, and its cache is filled in one
ordered pass before training (`MMKDTrainer.fill_teacher_cache`), so a resumed run refills it with the same bits.
Timing entries (`*_runtime`, `*_per_second`) are left out of the metric comparison. Both runs use one thread
(tests/conftest.py; OMP_NUM_THREADS=1 for the subprocess),
because the summation order of a multi-threaded CPU kernel may depend on the thread count.

Also here: atomic writes. A prepared dataset folder and train.py's final teacher/ and student/ folders are
written to a temporary sibling and renamed, so a failure midway leaves the previous result (or nothing).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT
from safetensors.torch import load_file

from hf_mmkd import MMKDForSentiment
from hf_mmkd.training import main

# 32 demo rows in batches of 8: 4 steps per epoch, 2 epochs = 8 student steps, a checkpoint every 2 steps.
COMMON = ["--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "8",
          "--hidden_size", "8", "--num_attention_heads", "2", "--logging_steps", "100", "--seed", "5"]
STUDENT = ["--stage", "student", "--method", "corrkd", "--missing_protocol", "p2", "--num_train_epochs", "2",
           "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "10",
           "--report_rates", "0.0,0.5"]
HOLD_AT_STEP = 5  # the killed run stops inside step 5 (of 8), after checkpoint-4 was written

# train.py's main job, plus a hold point: entering step HOLD_AT_STEP it writes a marker and waits to be killed,
# so that the SIGKILL lands mid-stage at a known place whatever the machine's load.
LAUNCHER = """
import os, pathlib, sys, time
from hf_mmkd.trainer import MMKDTrainer
from hf_mmkd.training import main

hold, marker = int(os.environ["HOLD_AT_STEP"]), pathlib.Path(os.environ["HOLD_MARKER"])
step = MMKDTrainer.training_step

def training_step(self, *args, **kwargs):
    if self.state.global_step + 1 >= hold:
        marker.write_text(str(self.state.global_step))
        time.sleep(600)
    return step(self, *args, **kwargs)

MMKDTrainer.training_step = training_step
sys.exit(main(sys.argv[1:]))
"""




def metrics(out):
    results = json.loads((out / "results.json").read_text())["student"]
    return {k: v for k, v in results.items() if not k.endswith(("_runtime", "_per_second"))}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "teacher_root"
    assert main(["--output_dir", str(root), "--stage", "teacher", "--num_train_epochs", "1",
                 "--eval_strategy", "no", "--save_strategy", "no", "--report_rates", "", *COMMON]) == 0
    return root / "teacher"


def kill_mid_stage(out, argv, marker, hold_at=HOLD_AT_STEP, while_held=None):
    """Run the launcher in a subprocess, call `while_held(proc)` once it holds inside step `hold_at`, then SIGKILL
    it; returns its exit status."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOLD_AT_STEP": str(hold_at), "HOLD_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, "--output_dir", str(out), *argv],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before the kill:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the hold point"
            time.sleep(0.1)
        if while_held is not None:
            while_held(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return proc.returncode


@pytest.mark.parametrize("cache, atol", [("false", 0.0), ("true", 0.0)], ids=["exact-no-cache", "cached-teacher"])
def test_sigkill_mid_student_stage_then_resume_matches_an_uninterrupted_run(tmp_path, teacher, cache, atol):
    student_args = [*STUDENT, "--teacher_name_or_path", str(teacher), "--cache_teacher_outputs", cache, *COMMON]
    reference = tmp_path / "reference"
    assert main(["--output_dir", str(reference), *student_args]) == 0

    out = tmp_path / "killed"
    assert kill_mid_stage(out, student_args, tmp_path / "hold.marker") == -signal.SIGKILL
    run_dir = out / "student_run"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "student").exists() and not (out / "results.json").exists()  # nothing looks finished
    before = {n: load_file(run_dir / n / "student" / "model.safetensors") for n in ("checkpoint-2", "checkpoint-4")}
    # A save cut short by a kill leaves a checkpoint without trainer_state.json: resume must skip it.
    (run_dir / "checkpoint-5").mkdir()
    (run_dir / "checkpoint-5" / "model.safetensors").write_bytes(b"half a file")

    assert main(["--output_dir", str(out), *student_args, "--resume_from_checkpoint", "true"]) == 0
    assert json.loads((run_dir / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8

    resumed = load_file(out / "student" / "model.safetensors")
    expected = load_file(reference / "student" / "model.safetensors")
    assert resumed.keys() == expected.keys()
    for name in expected:
        if atol == 0.0:
            assert torch.equal(resumed[name], expected[name]), name
        else:
            torch.testing.assert_close(resumed[name], expected[name], rtol=0.0, atol=atol, msg=name)
    got, want = metrics(out), metrics(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == (want[key] if atol == 0.0 else pytest.approx(want[key], abs=1e-4)), key
    # The checkpoints written before the kill are untouched and still load.
    for name, tensors in before.items():
        model = MMKDForSentiment.from_pretrained(run_dir / name / "student")
        assert model.config.role == "student"
        for key, value in load_file(run_dir / name / "student" / "model.safetensors").items():
            assert torch.equal(value, tensors[key]), (name, key)


# ---- --resume_from_checkpoint PATH: only a checkpoint of this run's own stage ----------------------------------

# 8 demo rows in one batch, 2 steps per stage, a checkpoint after each.
TWO_STEPS = ["--max_train_samples", "8", "--max_eval_samples", "8", "--per_device_train_batch_size", "8",
             "--hidden_size", "8", "--num_attention_heads", "2", "--max_steps", "2", "--eval_strategy", "no",
             "--save_strategy", "steps", "--save_steps", "1", "--report_rates", ""]


def test_resume_from_checkpoint_of_another_run_or_stage_or_method_is_refused(tmp_path, capsys, monkeypatch):
    from hf_mmkd.trainer import MMKDTrainer

    first = tmp_path / "first"
    assert main(["--output_dir", str(first), "--stage", "both", "--method", "logit", *TWO_STEPS]) == 0
    teacher_ckpt, student_ckpt = first / "teacher_run" / "checkpoint-1", first / "student_run" / "checkpoint-1"
    capsys.readouterr()

    def refused(argv):
        assert main(argv) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
        assert len(errors) == 1, errors
        return errors[0]

    # another run's checkpoint (another --output_dir): refused before anything is written
    other = tmp_path / "other"
    assert refused(["--output_dir", str(other), "--stage", "student", "--method", "logit", "--teacher_name_or_path",
                    str(first / "teacher"), "--resume_from_checkpoint", str(student_ckpt), *TWO_STEPS]) == (
        f"train.py: error: --resume_from_checkpoint {student_ckpt} is not a checkpoint of this run: expected a "
        f"checkpoint-N folder in {other / 'student_run'} (--output_dir {other}); resume another run with its own "
        "--output_dir, or pass 'true' to resume from this run's last checkpoint")
    assert not other.exists()
    # this run's teacher checkpoint for a student-only run: not a checkpoint of the stage it trains
    assert f"expected a checkpoint-N folder in {first / 'student_run'} (--output_dir" in refused(
        ["--output_dir", str(first), "--stage", "student", "--method", "logit", "--resume_from_checkpoint",
         str(teacher_ckpt), *TWO_STEPS])
    # this run's student checkpoint, but written by another method
    assert refused(["--output_dir", str(first), "--stage", "student", "--method", "mitr", "--resume_from_checkpoint",
                    str(student_ckpt), *TWO_STEPS]) == (
        f"train.py: error: --resume_from_checkpoint {student_ckpt} was written by a student stage of method 'logit', "
        "but this stage is a student stage of method 'mitr': resume with the arguments that wrote it, or start over "
        "(--resume_from_checkpoint false)")
    assert sorted(p.name for p in (first / "student_run").iterdir()) == ["checkpoint-1", "checkpoint-2"]

    # this run's own teacher checkpoint: the teacher stage resumes from it, the student stage starts afresh
    resumed = []
    train = MMKDTrainer.train
    monkeypatch.setattr(MMKDTrainer, "train", lambda self, *a, **k: resumed.append(k["resume_from_checkpoint"])
                        or train(self, *a, **k))
    assert main(["--output_dir", str(first), "--stage", "both", "--method", "logit", "--reuse_teacher", "never",
                 "--resume_from_checkpoint", str(teacher_ckpt), *TWO_STEPS]) == 0
    assert resumed == [str(teacher_ckpt), None]
    state = json.loads((first / "teacher_run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


# ---- atomic writes: an interruption never leaves a half-written result that looks complete -----------------


def test_prepared_dataset_failing_mid_write_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    import datasets

    from hf_mmkd.data import load_prepared, make_demo_dataset, save_prepared
    from hf_mmkd.data.demo import demo_spec

    dsd = make_demo_dataset(sizes={"train": 6, "validation": 3}, seed=0)
    out = tmp_path / "ds"
    write = datasets.Dataset.to_parquet
    calls = []

    def fail_on_second_split(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return write(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "to_parquet", fail_on_second_split)
    with pytest.raises(OSError, match="disk full"):
        save_prepared(dsd, out, "card", demo_spec(dsd))
    assert list(tmp_path.iterdir()) == []  # neither OUT_DIR nor its temporary sibling
    monkeypatch.setattr(datasets.Dataset, "to_parquet", write)
    save_prepared(dsd, out, "first", demo_spec(dsd))
    calls.clear()
    monkeypatch.setattr(datasets.Dataset, "to_parquet", fail_on_second_split)
    with pytest.raises(OSError, match="disk full"):
        second = make_demo_dataset(sizes={"train": 4, "validation": 2}, seed=1)
        save_prepared(second, out, "second", demo_spec(second, seed=1), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert "first" in (out / "README.md").read_text() and len(load_prepared(out)["train"]) == 6


def test_final_checkpoint_save_failing_midway_keeps_the_previous_one(tmp_path, monkeypatch):
    """train.py writes teacher/ and student/ to a temporary sibling and renames it into place."""
    out = tmp_path / "run"
    tiny = ["--output_dir", str(out), "--num_train_epochs", "1", "--max_train_samples", "8",
            "--per_device_train_batch_size", "8", "--hidden_size", "8", "--num_attention_heads", "2",
            "--eval_strategy", "no", "--save_strategy", "no", "--report_rates", "", "--method", "logit"]
    assert main(tiny) == 0
    before = {p.name: p.read_bytes() for p in (out / "student").iterdir()}
    save = MMKDForSentiment.save_pretrained

    def save_then_crash(self, folder, *args, **kwargs):
        save(self, folder, *args, **kwargs)  # the weights are on disk, the processor files are not yet
        raise KeyboardInterrupt("interrupted mid-save (simulated)")

    monkeypatch.setattr(MMKDForSentiment, "save_pretrained", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        main([*tiny, "--stage", "student", "--learning_rate", "0.01"])
    assert {p.name: p.read_bytes() for p in (out / "student").iterdir()} == before  # the old one, whole
    assert sorted(p.name for p in out.iterdir()) == [
        ".hf_mmkd_outputs.json", "results.json", "student", "student_run", "teacher", "teacher_run"]
