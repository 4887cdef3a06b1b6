"""Robustness report: JSON, a Markdown table and a PNG plot from one evaluation results structure.

The results structure (what the evaluation loop produces; plain JSON types)::

    results = {
        "dataset": "mosi",        # the data set's display name (titles only)
        "protocol": "p2",         # p1 | p2 | p3 | p4 | p5, see PROTOCOLS (never mix protocols in one structure)
        "split": "test",          # optional, default "test"
        "metric_set": "mmsa_pm3", # optional: the data set's metric set (hf_mmkd.data.spec); picks the plot panels
        "reference": "constant: train median 0.2",  # optional: the checkpoint entry that is the constant reference
        "unit": "seed",           # optional, default "seed": what the keys below a checkpoint are ("fold": the
                                  # keys are folds of a cross-validation, each trained with one seed)
        "checkpoints": {          # one entry per model (for P1: the family of per-rate models of one method)
            "corrkd-student": {
                "1111": {         # seed (str or int) -> condition -> metric -> value
                    "r=0.0": {"Has0_acc_2": 0.83, "MAE": 0.71, ...},
                    "r=0.1": {...},
                },
                "1112": {...},
            },
        },
    }

Conditions are the names from `hf_mmkd.metrics`: ``"r=0.3"`` (a missing rate; P1, P2, P4's MR) or an availability set
``"{l,a}"`` (P3, P5; ``"{l,a,v}"`` is complete). Metric values are fractions as `hf_mmkd.metrics` returns them;
the table prints accuracies and F1 in percent, MAE and Corr as they are.

Aggregation (`summarize`): each seed's curve is first reduced with its protocol's summary (P1 AUILC, P2 mean over
r = 0.0-0.9 (over the rates evaluated when they are fewer, named in the label: "mean r=0.0,0.5"), P3 mean of the
six incomplete sets plus {l,a,v} on its own, P4 mean over MR = 0.1-0.7, P5 mean over the patterns), then mean
and std (population, `np.std`) are taken over seeds (or folds), for every condition and every summary.

Files are written atomically: a temporary file in the target folder, then `os.replace`.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_mmkd.io import atomic_write, atomic_write_all
from hf_mmkd.metrics import (
    KEY_METRICS,
    P2_RATES,
    P4_RATES,
    P5_SETS,
    auilc,
    mean_over_rates,
    parse_condition,
    rate_condition,
    seed_mean_std,
    six_set_mean,
)

__all__ = [
    "DATASET_NAMES",
    "METRIC_NAMES",
    "PROTOCOLS",
    "atomic_write",
    "markdown_table",
    "per_seed_summaries",
    "plot_results",
    "summarize",
    "validate_results",
    "write_report",
]

PROTOCOLS: dict[str, dict[str, str]] = {
    "p1": {"kind": "rate", "title": "P1 (TFR-Net/EMT-DLFR/MITR-DNet): one model per missing rate r, "
                                    "token/frame dropping; summary = AUILC (trapezoid over r)"},
    "p2": {"kind": "rate", "title": "P2 (LNLN): one model, test rate r for all modalities; "
                                    "summary = mean over r = 0.0-0.9"},
    "p3": {"kind": "set", "title": "P3 (CorrKD/HRLF): fixed available-modality sets; "
                                   "summary = mean of the six incomplete sets, {l,a,v} separately"},
    "p4": {"kind": "rate", "title": "P4 (IMDer): whole modalities missing at rate MR (IMDer's shares of rows "
                                    "missing one or two modalities); summary = mean over MR = 0.1-0.7"},
    "p5": {"kind": "set", "title": "P5 (CMAD/MMANet): fixed availability patterns; "
                                   "summary = mean over the patterns shown"},
}

DATASET_NAMES = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI", "sims": "CH-SIMS", "iemocap": "IEMOCAP",
                 "mmmo": "ICT-MMMO"}

METRIC_NAMES = {  # MMSA key -> printed name
    "Has0_acc_2": "Acc-2 (Has0)", "Has0_F1_score": "F1 (Has0)", "Non0_acc_2": "Acc-2 (Non0)",
    "Non0_F1_score": "F1 (Non0)", "Mult_acc_2": "Acc-2", "Mult_acc_3": "Acc-3", "Mult_acc_5": "Acc-5",
    "Mult_acc_7": "Acc-7", "F1_score": "F1", "MAE": "MAE", "Corr": "Corr", "Accuracy": "Acc", "WA": "WA",
    "UA": "UA", "Sign_acc_2": "Acc-2 (sign)", "Sign_F1_score": "F1 (sign)", "Band_acc_3": "Acc-3 (band)",
    # balanced accuracies (hf_mmkd.metrics.balanced_sign_accuracy: any constant predictor scores 50.0)
    "Has0_bal_acc_2": "Bal. Acc-2 (Has0)", "Non0_bal_acc_2": "Bal. Acc-2 (Non0)", "Mult_bal_acc_2": "Bal. Acc-2",
    "Sign_bal_acc_2": "Bal. Acc-2 (sign)", "Balanced_acc": "Bal. Acc", "Macro_F1": "Macro-F1",
}
_PLAIN = {"MAE", "Corr"}  # printed as is; everything else is a fraction printed in percent
_LOWER_IS_BETTER = {"MAE"}
_PLOT_DEFAULTS = tuple(list(m) for m in KEY_METRICS.values())  # when the results do not name their metric set

# ----------------------------------------------------------------------------------------------- checks


def validate_results(results: dict[str, Any]) -> None:
    """Raise ValueError naming the first problem in a results structure (see the module docstring)."""
    for key in ("dataset", "protocol", "checkpoints"):
        if key not in results:
            raise ValueError(f"results lack the {key!r} key")
    protocol = str(results["protocol"]).lower()
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {results['protocol']!r}; expected one of {sorted(PROTOCOLS)}")
    kind = PROTOCOLS[protocol]["kind"]
    if not results["checkpoints"]:
        raise ValueError("results hold no checkpoints")
    for ckpt, seeds in results["checkpoints"].items():
        if not seeds:
            raise ValueError(f"checkpoint {ckpt!r} has no seeds")
        for seed, conditions in seeds.items():
            if not conditions:
                raise ValueError(f"checkpoint {ckpt!r} seed {seed} has no conditions")
            for cond, metrics in conditions.items():
                if parse_condition(cond)[0] != kind:
                    raise ValueError(f"condition {cond!r} (checkpoint {ckpt!r}, seed {seed}) does not fit "
                                     f"protocol {protocol}, which uses {kind} conditions")
                for m, v in metrics.items():
                    if not isinstance(v, (int, float)) or isinstance(v, bool):
                        raise ValueError(f"{ckpt!r} seed {seed} {cond} {m}: value {v!r} is not a number")


# -------------------------------------------------------------------------------------------- summarise


def _protocol_summary(protocol: str, conditions: dict[str, dict[str, float]],
                      rates: Sequence[float] = P2_RATES) -> dict[str, dict[str, float]]:
    """One seed's protocol summary rows: {label: {metric: value}}; `rates`: P2's rates (see `_p2_rates`)."""
    if protocol == "p1":
        return {"AUILC": auilc(conditions)}
    if protocol == "p2":
        label = "mean r=0.0-0.9" if list(rates) == list(P2_RATES) else \
            "mean r=" + ",".join(rate_condition(r)[2:] for r in rates)
        return {label: mean_over_rates(conditions, rates)}
    if protocol == "p4":
        return {"mean MR=0.1-0.7": mean_over_rates(conditions, P4_RATES)}
    if protocol == "p3":
        s = six_set_mean(conditions)
        return {"Avg. (6 sets)": s["avg"]}  # {l,a,v} is already a condition row of its own
    rows = list(conditions.values())
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {f"Avg. ({len(rows)} patterns)": {k: float(np.mean([r[k] for r in rows])) for k in keys}}


def _p2_rates(results: dict[str, Any]) -> tuple[float, ...]:
    """The rates P2's mean is over: r = 0.0-0.9 (LNLN) when the results hold all ten (an extra r = 1.0 is left
    out), else every rate they hold (`--rates 0.0 0.5`: the label then names them, "mean r=0.0,0.5"). Every seed
    must have each of them."""
    held = sorted({round(parse_condition(c)[1], 6) for seeds in results["checkpoints"].values()
                   for conds in seeds.values() for c in conds})
    return P2_RATES if all(round(r, 6) in held for r in P2_RATES) else tuple(held)


def _sort_conditions(conds: Sequence[str]) -> list[str]:
    def key(c: str) -> tuple:
        kind, v = parse_condition(c)
        if kind == "rate":
            return (0, v, "")
        order = list(P5_SETS)
        return (1, order.index(v) if v in order else len(order), v)
    return sorted(conds, key=key)


def per_seed_summaries(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """`{checkpoint: {seed: {"conditions": {cond: {metric: value}}, "summary": {label: {metric: value}}}}}`: each
    seed's curve reduced with its protocol's summary (before any mean over seeds; paired comparisons use these)."""
    validate_results(results)
    protocol = str(results["protocol"]).lower()
    rates = _p2_rates(results) if protocol == "p2" else P2_RATES
    out = {}
    for ckpt, seeds in results["checkpoints"].items():
        per_seed = out[ckpt] = {}
        for seed, conds in seeds.items():
            conds = {c: dict(m) for c, m in conds.items()}
            try:
                summary = _protocol_summary(protocol, conds, rates)
            except ValueError as e:
                raise ValueError(f"checkpoint {ckpt!r} seed {seed}: {e}") from None
            per_seed[str(seed)] = {"conditions": conds, "summary": summary}
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """`{checkpoint: {"n_seeds": n, "conditions": {cond: {metric: {"mean", "std", "n"}}},
    "summary": {label: {metric: {"mean", "std", "n"}}}}}`; see the module docstring for the order of steps."""
    out = {}
    for ckpt, per_seed in per_seed_summaries(results).items():
        try:
            agg = seed_mean_std(per_seed)
        except ValueError as e:
            raise ValueError(f"checkpoint {ckpt!r}: {e}") from None
        agg["conditions"] = {c: agg["conditions"][c] for c in _sort_conditions(list(agg["conditions"]))}
        _count_fixed_once(agg, results.get("fixed_conditions") or [])
        out[ckpt] = {"n_seeds": len(per_seed), **agg}
    return out


def _count_fixed_once(agg: dict[str, Any], fixed: Sequence[str]) -> None:
    """A condition that draws nothing (`fixed_conditions`: r = 0, fixed availability sets) ran once and was copied
    to every seed: its cells count one run (n = 1, no std), and so do summaries when every condition is fixed."""
    for cond in fixed:
        for cell in agg["conditions"].get(cond, {}).values():
            cell.update(n=1)
    if agg["conditions"] and set(agg["conditions"]) <= set(fixed):
        for row in agg["summary"].values():
            for cell in row.values():
                cell.update(n=1)


# ---------------------------------------------------------------------------------------------- outputs


def _metric_order(summary: dict[str, Any], metrics: Sequence[str] | None) -> list[str]:
    first = next(iter(summary.values()))
    rows = [row for ck in summary.values() for row in ck["conditions"].values()]
    available = [m for m in next(iter(first["conditions"].values())) if all(m in r for r in rows)]
    if metrics is None:
        return available
    missing = [m for m in metrics if m not in available]
    if missing:
        raise ValueError(f"metric(s) {missing} not in every results row; available: {available}")
    return list(metrics)


def _fmt(metric: str, cell: dict[str, float], n_seeds: int = 1) -> str:
    """`mean ± std` over seeds; the mean alone for a cell that ran once in a run of several seeds (`n` 1: it drew
    nothing, see `_count_fixed_once`)."""
    mean, std = cell["mean"], cell["std"]
    if metric not in _PLAIN:
        mean, std = 100 * mean, 100 * std
    digits = 3 if metric in _PLAIN else 2
    return f"{mean:.{digits}f}" if cell.get("n") == 1 < n_seeds else f"{mean:.{digits}f} ± {std:.{digits}f}"


def run_unit(results: dict[str, Any]) -> str:
    """What the keys below a checkpoint are: "seed" (default) or "fold"."""
    return str(results.get("unit", "seed"))


def _runs(row: dict[str, Any], n_seeds: int, over: str = "seed") -> str:
    """`(N seeds)` (or `(N folds)`), or `(1 run)` for a row computed once (no random draw; copied to every seed)."""
    n = 1 if all(cell.get("n", n_seeds) == 1 for cell in row.values()) else n_seeds
    return "(1 run)" if n == 1 and n_seeds > 1 else f"({n} {over}{'s' if n != 1 else ''})"


def _title(results: dict[str, Any]) -> str:
    ds = DATASET_NAMES.get(str(results["dataset"]).lower(), str(results["dataset"]))
    protocol = PROTOCOLS[str(results["protocol"]).lower()]["title"]
    if str(results["protocol"]).lower() == "p2" and (rates := _p2_rates(results)) != P2_RATES:
        protocol = protocol.replace("r = 0.0-0.9", "r = " + ", ".join(f"{r:g}" for r in rates))
    return f"{ds} ({results.get('split', 'test')}), protocol {protocol}"


def markdown_table(results: dict[str, Any], metrics: Sequence[str] | None = None,
                   summary: dict[str, Any] | None = None) -> str:
    """A Markdown section: a title naming dataset and protocol, then one table of mean ± std over seeds with
    one row per (checkpoint, condition) and bold protocol-summary rows. Accuracies and F1 are in percent."""
    summary = summarize(results) if summary is None else summary
    cols = _metric_order(summary, metrics)
    head = ["Checkpoint", "Condition"] + [METRIC_NAMES.get(m, m) for m in cols]
    plain = [m for m in cols if m in _PLAIN]
    lines = [f"### {_title(results)}", "",
             f"Mean ± std over {run_unit(results)}s (population std); accuracies and F1 in %"
             + (f", {' and '.join(plain)} as is." if plain else "."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ckpt, s in summary.items():
        rows = list(s["conditions"].items())
        if ckpt == results.get("reference") and len({json.dumps(r, sort_keys=True) for _, r in rows}) == 1:
            rows = [("every condition", rows[0][1])]  # a constant scored on the same rows under every condition
        for cond, row in rows:
            name = f"{ckpt} {_runs(row, s['n_seeds'], run_unit(results))}"
            lines.append("| " + " | ".join([name, cond] + [_fmt(m, row[m], s["n_seeds"]) for m in cols]) + " |")
        for label, row in s["summary"].items():
            cells = [f"**{_fmt(m, row[m], s['n_seeds'])}**" if m in row else "-" for m in cols]
            lines.append("| " + " | ".join([f"{ckpt} {_runs(row, s['n_seeds'], run_unit(results))}", f"**{label}**"]
                                           + cells) + " |")
    return "\n".join(lines) + "\n"


def plot_results(results: dict[str, Any], path: str | os.PathLike, metrics: Sequence[str] | None = None,
                 summary: dict[str, Any] | None = None) -> Path:
    """Write `plot_png(...)` to `path` (atomically); return the path."""
    return atomic_write(path, plot_png(results, metrics, summary))


def plot_png(results: dict[str, Any], metrics: Sequence[str] | None = None,
             summary: dict[str, Any] | None = None) -> bytes:
    """One PNG (its bytes), one panel per metric, error bars = std over seeds.

    Rate protocols (P1, P2): metric vs missing rate, one line per checkpoint. Set protocols (P3, P5): grouped
    bars, one group per availability set and one bar per checkpoint.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(results) if summary is None else summary
    if metrics is None:
        present = _metric_order(summary, None)
        wanted = [list(KEY_METRICS[results["metric_set"]])] if results.get("metric_set") in KEY_METRICS else []
        metrics = next(([m for m in d if m in present] for d in (*wanted, *_PLOT_DEFAULTS)
                        if all(m in present for m in d)), present)
    metrics = _metric_order(summary, metrics)
    kind = PROTOCOLS[str(results["protocol"]).lower()]["kind"]
    ncols = min(len(metrics), 3)
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    n_ckpt = len(summary)
    reference = results.get("reference")
    for ax, m in zip(axes.flat, metrics):
        scale = 1.0 if m in _PLAIN else 100.0
        for i, (ckpt, s) in enumerate(summary.items()):
            conds = list(s["conditions"])
            mean = np.array([s["conditions"][c][m]["mean"] for c in conds]) * scale
            std = np.array([s["conditions"][c][m]["std"] for c in conds]) * scale
            if kind == "rate" and ckpt == reference:  # the constant predictor: a grey dashed line, no band
                x = np.array([parse_condition(c)[1] for c in conds])
                ax.plot(x, mean, linestyle="--", color="0.45", label=ckpt)
            elif kind == "rate":
                x = np.array([parse_condition(c)[1] for c in conds])
                ax.plot(x, mean, marker="o", label=ckpt)
                ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            else:
                groups = [c for c in P5_SETS if any(c in t["conditions"] for t in summary.values())]
                x = np.arange(len(groups))
                width = 0.8 / n_ckpt
                vals = [s["conditions"].get(g, {}).get(m, {"mean": np.nan, "std": 0.0}) for g in groups]
                style = {"color": "0.75", "hatch": "//"} if ckpt == reference else {}
                ax.bar(x - 0.4 + width * (i + 0.5), [v["mean"] * scale for v in vals], width,
                       yerr=[v["std"] * scale for v in vals], capsize=2, label=ckpt, **style)
                ax.set_xticks(x, groups, rotation=30)
        unit = "" if m in _PLAIN else " (%)"
        arrow = " ↓" if m in _LOWER_IS_BETTER else " ↑"
        ax.set_title(METRIC_NAMES.get(m, m) + unit + arrow)
        ax.set_xlabel("missing rate r" if kind == "rate" else "available modalities")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    ds = DATASET_NAMES.get(str(results["dataset"]).lower(), str(results["dataset"]))
    what = "metric vs missing rate" if kind == "rate" else "metric per availability set"
    fig.suptitle(f"{ds}, {str(results['protocol']).upper()}: {what} (mean ± std over {run_unit(results)}s)")
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_report(results: dict[str, Any], out_dir: str | os.PathLike, stem: str | None = None,
                 metrics: Sequence[str] | None = None, plot_metrics: Sequence[str] | None = None,
                 markdown: str | None = None) -> dict[str, Path]:
    """Write `<stem>.json` (the input results plus the summary), `<stem>.md` (`markdown`, default the table) and
    `<stem>.png` into `out_dir`, all three or none (`atomic_write_all`: a full disk leaves no partial report).

    `stem` defaults to `<dataset>_<protocol>`. Returns `{"json": path, "markdown": path, "plot": path}`.
    """
    summary = summarize(results)
    out_dir = Path(out_dir)
    stem = stem or f"{results['dataset']}_{str(results['protocol']).lower()}"
    payload = {"results": results, "summary": summary}
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md", "plot": out_dir / f"{stem}.png"}
    atomic_write_all({
        paths["json"]: json.dumps(payload, indent=2, allow_nan=True, default=str) + "\n",
        paths["markdown"]: markdown_table(results, metrics, summary) if markdown is None else markdown,
        paths["plot"]: plot_png(results, plot_metrics, summary),
    })
    return paths

