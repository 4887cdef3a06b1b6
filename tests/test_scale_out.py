"""Scaling out on accelerate, shown on one host: the main job as two "machines" on loopback (gloo, one CPU process
each), the "Scaling out" commands of docs/scaling.md (DDP with bf16, sharded evaluation), bf16 against fp32, and the GPU /
multi-node launch templates checked by accelerate's own config loader."""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from hf_mmkd.training import main

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "configs" / "accelerate"
# A few optimiser steps on the demo data: 64 train rows, a global batch of 32, 2 epochs = 4 steps per stage; the
# student starts from the teacher's weights, so that its metrics after 4 steps are those of a model that predicts
# (a student from scratch still answers a near-constant after 4 steps, which any two runs would match).
SHORT = ["--method", "corrkd", "--num_train_epochs", "2", "--max_train_samples", "64", "--max_eval_samples", "32",
         "--seed", "1111", "--student_init", "teacher"]
# Validation metrics (32 rows, P2 at r = 0 and 0.5) of the two-machine run against the one-process run with the
# same global batch and seed: each optimiser step sees the same 32 rows, but the student's training masks are drawn
# per process (two draws of 16 rows, not one of 32) and the gradient is averaged over the two processes, so the
# numbers are close, not equal. Measured: teacher within 0.012 (no masks), student Corr 0.845 vs 0.784 at r = 0.
TOLERANCE = {"MAE": 0.05, "Corr": 0.1, "Non0_acc_2": 2 / 32}  # accuracy: two of the 32 validation rows
# What the bf16 (CPU autocast) run's metrics may differ from the fp32 run's.
BF16_TOLERANCE = {"MAE": 0.05, "Corr": 0.1, "Non0_acc_2": 2 / 32}
KEYS = tuple(TOLERANCE)
TIMEOUT = 240  # seconds for one two-machine launch; both are killed past it

