"""The report's figures: learning curves with 95% bands, the final metric per seed, a
forest plot of effect sizes and the average-rank (critical difference) diagram, each a PNG."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from bru_core.report.words import fmt_p, metric_info
from bru_core.stats import METRICS, primary_metric, validation_metric

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _plt()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(samples: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval across seeds, per epoch (seeds of unequal length cut)."""
    length = min(len(s) for s in samples)
    x = np.array([s[:length] for s in samples], dtype=float)
    mean = x.mean(axis=0)
    if x.shape[0] < 2:
        return mean, mean, mean
    half = sps.t.ppf(0.975, x.shape[0] - 1) * x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])
    return mean, mean - half, mean + half


def plot_curves(task: str, objective: str, curves: list[dict[str, Any]], activations: list[str], out: Path) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    by = defaultdict(lambda: defaultdict(dict))  # metric -> activation -> seed -> list
    for p in curves:
        by[p["metric"]][p["activation"]].setdefault(p["seed"], []).append((p["epoch"], p["value"]))
    panels = [
        "train_loss",
        validation_metric(objective),
        primary_metric(objective),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    for ax, metric in zip(axes, panels, strict=True):
        for i, activation in enumerate(activations):
            seeds = by[metric].get(activation, {})
            if not seeds:
                continue
            samples = [[v for _, v in sorted(points)] for points in seeds.values()]
            mean, low, high = _band(samples)
            epochs = np.arange(1, len(mean) + 1)
            scale = 100 if METRICS.get(metric) and METRICS[metric].percent else 1
            scale = 100 if metric in ("val_error", "train_error") else scale
            color = COLORS[i % len(COLORS)]
            floor = mean.min() * 0.5 if metric.endswith("loss") else 0.0  # losses and errors are positive
            ax.plot(epochs, mean * scale, color=color, label=f"{activation} (n={len(samples)})", linewidth=1.6)
            ax.fill_between(epochs, np.maximum(low, floor) * scale, high * scale, color=color, alpha=0.18, linewidth=0)
        label = metric.replace("_", " ") + (" (%)" if metric.endswith("error") else "")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if metric.endswith("loss"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{task}: mean over seeds with 95% band")
    return _save(fig, out)


def plot_seeds(
    task: str,
    metric: str,
    evaluations: list[dict[str, Any]],
    summaries: dict[str, dict[str, Any]],
    activations: list[str],
    out: Path,
) -> Path:
    plt = _plt()
    info = metric_info(metric)
    scale = 100 if info.percent else 1
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(activations) + 2), 4), constrained_layout=True)
    for i, activation in enumerate(activations):
        values = [e[metric] * scale for e in evaluations if e["activation"] == activation and e[metric] is not None]
        diverged = sum(
            e["activation"] == activation and (e.get("status") or "finished") != "finished" for e in evaluations
        )
        if diverged:  # a failure has no value to plot: say it where its dot would be
            ax.annotate(f"{diverged} diverged", (i, 1.0), xycoords=("data", "axes fraction"), ha="center",
                        va="top", color="#d62728", fontsize=8)  # fmt: skip
        if not values:
            continue
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(i + np.asarray(jitter), values, color=COLORS[i % len(COLORS)], alpha=0.7, s=28, zorder=3)
        s = summaries.get(activation)
        if s is not None:
            low = (s["ci_low"] if s["ci_low"] is not None else s["mean"]) * scale
            high = (s["ci_high"] if s["ci_high"] is not None else s["mean"]) * scale
            ax.errorbar(
                i + 0.3,
                s["mean"] * scale,
                yerr=[[s["mean"] * scale - low], [high - s["mean"] * scale]],
                fmt="D",
                color="black",
                capsize=4,
                zorder=4,
            )
    ax.set_xticks(range(len(activations)), activations)
    ax.set_ylabel(info.label + (" (%)" if info.percent else ""))
    ax.set_title(f"{task}: {info.label} per seed (dots),\nmean with 95% t-interval (diamond)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)


def plot_forest(rows: list[dict[str, Any]], out: Path) -> Path:
    """Cohen's d_z per comparison, with an approximate 95% interval
    d +- 1.96 sqrt(1/n + d^2 / (2n)); negative favours a when lower is better."""
    plt = _plt()
    rows = [r for r in rows if r["effect_size"] is not None and r["n"] >= 2]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.42 * len(rows) + 1.2)), constrained_layout=True)
    if not rows:
        ax.text(0.5, 0.5, "no comparison with two or more paired seeds", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out)
    labels = []
    for y, r in enumerate(reversed(rows)):
        d = float(np.clip(r["effect_size"], -10, 10))
        half = 1.96 * math.sqrt(1 / r["n"] + d * d / (2 * r["n"]))
        sign = 1 if r["lower_is_better"] else -1  # plot so that left always favours a
        color = {"better": "#2ca02c", "worse": "#d62728"}.get(r["better"], "#555555")
        ax.errorbar(sign * d, y, xerr=half, fmt="o", color=color, capsize=3)
        labels.append(f"{r['task']}  {r['a']} vs {r['b']}  ({metric_info(r['metric']).label})")
    ax.axvline(0, color="0.4", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("Cohen's d_z (left of 0: a better than b); green/red: a verdict at the family's alpha")
    return _save(fig, out)


def plot_ranks(rankings: list[dict[str, Any]], out: Path) -> Path:
    """Demšar's diagram: average ranks on a line, with Nemenyi's critical difference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 2.8), constrained_layout=True)
    if not rankings:
        ax.text(0.5, 0.5, "no ranking", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, out)
    k = len(rankings)
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(0, 1)
    ax.hlines(0.75, 1, k, color="black")
    for r in range(1, k + 1):
        ax.vlines(r, 0.72, 0.78, color="black")
        ax.text(r, 0.83, str(r), ha="center")
    ordered = sorted(rankings, key=lambda r: r["mean_rank"])
    for i, row in enumerate(ordered):
        y = 0.55 - 0.4 * i / max(1, k - 1)
        ax.plot([row["mean_rank"], row["mean_rank"]], [0.75, y], color=COLORS[i % len(COLORS)])
        ax.text(row["mean_rank"], y - 0.06, f"{row['activation']} ({row['mean_rank']:.2f})", ha="center", fontsize=8)
    cd = ordered[0]["critical_difference"]
    if cd is not None and math.isfinite(cd):
        end = min(1 + cd, k + 0.5)
        ax.hlines(0.95, 1, end, color="#d62728", linewidth=2)
        ax.text(
            (1 + end) / 2,
            0.97,
            f"CD = {cd:.2f}" + (" (wider than the scale)" if 1 + cd > end else ""),
            ha="center",
            fontsize=8,
            color="#d62728",
            va="bottom",
        )
    n = ordered[0]["n_tasks"]
    p = ordered[0]["friedman_p"]
    note = f"Friedman p = {fmt_p(p)}" if p is not None else ordered[0]["note"]
    ax.set_title(f"average rank over {n} task(s) (1 = best); {note}", fontsize=9)
    ax.set_axis_off()
    return _save(fig, out)
