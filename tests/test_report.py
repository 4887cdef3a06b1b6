"""hf_mmkd.report: summaries (per-seed protocol summary, then mean ± std), Markdown, JSON and PNG outputs."""

import json
import os

import numpy as np
import pytest

from hf_mmkd.metrics import COMPLETE_SET, P3_SETS, rate_condition
from hf_mmkd.io import atomic_write
from hf_mmkd.report import markdown_table, plot_results, summarize, validate_results, write_report


def rate_results(protocol="p2", rates=np.arange(10) / 10):
    """Two checkpoints x two seeds; Acc-2 = base - slope * r + seed offset, MAE = 0.7 + r."""
    def curve(base, slope, offset):
        return {rate_condition(r): {"Non0_acc_2": base - slope * r + offset, "MAE": 0.7 + r} for r in rates}
    return {
        "dataset": "mosi", "protocol": protocol,
        "checkpoints": {
            "teacher": {"1111": curve(0.85, 0.30, 0.01), "1112": curve(0.85, 0.30, -0.01)},
            "student": {"1111": curve(0.84, 0.10, 0.0), "1112": curve(0.84, 0.10, 0.02)},
        },
    }


def set_results(protocol="p3"):
    conds = P3_SETS + (COMPLETE_SET,)
    return {
        "dataset": "mosi", "protocol": protocol, "split": "test",
        "checkpoints": {
            "teacher": {1: {c: {"Non0_F1_score": 0.5 + 0.05 * i} for i, c in enumerate(conds)},
                        2: {c: {"Non0_F1_score": 0.52 + 0.05 * i} for i, c in enumerate(conds)}},
            "student": {1: {c: {"Non0_F1_score": 0.6 + 0.04 * i} for i, c in enumerate(conds)}},
        },
    }


def test_summarize_p2_numbers():
    s = summarize(rate_results("p2"))
    t = s["teacher"]
    assert t["n_seeds"] == 2
    assert t["conditions"]["r=0.5"]["Non0_acc_2"]["mean"] == pytest.approx(0.70)
    assert t["conditions"]["r=0.5"]["Non0_acc_2"]["std"] == pytest.approx(0.01)
    # mean over r = 0.0..0.9 of 0.85 - 0.3 r = 0.85 - 0.3 * 0.45
    assert t["summary"]["mean r=0.0-0.9"]["Non0_acc_2"]["mean"] == pytest.approx(0.85 - 0.135)
    assert s["student"]["summary"]["mean r=0.0-0.9"]["MAE"]["mean"] == pytest.approx(0.7 + 0.45)
    assert list(t["conditions"])[:3] == ["r=0.0", "r=0.1", "r=0.2"]


def test_summarize_p1_auilc_and_p3():
    s = summarize(rate_results("p1", rates=np.arange(11) / 10))
    # AUILC of 0.85 - 0.3 r over [0, 1] = 0.85 - 0.15; seeds +-0.01 -> std 0.01
    assert s["teacher"]["summary"]["AUILC"]["Non0_acc_2"]["mean"] == pytest.approx(0.70)
    assert s["teacher"]["summary"]["AUILC"]["Non0_acc_2"]["std"] == pytest.approx(0.01)
    s3 = summarize(set_results())
    # teacher six-set mean: seed 1 0.5 + 0.05 * 2.5 = 0.625, seed 2 0.645
    assert s3["teacher"]["summary"]["Avg. (6 sets)"]["Non0_F1_score"]["mean"] == pytest.approx(0.635)
    assert s3["teacher"]["conditions"]["{l,a,v}"]["Non0_F1_score"]["mean"] == pytest.approx(0.81)
    assert list(s3["teacher"]["conditions"]) == list(P3_SETS) + ["{l,a,v}"]


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.pop("protocol"), "lack the 'protocol'"),
    (lambda r: r.update(protocol="p9"), "unknown protocol 'p9'"),
    (lambda r: r["checkpoints"]["teacher"]["1111"].update({"{l}": {"MAE": 1.0}}), "does not fit protocol p2"),
    (lambda r: r["checkpoints"]["teacher"]["1111"]["r=0.1"].update(MAE="x"), "is not a number"),
])
def test_validate_results_errors(mutate, match):
    r = rate_results()
    mutate(r)
    with pytest.raises(ValueError, match=match):
        validate_results(r)


def test_summarize_names_checkpoint_and_seed_on_missing_rate():
    r = rate_results()
    del r["checkpoints"]["student"]["1112"]["r=0.3"]
    with pytest.raises(ValueError, match=r"checkpoint 'student' seed 1112: missing rate\(s\) \[0.3\]"):
        summarize(r)