# Installed into each "machine" (PYTHONPATH): records, in the launched workers only, every Python-level write under
# AUDIT_ROOT (files opened for writing, folders created, renames, deletions) into AUDIT_LOG.<rank>. Files written
# by native code (safetensors, torch.save) are still seen: they are written into folders that are created or renamed.
AUDIT = r'''
import atexit, os, sys
root, log = os.environ.get("AUDIT_ROOT"), os.environ.get("AUDIT_LOG")
if root and log and "RANK" in os.environ:
    root, seen = os.path.realpath(root), []
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    EVENTS = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink")

    def hook(event, args):
        if event == "open":
            paths, mode, flags = args[:1], args[1], args[2]
            if not (isinstance(mode, str) and any(c in mode for c in "wax+")) and not (flags or 0) & WRITE:
                return
        elif event in EVENTS:
            paths = args[:2] if event in ("os.rename", "os.replace") else args[:1]
        else:
            return
        for path in paths:
            if not isinstance(path, (str, bytes, os.PathLike)):
                continue
            path = os.path.realpath(os.fsdecode(path))
            if event == "os.mkdir" and os.path.isdir(path):
                continue  # makedirs(exist_ok=True) of a folder that exists writes nothing
            if path == root or path.startswith(root + os.sep):
                seen.append(f"{event} {path}")

    sys.addaudithook(hook)
    atexit.register(lambda: open(f"{log}.{os.environ['RANK']}", "w").write("\n".join(seen)))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(tmp: Path, root: Path | None = None) -> dict:
    audit = tmp / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    extra = {"AUDIT_ROOT": str(root), "AUDIT_LOG": str(tmp / "writes")} if root else {}
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(audit), **extra}


def two_machines(cwd: Path, argv: list[str], rank1_argv: list[str] | None = None, root: Path | None = None,
                 timeout: int = TIMEOUT) -> list[tuple[int, str, str]]:
    """train.py launched as machine 0 and machine 1 of two (one CPU process each, gloo over loopback); (exit status,
    stdout, stderr) of each launcher. Past `timeout` both are killed (their whole process groups) and the test fails."""
    port = free_port()
    procs, logs = [], []
    for rank, args in enumerate([argv, argv if rank1_argv is None else rank1_argv]):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
               "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(port), "--rdzv_backend", "static", "--same_network",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train.py"), *args]
        out, err = open(cwd / f"machine{rank}.out", "w+"), open(cwd / f"machine{rank}.err", "w+")
        logs.append((out, err))
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env(cwd, root), stdout=out, stderr=err,
                                      start_new_session=True))
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)  # the launcher and the worker it started
            p.wait()
        pytest.fail(f"the two machines did not finish within {timeout} s; both were killed")
    results = []
    for p, (out, err) in zip(procs, logs):
        out.seek(0), err.seek(0)
        results.append((p.returncode, out.read(), err.read()))
        out.close(), err.close()
    return results


def assert_one_line_error(stderr: str, expected: str) -> None:
    """train.py's own error is one line; what follows it is the launcher's (torchrun's) report of the failed worker,
    with no frame of this project's code."""
    lines = [line for line in stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(lines) == 1 and expected in lines[0], stderr[-3000:]
    assert not re.search(r'File ".*(hf_mmkd|train\.py)', stderr), stderr[-3000:]


def validation(out: Path, stage: str) -> dict[str, float]:
    metrics = json.loads((out / "results.json").read_text())[stage]
    return {f"r{r}_{k}": metrics[f"eval_r{r}_{k}"] for r in ("0", "0.5") for k in KEYS}


def assert_close(got: dict, expected: dict, tolerance: dict, what: str) -> None:
    far = {k: (got[k], v) for k, v in expected.items() if abs(got[k] - v) > tolerance[k.split("_", 1)[1]]}
    assert not far, f"{what} vs one process in fp32 differ by more than {tolerance}: {far}"


def weight_dtypes(folder: Path) -> set[str]:
    with safe_open(folder / "model.safetensors", "pt") as f:
        return {str(f.get_tensor(k).dtype) for k in f.keys()}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference run: one process, a batch of 32 (the two machines' global batch), the same seed."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(["--output_dir", str(out), *SHORT, "--per_device_train_batch_size", "32"]) == 0
    return out


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    """The same job on two machines of one process each, 16 rows per process (global batch 32), a shared disk."""
    work = tmp_path_factory.mktemp("two")
    out = work / "run"
    results = two_machines(work, ["--output_dir", str(out), *SHORT, "--per_device_train_batch_size", "16",
                                  "--log_level", "info", "--log_level_replica", "info"], root=out)
    return work, out, results


def test_two_machines_train_the_same_student_and_only_rank_0_writes(machines, one_process):
    work, out, results = machines
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"machine {rank}:\n{stderr[-3000:]}"
        # the frozen teacher's outputs: each process computes half the 64 rows, and each holds all 64 once
        assert f"teacher outputs cached: 64 training rows held, 32 computed by process {rank} of 2" in stderr
    stdout = results[0][1]
    assert "hf_mmkd: 2 process(es), distributed type DistributedType.MULTI_CPU" in stdout
    assert ("global batch 16 per process x 2 process(es) x 1 accumulation step(s) = 32; learning rate 0.002 as given"
            in stdout)
    assert "[teacher]" in stdout and "[student]" in stdout  # both stages finished
    assert "[student]" not in results[1][1]  # the other machine prints nothing of its own
    # Only rank 0 writes, except the one file the Trainer saves per process in each checkpoint: that process's
    # random-number state (rng_state_<rank>.pth; resuming restores every process's streams). The other machine's
    # worker wrote nothing else under output_dir (the audit hook saw rank 0's writes, so it does see them).
    written = {rank: (work / f"writes.{rank}").read_text().splitlines() for rank in (0, 1)}
    checkpoint_folder = rf"os\.mkdir {out}/(teacher|student)_run/checkpoint-\d+"
    assert all(re.fullmatch(checkpoint_folder, w) for w in written[1]), written[1]
    for checkpoint in (out / "student_run").glob("checkpoint-*"):
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}
    for name in ("teacher_run", "student_run", "teacher", "student", "results.json", ".hf_mmkd_outputs.json"):
        assert any(f"{out / name}" in line for line in written[0]), name
    for stage in ("teacher", "student"):
        assert (out / stage / "README.md").is_file() and (out / stage / "training_summary.json").is_file()
    assert sorted(p.name for p in (out / "student_run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # Teacher and student match the one-process run with the same global batch and seed within TOLERANCE.
    for stage in ("teacher", "student"):
        assert_close(validation(out, stage), validation(one_process, stage), TOLERANCE, f"{stage}, two machines")


def test_the_run_lock_and_the_provenance_check_hold_across_machines(machines, tmp_path):
    from hf_mmkd.io import run_lock

    work, out, _ = machines
    before = (out / "teacher" / "model.safetensors").read_bytes()
    # Another run holds the folder: both machines stop at once with one line (rank 0 holds the lock for all).
    with run_lock(out, command="another run"):
        results = two_machines(tmp_path, ["--output_dir", str(out), *SHORT, "--per_device_train_batch_size", "16"])
    for code, _, stderr in results:
        assert code != 0
        assert_one_line_error(stderr, f"{out} is in use by another run")
    # The teacher there was trained with another learning rate than this run's: both machines refuse to reuse it.
    results = two_machines(tmp_path, ["--output_dir", str(out), *SHORT, "--per_device_train_batch_size", "16",
                                      "--teacher_learning_rate", "0.01"])
    for code, _, stderr in results:
        assert code != 0
        assert_one_line_error(stderr, "was not trained on this data with these arguments")
    assert (out / "teacher" / "model.safetensors").read_bytes() == before


def test_a_failure_on_one_machine_ends_both_with_one_line(tmp_path):
    """Machine 1 cannot read the data set (it is missing on its disk): machine 1 says so, machine 0 says which
    process failed and why, and both stop within seconds instead of waiting for each other."""
    missing = tmp_path / "missing_data"
    start = time.monotonic()
    results = two_machines(tmp_path, ["--output_dir", str(tmp_path / "run"), *SHORT],
                           rank1_argv=["--output_dir", str(tmp_path / "run"), *SHORT, "--dataset", str(missing)],
                           timeout=120)
    assert time.monotonic() - start < 120
    (code0, _, err0), (code1, _, err1) = results
    assert code0 != 0 and code1 != 0
    assert_one_line_error(err1, f"{missing} is not a folder")
    assert_one_line_error(err0, f"process 1 of 2: {missing} is not a folder")
    assert not (tmp_path / "run").exists()  # nothing written, not even an empty folder


# ------------------------------------------------------------------ the "Scaling out" commands (docs/scaling.md)

SCALING = (REPO / "docs" / "scaling.md").read_text()
TINY = ["--num_train_epochs", "1", "--max_train_samples", "64", "--max_eval_samples", "32"]


def scale_out_commands() -> list[str]:
    """The CPU commands of docs/scaling.md (between the scale-out markers), in order."""
    section = re.search(r"<!-- scale-out:start -->(.*?)<!-- scale-out:end -->", SCALING, re.S).group(1)
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S) for line in block.splitlines()
            if line.strip() and not line.startswith("#")]


def as_run_here(command: str, port: int) -> list[str]:
    """The venv's executables, the repo's files, a free port; the training command gets the tiny settings."""
    argv = shlex.split(command)
    bin_dir = Path(sys.executable).parent
    argv = [str(bin_dir / a.split("/")[-1]) if a.startswith(".venv/bin/") else
            str(REPO / a) if a == "train.py" or a.startswith("configs/") else a for a in argv]
    config = argv.index("--config_file") + 2
    argv[config:config] = ["--main_process_port", str(port)]
    return argv + (TINY if "train.py" in command else [])


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme_scale")
    commands = scale_out_commands()
    assert [c.split()[4] for c in commands] == ["train.py", ".venv/bin/hf-mmkd"]
    for command in commands:
        proc = subprocess.run(as_run_here(command, free_port()), cwd=work, env=env(work), capture_output=True,
                              text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    return work


def test_readme_scale_out_commands_run_and_the_sharded_report_is_the_one_process_report(readme_run):
    """Two processes trained with bf16 (weights saved in fp32), then evaluated with the conditions shared by two
    processes: the report is the same, byte for byte, as the one a single process writes."""
    from hf_mmkd.cli import main as cli_main

    work = readme_run
    for stage in ("teacher", "student"):
        assert weight_dtypes(work / "outputs" / "ddp" / stage) == {"torch.float32"}
    sharded = [work / "reports" / "ddp" / "hf_mmkd_synthetic_demo_p2.json"]
    assert sorted(p.name for p in sharded[0].parent.iterdir()) == [
        ".hf_mmkd_outputs.json", "hf_mmkd_synthetic_demo_p2.json", "hf_mmkd_synthetic_demo_p2.md",
        "hf_mmkd_synthetic_demo_p2.png"]  # one report, written once
    command = shlex.split(scale_out_commands()[1])
    args = command[command.index("evaluate"):]
    args[args.index("--out") + 1] = str(work / "reports" / "one")
    args[1] = str(work / args[1])
    assert cli_main(args + ["--quiet"]) == 0
    one = work / "reports" / "one"
    for suffix in (".json", ".md"):
        a = (work / "reports" / "ddp" / sharded[0].name).with_suffix(suffix).read_text()
        b = (one / sharded[0].name).with_suffix(suffix).read_text()
        assert a.replace("outputs/ddp/student", "X") == b.replace(str(work / "outputs/ddp/student"), "X")
    report = json.loads(sharded[0].read_text())["results"]  # several seeds x 10 rates: shared by two processes
    assert len(report["seeds"]) > 1 and len(report["checkpoints"]["student"][str(report["seeds"][0])]) == 10


# ------------------------------------------------------------------ bf16 on the CPU


def test_bf16_on_the_cpu_stays_close_to_fp32_and_saves_fp32_weights(one_process, tmp_path):
    from hf_mmkd.evaluation import evaluate_checkpoints

    out = tmp_path / "bf16"
    assert main(["--output_dir", str(out), *SHORT, "--per_device_train_batch_size", "32", "--bf16"]) == 0
    for stage in ("teacher", "student"):
        assert weight_dtypes(out / stage) == {"torch.float32"}
        got, expected = validation(out, stage), validation(one_process, stage)
        assert got != expected  # autocast did run in bf16 (the numbers moved) ...
        assert_close(got, expected, BF16_TOLERANCE, f"{stage}, bf16")  # ... and not far
    # evaluation under autocast: same conditions, metrics within the same tolerance
    kwargs = dict(dataset="demo", protocol="p2", split="validation", seeds=[1111], rates=[0.0, 0.5])
    fp32 = evaluate_checkpoints({"s": one_process / "student"}, **kwargs)["checkpoints"]["s"]["1111"]
    bf16 = evaluate_checkpoints({"s": one_process / "student"}, **kwargs, bf16=True)["checkpoints"]["s"]["1111"]
    for cond in fp32:
        assert fp32[cond] != bf16[cond]
        assert_close({f"x_{k}": bf16[cond][k] for k in KEYS}, {f"x_{k}": fp32[cond][k] for k in KEYS},
                     BF16_TOLERANCE, f"evaluation {cond}, bf16")


# ------------------------------------------------------------------ launch templates


@pytest.mark.parametrize("name, distributed, machines, processes", [
    ("multi_gpu_bf16.yaml", "MULTI_GPU", 1, 4), ("fsdp.yaml", "FSDP", 1, 4), ("multi_node.yaml", "MULTI_GPU", 2, 8)])
def test_gpu_and_multi_node_templates_pass_accelerates_config_loader(name, distributed, machines, processes):
    """accelerate's own loader (unknown keys and bad values are errors there) and its launch-argument validation;
    the command in each file's header is docs/scaling.md's."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = load_config_from_file(str(TEMPLATES / name))
    assert (config.distributed_type.value, config.num_machines, config.num_processes, config.mixed_precision) == (
        distributed, machines, processes, "bf16")
    args = launch_command_parser().parse_args(["--config_file", str(TEMPLATES / name), "train.py"])
    args, _, _ = _validate_launch_command(args)
    assert (args.num_machines, args.num_processes, args.mixed_precision) == (machines, processes, "bf16")
    if distributed == "FSDP":  # the environment the launcher gives the processes, read by accelerate's plugin
        from accelerate.utils import FullyShardedDataParallelPlugin, patch_environment
        from accelerate.utils.launch import prepare_multi_gpu_env

        with patch_environment(**prepare_multi_gpu_env(args)):
            plugin = FullyShardedDataParallelPlugin()
        assert (plugin.fsdp_version, plugin.state_dict_type.name, plugin.reshard_after_forward) == (
            2, "FULL_STATE_DICT", True)
    header = next(line for line in (TEMPLATES / name).read_text().splitlines() if "accelerate launch" in line)
    command = header.lstrip("# ").split(" train.py")[0]
    assert command in SCALING, command
