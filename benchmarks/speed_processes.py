"""Training throughput with one and two processes (DDP over gloo on the CPU): what a second process buys on this
machine, and what each optimiser step's gradient all-reduce costs.

    python benchmarks/speed_processes.py [--steps 40] [--repeats 3]

Runs train.py's student stage (`--method none`: no teacher, so only the student's own step is timed) on the demo
data through `accelerate launch`, with 1 process x 32 rows, 2 processes x 16 rows (the same global batch of 32)
and 2 processes x 32 rows (global batch 64); reads the Trainer's `train_samples_per_second` (global rows per
second of the training loop, start-up excluded); writes the "Processes" section of benchmarks/results/speed.md
(between its markers) with the machine's load average before each run, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "speed.md"
START, END = "<!-- processes:start -->", "<!-- processes:end -->"
SETTINGS = [(1, 32), (2, 16), (2, 32)]  # (processes, rows per process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(processes: int, per_device: int, steps: int) -> float:
    """Global training rows per second of one launch."""
    config = "default.yaml" if processes == 1 else "ddp_cpu.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(REPO / "configs" / "accelerate" / config)]
    if processes > 1:
        launch += ["--main_process_port", str(free_port())]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = launch + [str(REPO / "train.py"), "--output_dir", f"{tmp}/run", "--stage", "student", "--method",
                        "none", "--max_steps", str(steps), "--per_device_train_batch_size", str(per_device),
                        "--eval_strategy", "no", "--save_strategy", "no", "--report_rates", "",
                        "--logging_steps", "100000"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    found = re.findall(r"'train_samples_per_second': '?([\d.]+)", proc.stdout + proc.stderr)
    if not found:
        raise SystemExit(f"no train_samples_per_second in the output of {' '.join(cmd)}")
    return float(found[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows, loads = {}, []
    for _ in range(args.repeats):  # interleaved, so that a change of load hits every setting alike
        for processes, per_device in SETTINGS:
            loads.append(os.getloadavg()[0])
            rows.setdefault((processes, per_device), []).append(one_run(processes, per_device, args.steps))
            print(f"{processes} x {per_device}: {rows[(processes, per_device)][-1]:.1f} samples/s", flush=True)
    base = statistics.median(rows[(1, 32)])
    step = {k: k[0] * k[1] / statistics.median(v) for k, v in rows.items()}  # seconds per optimiser step
    lines = [START, "", f"### Processes (DDP over gloo, CPU)", "",
             f"Student stage (`--method none`) on the demo data, {args.steps} optimiser steps, median of "
             f"{args.repeats} interleaved runs; {os.cpu_count()} cores; 1-minute load average before the runs: "
             f"{min(loads):.1f} to {max(loads):.1f}. Command: `python benchmarks/speed_processes.py`.", "",
             "| processes x rows per process | global batch | samples/s (runs) | step (s) | vs 1 process |",
             "|---|---|---|---|---|"]
    for (processes, per_device), values in rows.items():
        lines.append(f"| {processes} x {per_device} | {processes * per_device} | {statistics.median(values):.1f} "
                     f"({', '.join(f'{v:.1f}' for v in values)}) | {step[(processes, per_device)]:.3f} | "
                     f"{statistics.median(values) / base:.2f}x |")
    # Perfect scaling would halve the step at 2 x 16 (each process computes 16 rows); what is left above half the
    # one-process step is the all-reduce of the gradients plus the processes' contention for the cores.
    overhead = step[(2, 16)] - step[(1, 32)] / 2
    lines += ["", f"Per-step cost of the second process: {overhead * 1000:.0f} ms = the 2 x 16 step minus half the "
              f"1 x 32 step (gradient all-reduce, start of each step's synchronisation, and the two processes' "
              f"contention for the cores).", "", END]
    text = RESULT.read_text()
    section = "\n".join(lines)
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), section, text, flags=re.S) if START in text \
        else text.rstrip("\n") + "\n\n" + section + "\n"
    RESULT.write_text(text)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
