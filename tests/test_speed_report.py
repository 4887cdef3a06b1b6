"""benchmarks/speed.py's Markdown for any choice of --settings (without student_none it died with StopIteration
after all the measuring)."""

from __future__ import annotations

import importlib.util

from conftest import REPO_ROOT


def speed_module():
    spec = importlib.util.spec_from_file_location("speed", REPO_ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def setting(name, step, **extra):
    return {"setting": name, "teacher_cache": False, "train_samples_per_s": 32 / step, "step_time_s": step,
            "train_flop_per_s": 1e9, "peak_rss_mb": 100.0, **extra}


def report(*settings):
    return {"batch_size": 32, "steps": 4, "repeats": 3, "matmul_peak_flop_per_s": 4e9, "command": "python x",
            "machine": {"cpu_count": 2, "torch": "2", "device": "cpu"}, "settings": list(settings)}


def test_markdown_without_student_none_compares_with_the_first_setting():
    text = speed_module().markdown(report(setting("teacher", 0.2), setting("corrkd", 0.5)))
    assert "| vs teacher step |" in text
    assert "| corrkd | no | 64.0 | 0.500 | 2.50x | 1.0 | 25% | 100 |" in text  # 0.5 / 0.2; 1e9 / 4e9
    assert "Student evaluation: not measured" in text


def test_markdown_with_student_none_reports_its_evaluation():
    ev = {"eval_latency_batch1_ms": 1.5, "eval_latency_batch32_ms": 9.0, "p2_eval_rows": 10, "p2_eval_10_rates_s": 2.0}
    text = speed_module().markdown(report(setting("teacher", 0.1), setting("student_none", 0.4, **ev)))
    assert "| vs no-KD step |" in text and "| teacher | no | 320.0 | 0.100 | 0.25x |" in text
    assert "Student evaluation: batch 1 1.5 ms, batch 32 9.0 ms (median); whole P2 evaluation (10 rates x 10 " \
           "test rows): 2.0 s." in text
