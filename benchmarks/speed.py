"""Training and evaluation speed on CMU-MOSI batches: teacher, no-KD student and every KD method.

    python benchmarks/speed.py --dataset data_prepared/mosi            # writes benchmarks/results/speed.{json,md}

Measured here, each training setting in its own subprocess (so peak memory is per setting):
- training samples/s: `steps` optimiser steps of batch `batch_size` (same batches for every setting),
  median of `repeats` timed passes after one warm-up pass; the warm-up also fills the teacher-output cache
  of the frozen-teacher methods, so "cached" rows time what every epoch after the first costs;
- FLOPs of one training step (torch.utils.flop_counter) over its median time, against the fp32 matmul peak
  measured in the same run (best of several 1024x1024 matmuls);
- evaluation latency of the student at batch 1 and 32 (median), and the wall time of the whole P2 evaluation
  (10 rates x every test row, masks applied per rate);
- peak resident memory of the process (ru_maxrss).
Numbers depend on the machine; the JSON records it (cores, torch version), the command and the git commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SETTINGS = {  # name: (method, cache_teacher_outputs, student view protocol)
    "teacher": ("none", False, "none"),
    "student_none": ("none", False, "p2"),
    "logit": ("logit", True, "p2"),
    "logit_nocache": ("logit", False, "p2"),
    "corrkd": ("corrkd", True, "p2"),
    "corrkd_nocache": ("corrkd", False, "p2"),
    "mitr": ("mitr", False, "p2"),
    "crossmodal": ("crossmodal", False, "p2"),
    "mmckd": ("mmckd", False, "p2"),
}


def build(args, method: str, cache: bool, protocol: str):
    """A trainer for one setting, on MOSI's first `steps * batch_size` training rows."""
    from hf_mmkd.data.prepared import load_dataset_and_spec
    from hf_mmkd.training import DataArguments, ModelArguments, load_preprocessors, model_config_kwargs, new_model
    from hf_mmkd.data.collator import MMKDDataCollator
    from hf_mmkd.data.standardize import FeatureStandardizer
    from hf_mmkd.trainer import MMKDTrainer, MMKDTrainingArguments

    torch.manual_seed(0)
    splits, spec = load_dataset_and_spec(args.dataset)
    model_args = ModelArguments(text_backbone="minilm", hidden_size=64,
                                temporal_encoder="mib_trl" if method == "mitr" else "transformer",
                                pattern_embedding=method == "mmckd")
    stats = FeatureStandardizer.fit(splits["train"]).to_dict()
    kwargs = model_config_kwargs(model_args, splits, stats, spec)
    tokenizer, _, _ = load_preprocessors(model_args)
    student = new_model(model_args, {**kwargs, "role": "student"})
    teacher = new_model(model_args, {**kwargs, "role": "teacher"}) if method in ("logit", "corrkd", "mmckd", "crossmodal") else None
    training_args = MMKDTrainingArguments(
        output_dir=tempfile.mkdtemp(), method=method, missing_protocol=protocol, cache_teacher_outputs=cache,
        learning_rate=1e-3, backbone_learning_rate=5e-5, use_cpu=not torch.cuda.is_available(), report_to="none",
        per_device_train_batch_size=args.batch_size, seed=1111, dataloader_pin_memory=False,
        auxiliary_modality="audio",
    )
    collator = MMKDDataCollator(student.config, tokenizer=tokenizer, max_text_length=DataArguments.max_text_length,
                                label_column=spec.label_column, return_row_keys=True)
    trainer = MMKDTrainer(model=student, teacher=teacher, args=training_args, train_dataset=splits["train"],
                          data_collator=collator, processing_class=tokenizer)
    rows = splits["train"].select(range(args.steps * args.batch_size))
    batches = [collator([rows[i] for i in range(s * args.batch_size, (s + 1) * args.batch_size)]) for s in range(args.steps)]
    device = trainer.args.device
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    return trainer, batches, splits, collator


