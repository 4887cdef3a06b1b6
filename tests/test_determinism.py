"""Determinism of the main job on the CPU: the same seed and config give bit-identical teacher and student
weights (torch.equal on every tensor); another seed gives different ones."""

import json

import pytest
import torch
from safetensors.torch import load_file

from hf_mmkd.training import main

# A tiny run: 24 demo rows, batches of 8 (3 steps per stage), a small model, no evaluation or checkpoints.
TINY = ["--num_train_epochs", "1", "--max_train_samples", "24", "--max_eval_samples", "8",
        "--per_device_train_batch_size", "8", "--hidden_size", "8", "--num_attention_heads", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_rates", "", "--logging_steps", "100",
        "--method", "corrkd", "--missing_protocol", "p2"]




def weights(folder):
    return load_file(folder / "model.safetensors")


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        out = tmp_path / name
        assert main(["--output_dir", str(out), "--seed", seed, *TINY]) == 0
        runs[name] = {stage: weights(out / stage) for stage in ("teacher", "student")}
        assert json.loads((out / "results.json").read_text()) == {"teacher": {}, "student": {}}  # no rates asked
    for stage in ("teacher", "student"):
        assert_identical(runs["a"][stage], runs["b"][stage])
        assert any(not torch.equal(runs["a"][stage][k], runs["c"][stage][k]) for k in runs["a"][stage]), stage
    # Nothing of the atomic saves is left next to the checkpoints (the manifest lists what train.py wrote).
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ".hf_mmkd_outputs.json", "results.json", "student", "student_run", "teacher", "teacher_run"]


def test_reused_teacher_gives_the_same_student(tmp_path):
    """Re-running the main job with the same seed reuses the teacher it trained (provenance matches): the student
    must come out bit-identical, whether the teacher was trained in this run or reused."""
    out = tmp_path / "run"
    assert main(["--output_dir", str(out), "--seed", "7", *TINY]) == 0
    first = weights(out / "student")
    assert main(["--output_dir", str(out), "--seed", "7", *TINY]) == 0  # teacher stage skipped: reused
    assert_identical(first, weights(out / "student"))