def test_markdown_table():
    md = markdown_table(rate_results("p2"))
    assert md.startswith("### CMU-MOSI (test), protocol P2 (LNLN)")
    assert "| Checkpoint | Condition | Acc-2 (Non0) | MAE |" in md
    assert "| teacher (2 seeds) | r=0.5 | 70.00 ± 1.00 | 1.200 ± 0.000 |" in md
    assert "| student (2 seeds) | **mean r=0.0-0.9** | **80.50 ± 1.00** | **1.150 ± 0.000** |" in md
    md3 = markdown_table(set_results(), metrics=["Non0_F1_score"])
    assert "P3 (CorrKD/HRLF)" in md3.splitlines()[0]
    assert "| student (1 seed) | {a,v} | 80.00 ± 0.00 |" in md3
    with pytest.raises(ValueError, match=r"metric\(s\) \['Corr'\] not in every results row"):
        markdown_table(set_results(), metrics=["Corr"])


def test_write_report_files(tmp_path):
    paths = write_report(rate_results("p2"), tmp_path / "out")
    assert {p.name for p in paths.values()} == {"mosi_p2.json", "mosi_p2.md", "mosi_p2.png"}
    payload = json.loads(paths["json"].read_text())
    assert payload["results"]["protocol"] == "p2"
    assert payload["summary"]["teacher"]["summary"]["mean r=0.0-0.9"]["MAE"]["mean"] == pytest.approx(1.15)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert oct(paths["markdown"].stat().st_mode & 0o777) == oct(0o644)
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".tmp")]  # no temporary left behind
    p3 = write_report(set_results(), tmp_path / "out", stem="bars")
    assert p3["plot"].name == "bars.png" and p3["plot"].stat().st_size > 1000


def test_plot_results_rate_and_bars(tmp_path):
    Image = pytest.importorskip("PIL.Image")

    png = plot_results(rate_results("p1", rates=np.arange(11) / 10), tmp_path / "p1.png")
    w, h = Image.open(png).size
    assert w > h > 200  # two panels side by side
    with pytest.raises(ValueError, match="not in every results row"):
        plot_results(set_results(), tmp_path / "x.png", metrics=["MAE"])
    assert not (tmp_path / "x.png").exists()


def test_atomic_write_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "r.md"
    atomic_write(target, "old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.md"]


def test_balanced_accuracies_are_named_and_printed_in_percent():
    res = rate_results("p2")
    for seeds in res["checkpoints"].values():
        for conds in seeds.values():
            for metrics in conds.values():
                metrics["Non0_bal_acc_2"] = 0.5
    text = markdown_table(res)
    assert "| Acc-2 (Non0) | MAE | Bal. Acc-2 (Non0) |" in text
    assert "| teacher (2 seeds) | **mean r=0.0-0.9** | **71.50 ± 1.00** | **1.150 ± 0.000** | **50.00 ± 0.00** |" in text
    from hf_mmkd.report import METRIC_NAMES

    assert METRIC_NAMES["Macro_F1"] == "Macro-F1" and METRIC_NAMES["Balanced_acc"] == "Bal. Acc"
    assert METRIC_NAMES["Sign_bal_acc_2"] == "Bal. Acc-2 (sign)" and METRIC_NAMES["Mult_bal_acc_2"] == "Bal. Acc-2"


def test_conditions_that_draw_nothing_count_one_run():
    """P5's fixed patterns are computed once and copied to every seed (`fixed_conditions`): the table says
    "(1 run)" without a "± 0.00", the model-index `seeds: 1`; a drawn condition keeps its seeds."""
    from hf_mmkd.hub import eval_results

    results = {**set_results("p5"), "fixed_conditions": list(P3_SETS) + [COMPLETE_SET]}
    results["checkpoints"]["student"] = {s: results["checkpoints"]["student"][1] for s in (1, 2, 3)}
    md = markdown_table(results, metrics=["Non0_F1_score"])
    assert "| student (1 run) | {a,v} | 80.00 |" in md  # 0.6 + 0.04 * 5
    assert "(3 seeds)" not in md and "± 0.00" not in md
    seeds = {r.metric_config: r.metric_args["seeds"] for r in eval_results(results, "student")}
    assert set(seeds.values()) == {1}, seeds
    drawn = {**rate_results("p2"), "fixed_conditions": ["r=0.0"]}
    md2 = markdown_table(drawn)
    assert "| teacher (1 run) | r=0.0 | 85.00 | 0.700 |" in md2  # (0.86 + 0.84) / 2, no std
    assert "| teacher (2 seeds) | r=0.5 | 70.00 ± 1.00 | 1.200 ± 0.000 |" in md2


def test_p2_title_names_the_rates_evaluated():
    md = markdown_table(rate_results("p2", rates=[0.0]))
    assert md.splitlines()[0].endswith("summary = mean over r = 0"), md.splitlines()[0]
    assert "0.0-0.9" not in md