def run_setting(args, name: str) -> dict:
    method, cache, protocol = SETTINGS[name]
    trainer, batches, splits, collator = build(args, method, cache, protocol)
    model = trainer.model
    model.train()
    optimizer = trainer.create_optimizer()

    def step(batch):
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for batch in batches:  # warm-up (and teacher cache fill)
        step(batch)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        times.append(time.perf_counter() - start)
    step_time = statistics.median(times) / len(batches)

    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    result = {
        "setting": name, "method": method, "teacher_cache": cache, "student_view": protocol,
        "train_samples_per_s": args.batch_size / step_time, "step_time_s": step_time,
        "step_times_s": [t / len(batches) for t in times], "train_flops_per_step": flops,
        "train_flop_per_s": flops / step_time,
    }
    if name == "student_none":
        result.update(eval_speed(args, trainer.student, splits, collator))
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def eval_speed(args, student, splits, collator) -> dict:
    """Latency at batch 1 and 32, and the whole P2 evaluation over the test split (10 rates)."""
    from hf_mmkd.data.missing import model_inputs

    student.eval()
    test = splits["test"]
    rows = [test[i] for i in range(len(test))]
    out = {}
    with torch.no_grad():
        for size, runs in ((1, 30), (32, 10)):
            batch = model_inputs(collator(rows[:size]))
            student(**batch)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                student(**batch)
                times.append(time.perf_counter() - start)
            out[f"eval_latency_batch{size}_ms"] = 1000 * statistics.median(times)
    # The whole P2 evaluation through the evaluation module users run (`hf-mmkd evaluate`): 10 rates x test rows.
    from hf_mmkd.evaluation import evaluate_checkpoints
    from hf_mmkd.inference import build_processor

    with tempfile.TemporaryDirectory() as ckpt:
        student.save_pretrained(ckpt)
        build_processor(student.config, tokenizer=collator.tokenizer, max_text_length=collator.max_text_length
                        ).save_pretrained(ckpt)
        start = time.perf_counter()
        evaluate_checkpoints({"student": ckpt}, args.dataset, "p2", split="test", seeds=(1111,), dataset_name="mosi")
        out["p2_eval_10_rates_s"] = time.perf_counter() - start
        out["p2_eval_rows"] = len(rows)
    return out


def matmul_peak(n: int = 1024, runs: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(report: dict) -> str:
    peak = report["matmul_peak_flop_per_s"]
    # Steps are compared with the no-KD student's; a run of other settings (--settings teacher corrkd) compares
    # them with its first setting, and reports the student evaluation only when student_none was measured.
    base_row = next((r for r in report["settings"] if r["setting"] == "student_none"), report["settings"][0])
    base, base_name = base_row["step_time_s"], "no-KD" if base_row["setting"] == "student_none" else base_row["setting"]
    lines = [
        f"Training speed on CMU-MOSI batches of {report['batch_size']} ({report['steps']} steps, median of "
        f"{report['repeats']} passes); machine: {report['machine']['cpu_count']} cores, torch {report['machine']['torch']}, "
        f"{report['machine']['device']}. fp32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s.",
        "",
        f"| setting | teacher cache | samples/s | step (s) | vs {base_name} step | GFLOP/s | % of matmul peak | "
        "peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["settings"]:
        lines.append(
            f"| {r['setting']} | {'yes' if r['teacher_cache'] else 'no'} | {r['train_samples_per_s']:.1f} | "
            f"{r['step_time_s']:.3f} | {r['step_time_s'] / base:.2f}x | {r['train_flop_per_s'] / 1e9:.1f} | "
            f"{100 * r['train_flop_per_s'] / peak:.0f}% | {r['peak_rss_mb']:.0f} |"
        )
    ev = base_row if base_row["setting"] == "student_none" else None
    if ev is not None:
        lines += ["", f"Student evaluation: batch 1 {ev['eval_latency_batch1_ms']:.1f} ms, batch 32 "
                  f"{ev['eval_latency_batch32_ms']:.1f} ms (median); whole P2 evaluation (10 rates x "
                  f"{ev['p2_eval_rows']} test rows): {ev['p2_eval_10_rates_s']:.1f} s."]
    else:
        lines += ["", "Student evaluation: not measured (it runs with the student_none setting)."]
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="data_prepared/mosi", help="prepared MOSI folder (dataset_scripts/prepare_mmsa.py)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for speed.json and speed.md")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per timed pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the median is reported")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--one", choices=list(SETTINGS), help=argparse.SUPPRESS)  # internal: one setting, JSON out
    args = parser.parse_args(argv)
    if not Path(args.dataset).is_dir():
        print(f"speed.py: error: no prepared dataset at {args.dataset}; run dataset_scripts/prepare_mmsa.py "
              "../shared/data/mosi/mosi_text_audio.pkl data_prepared/mosi", file=sys.stderr)
        return 2
    if args.one:
        print("RESULT " + json.dumps(run_setting(args, args.one)))
        return 0
    settings = []
    for name in args.settings:
        cmd = [sys.executable, __file__, "--dataset", args.dataset, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--repeats", str(args.repeats), "--one", name]
        done = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if done.returncode != 0 or line is None:
            print(f"speed.py: setting {name} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        settings.append(json.loads(line[len("RESULT "):]))
        print(f"{name}: {settings[-1]['train_samples_per_s']:.1f} samples/s", flush=True)
    import transformers
    report = {
        "command": "python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])),
        "git_commit": git_commit(), "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "python": platform.python_version(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu", "platform": platform.platform()},
        "matmul_peak_flop_per_s": matmul_peak(), "settings": settings,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from hf_mmkd.io import atomic_write
    atomic_write(out / "speed.json", json.dumps(report, indent=2))
    atomic_write(out / "speed.md", markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
