"""The campaign report: one self-contained HTML file and its PNGs, from the results database.

Learning curves (mean and 95% band per activation, per task: the paper's figures), the
final metric per seed, the comparison table with CIs and Holm-adjusted p-values, a forest
plot of effect sizes, the average-rank (critical difference) diagram across tasks, one
plain sentence per task and pair, and the protocol that produced it all.
"""

from __future__ import annotations

import base64
import html
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from bru_core.errors import BruError
from bru_core.results import ResultsStore
from bru_core.settings import Settings, get_settings, shown_url
from bru_core.stats import ALPHA, METRICS, TRAIN_LOSS_FLOOR, MetricInfo, holm_family

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


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


def metric_info(metric: str) -> MetricInfo:
    """The metric's description; a metric of an older bru (e.g. the plain error quotient,
    now analysed on the log scale) is shown by its name."""
    return METRICS.get(metric) or MetricInfo(metric, metric.replace("_", " "), True, False)


def fmt_value(metric: str, value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    info = METRICS.get(metric)
    if info is not None and info.percent and math.isfinite(value):
        return f"{100 * value:.2f}%"
    return f"{value:.{digits}g}"


def fmt_diff(metric: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    info = METRICS.get(metric)
    return f"{100 * value:+.2f}" if info is not None and info.percent and math.isfinite(value) else f"{value:+.4g}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def _band(samples: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval across seeds, per epoch (seeds of unequal length cut)."""
    length = min(len(s) for s in samples)
    x = np.array([s[:length] for s in samples], dtype=float)
    mean = x.mean(axis=0)
    if x.shape[0] < 2:
        return mean, mean, mean
    half = sps.t.ppf(0.975, x.shape[0] - 1) * x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- plots


def plot_curves(task: str, objective: str, curves: list[dict[str, Any]], activations: list[str], out: Path) -> Path:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    by = defaultdict(lambda: defaultdict(dict))  # metric -> activation -> seed -> list
    for p in curves:
        by[p["metric"]][p["activation"]].setdefault(p["seed"], []).append((p["epoch"], p["value"]))
    panels = [
        "train_loss",
        "val_error" if objective == "classification" else "val_loss",
        "test_error" if objective == "classification" else "test_loss",
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


# --------------------------------------------------------------------------- words


def headline_rows(comparisons: list[dict[str, Any]], primary: dict[str, str]) -> list[dict[str, Any]]:
    """The rows a reader is told about first: the confirmatory family; in a campaign that
    declared none (compare.exploratory), the signed-rank rows of each task's primary metric."""
    confirmatory = [r for r in comparisons if r.get("family") == "confirmatory"]
    if confirmatory:
        return confirmatory
    return _rank_rows([r for r in comparisons if r["metric"] == primary.get(r["task"])])


def _rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per task, metric and pair: the signed-rank one (or its 'none' when untested)."""
    seen: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in rows:
        if r["test"] != "paired_t":
            seen.setdefault((r["task"], r["metric"], r["a"], r["b"]), r)
    return list(seen.values())


def family_size(comparisons: list[dict[str, Any]], row: dict[str, Any]) -> int:
    """How many tested rows share the row's Holm family (the aggregation's grouping)."""

    def key(r: dict[str, Any]) -> tuple[str, ...]:
        return holm_family(r.get("family") or "exploratory", r["metric"], r["test"])

    return sum(1 for r in comparisons if key(r) == key(row) and r["p_adjusted"] is not None)


def sentence(row: dict[str, Any], family_size: int | None = None) -> str:
    """E.g. 'eru:2 vs relu on mnist/mlp4 (confirmatory): test error 1.71% vs 1.89%, difference
    -0.18 [-0.27, -0.09] points (Hodges-Lehmann, 95% CI), n = 14, Holm-adjusted p = 0.004 over
    8 comparisons: better'; when nothing is found, how large a difference could have been."""
    metric = row["metric"]
    info = metric_info(metric)
    family = row.get("family") or "exploratory"
    head = (
        f"{row['a']} vs {row['b']} on {row['task']} ({family}): {info.label} "
        f"{fmt_value(metric, row['mean_a'])} vs {fmt_value(metric, row['mean_b'])}"
    )
    failures = _failures(row)
    if row["p_adjusted"] is None:
        return f"{head}: not tested ({row['note'] or 'no p-value'}){failures}"
    unit = " points" if info.percent else ""
    kind = "mean difference" if row["test"] == "paired_t" else "Hodges-Lehmann"
    estimate = row.get("estimate", row["diff"])
    diff = (
        f"difference {fmt_diff(metric, estimate)} [{fmt_diff(metric, row['ci_low'])}, "
        f"{fmt_diff(metric, row['ci_high'])}]{unit} ({kind}, 95% CI)"
    )
    if metric == "log_error_quotient" and estimate is not None and math.isfinite(estimate):
        diff += f", an error-quotient ratio of {math.exp(estimate):.3g}"
    over = f" over {family_size} comparisons" if family_size else ""
    verdict = {"better": "better", "worse": "worse", "no difference": "no difference detected"}[row["better"]]
    text = f"{head}, {diff}, n = {row['n']}, Holm-adjusted p = {fmt_p(row['p_adjusted'])}{over}: {verdict}"
    if row["better"] == "no difference" and row.get("mdd") is not None:
        mdd = row["mdd"]
        if math.isfinite(mdd):
            size = f"{100 * mdd:.2f} points" if info.percent else f"{mdd:.3g}"
            text += f"; the design could have detected a difference of {size} or more 80% of the time"
        else:
            text += "; with these seeds the design could not have detected any difference at its alpha"
    return text + failures


def _failures(row: dict[str, Any]) -> str:
    parts = [
        f"{row[f'n_failed_{side}']} of {row[side]}'s {row['n']} seeds diverged"
        for side in ("a", "b")
        if row.get(f"n_failed_{side}")
    ]
    return f" ({'; '.join(parts)}: ranked as the worst outcome)" if parts else ""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}
figcaption{font-size:11px;color:#777}.better{color:#2ca02c}.worse{color:#d62728}li{margin:.3em 0}"""


def _statistics_paragraph(confirmatory: list[dict[str, Any]], alpha: float) -> str:
    tested = sum(r["p_adjusted"] is not None for r in confirmatory)
    design = (
        f"The confirmatory family ({tested} tested comparisons: each task's primary metric, each candidate against "
        f"each reference, the spec's test) is Holm-adjusted together at alpha {alpha:g}; every other comparison is "
        "exploratory, Holm-adjusted within its metric and test, and labelled so."
        if confirmatory
        else "This campaign declared no confirmatory family (compare.exploratory): every comparison is exploratory."
    )
    return (
        f"Statistics (docs/statistics.md): {design} Seeds are paired (the same initialisation stream and batch order "
        "for every activation). The Wilcoxon signed-rank test is exact (ties and zeros included), with the "
        "Hodges-Lehmann estimate and its Walsh-average interval; the paired t-test goes with the mean difference and "
        "its t-interval; a verdict's direction is that of its own test's estimate. A diverged seed is a failure: the "
        "worst rank in the signed-rank test, left out (and counted) in means and t-tests. Per activation: mean, sd, "
        "median, interquartile mean and the 95% t-interval of the mean. The error quotient is analysed as "
        f"ln(test loss / max(train loss, {TRAIN_LOSS_FLOOR:g})); epochs to target is censored at epochs + 1 and "
        "compared by ranks only; it and the best validation loss are measured on the split that chose the "
        "hyperparameters, so they are exploratory. Across tasks: average ranks, Friedman's test and Nemenyi's "
        "critical difference (exploratory)."
    )


def _repeats_table(evaluations: list[dict[str, Any]], labels: list[str]) -> str:
    """Repeat outcomes per task and activation: finished, diverged (with the first reason)."""
    rows = []
    for task in dict.fromkeys(e["task"] for e in evaluations):
        for activation in labels:
            runs = [e for e in evaluations if e["task"] == task and e["activation"] == activation]
            if not runs:
                continue
            diverged = [e for e in runs if (e.get("status") or "finished") != "finished"]
            reason = (diverged[0].get("failure") or "") if diverged else ""
            rows.append([task, activation, len(runs), len(runs) - len(diverged), len(diverged),
                         ", ".join(str(e["seed"]) for e in diverged) or "-", reason[:120]])  # fmt: skip
    return _table(["task", "activation", "seeds", "finished", "diverged", "diverged seeds", "first reason"], rows)


def write_report(campaign: str, out: Path, settings: Settings | None = None) -> Path:
    """Write ``report.html`` and its PNGs into ``out`` (atomically replacing an older
    report); returns the HTML path."""
    settings = settings or get_settings()
    out = out.resolve()  # `--out .` names the working directory, whose .name is empty
    report_path_error(out)
    with ResultsStore(settings.results) as store:
        info = store.campaign(campaign)
        get = lambda what: store.records(what, campaign)  # noqa: E731
        tasks, studies, evaluations, summaries = get("tasks"), get("studies"), get("evaluations"), get("summary")
        comparisons, rankings, curves = get("comparisons"), get("rankings"), get("curves")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent))
    try:
        _render(
            campaign, info, settings, staging, tasks, studies, evaluations, summaries, comparisons, rankings, curves
        )
        _swap_in(staging, out)
    finally:
        if staging.exists():  # a failure before the swap leaves no half-written folder behind
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return out / "report.html"


def _render(campaign, info, settings, staging, tasks, studies, evaluations, summaries, comparisons, rankings, curves):
    """report.html, its PNGs and the marker, into the staging folder."""
    activations = [a.strip().lower() for a in info.spec["activations"]]
    labels = list(dict.fromkeys(s["activation"] for s in summaries)) or activations
    parts: list[str] = [f"<h1>bru-lab report: campaign {html.escape(campaign)}</h1>"]
    parts.append(f"<p>Aggregated {html.escape(info.aggregated_at.isoformat() if hasattr(info.aggregated_at, 'isoformat') else str(info.aggregated_at))} "
                 f"by bru-lab {html.escape(info.bru_version)} from MLflow {html.escape(shown_url(info.tracking_uri, settings.home_path))} (experiment {html.escape(info.mlflow_experiment_id)}).</p>")  # fmt: skip
    parts.append(
        "<h2>Protocol</h2><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in info.protocol.splitlines())
        + "</ul>"
    )
    primary_of = {t["task"]: t["primary_metric"] for t in tasks}
    headline = headline_rows(comparisons, primary_of)
    confirmatory = [c for c in comparisons if c.get("family") == "confirmatory"]
    alpha = (info.spec.get("compare") or {}).get("alpha", ALPHA)
    parts.append(f"<p>{html.escape(_statistics_paragraph(confirmatory, alpha))}</p>")
    if headline:
        parts.append(
            "<h2>" + ("Confirmatory comparisons" if confirmatory else "Comparisons (exploratory campaign)") + "</h2><ul>"
            + "".join(
                f'<li class="{html.escape(r["better"].replace(" ", "-"))}">'
                f"{html.escape(sentence(r, family_size(comparisons, r)))}</li>"
                for r in headline
            )
            + "</ul>"
        )  # fmt: skip
    parts.append("<h2>Studies</h2>" + _table(
        ["task", "activation", "budget", "with outcome", "complete", "pruned", "failed", "lost (retried)", "best value", "best parameters"],
        [[s["task"], s["activation"], s["trials"], s["done"], s["complete"], s["pruned"], s["failed"], s["lost"],
          fmt_value("x", s["best_value"]), ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (s["best_params"] or {}).items())]
         for s in studies],
    ))  # fmt: skip
    parts.append("<h2>Repeats</h2>" + _repeats_table(evaluations, labels))
    for task in tasks:
        name, metric, objective = task["task"], task["primary_metric"], task["objective"]
        parts.append(f"<h2>{html.escape(name)}</h2>")
        task_summaries = [s for s in summaries if s["task"] == name]
        parts.append(_table(
            ["activation", "metric", "n", "failed", "never reached", "mean", "sd", "median", "IQM", "95% CI (t)"],
            [[s["activation"], metric_info(s["metric"]).label, s["n"], s.get("n_failed") or 0,
              s.get("n_censored") or 0 if metric_info(s["metric"]).censored else "", fmt_value(s["metric"], s["mean"]),
              fmt_value(s["metric"], s["sd"]), fmt_value(s["metric"], s["median"]), fmt_value(s["metric"], s["iqm"]),
              f"[{fmt_value(s['metric'], s['ci_low'])}, {fmt_value(s['metric'], s['ci_high'])}]"] for s in task_summaries],
        ))  # fmt: skip
        rows = [c for c in headline if c["task"] == name]
        others = [c for c in _rank_rows([c for c in comparisons if c["task"] == name and c["metric"] == metric])
                  if c not in rows]  # fmt: skip
        if rows or others:
            parts.append(
                "<ul>"
                + "".join(
                    f'<li class="{html.escape(r["better"].replace(" ", "-"))}">'
                    f"{html.escape(sentence(r, family_size(comparisons, r)))}</li>"
                    for r in [*rows, *others]
                )
                + "</ul>"
            )  # fmt: skip
        task_curves = [p for p in curves if p["task"] == name]
        if task_curves:
            parts.append(
                _img(
                    plot_curves(name, objective, task_curves, labels, staging / f"curves-{_slug(name)}.png"),
                    f"learning curves {name}",
                )
            )
        task_evals = [e for e in evaluations if e["task"] == name]
        by_activation = {s["activation"]: s for s in task_summaries if s["metric"] == metric}
        if task_evals:
            parts.append(
                _img(
                    plot_seeds(name, metric, task_evals, by_activation, labels, staging / f"seeds-{_slug(name)}.png"),
                    f"final {metric} per seed {name}",
                )
            )
    parts.append(
        "<h2>All comparisons</h2><p>Confirmatory rows are Holm-adjusted together; every exploratory row within its "
        "metric and test. The estimate and its 95% interval are the test's own: Hodges-Lehmann with the Walsh-average "
        "interval for Wilcoxon rows, the mean difference with its t-interval for t rows (intervals are per "
        "comparison, not simultaneous). MDD: the minimum detectable difference at 80% power (confirmatory rows).</p>"
        + _table(
        ["task", "metric", "a", "b", "family", "n", "failed a/b", "mean a", "mean b", "estimate a-b [95% CI]", "test",
         "statistic", "p", "p (Holm)", "MDD", "d_z", "P(a better)", "verdict", "note"],
        [[c["task"], c["metric"], c["a"], c["b"], c.get("family") or "exploratory", c["n"],
          f"{c.get('n_failed_a') or 0}/{c.get('n_failed_b') or 0}",
          fmt_value(c["metric"], c["mean_a"]), fmt_value(c["metric"], c["mean_b"]),
          f"{fmt_diff(c['metric'], c.get('estimate', c['diff']))} [{fmt_diff(c['metric'], c['ci_low'])}, {fmt_diff(c['metric'], c['ci_high'])}]",
          c["test"], fmt_value("x", c["statistic"]), fmt_p(c["p_value"]), fmt_p(c["p_adjusted"]),
          fmt_diff(c["metric"], c.get("mdd")).lstrip("+"),
          fmt_value("x", c["effect_size"], 3), fmt_value("x", c["prob_improvement"], 3), c["better"], c["note"]] for c in comparisons],
    ))  # fmt: skip
    primary_rows = headline
    parts.append("<h2>Effect sizes</h2>" + _img(plot_forest(primary_rows, staging / "forest.png"), "forest plot"))
    primary = [r for r in rankings if r["metric"] == "primary"]
    parts.append(
        "<h2>Across tasks</h2>"
        + _img(plot_ranks(primary, staging / "critical-difference.png"), "critical difference diagram")
    )
    if primary:
        parts.append(_table(["activation", "average rank", "tasks", "Friedman statistic", "Friedman p", "Nemenyi CD", "note"],
                            [[r["activation"], f"{r['mean_rank']:.2f}", r["n_tasks"], fmt_value("x", r["friedman_statistic"]),
                              fmt_p(r["friedman_p"]), fmt_value("x", r["critical_difference"], 3), r["note"]] for r in primary]))  # fmt: skip
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>bru-lab {html.escape(campaign)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    (staging / "report.html").write_text(page, encoding="utf-8")
    marker = f"bru-lab report of campaign {campaign}; bru replaces this folder whole\n"
    (staging / REPORT_MARKER).write_text(marker)


# A folder bru wrote a report into says so with this file; only such a folder (or an empty
# one, or one from before the marker holding nothing but report.html and PNGs) is ever
# replaced, so `--out ~/thesis` is refused rather than emptied.
REPORT_MARKER = ".bru-report"


def _is_replaceable(folder: Path) -> bool:
    entries = list(folder.iterdir())
    ours = [e for e in entries if e.is_file() and (e.name in ("report.html", REPORT_MARKER) or e.suffix == ".png")]
    return len(ours) == len(entries) and (not entries or any(e.name in ("report.html", REPORT_MARKER) for e in ours))


def _swap_in(staging: Path, out: Path) -> None:
    """Put the staged report at ``out``: a reader never sees half of one."""
    import shutil

    report_path_error(out)  # again: the folder may have changed since the command checked it
    if not out.exists():
        os.replace(staging, out)
        return
    if not any(out.iterdir()):  # an empty folder (perhaps the working directory): fill it, page last
        for item in sorted(staging.iterdir(), key=lambda p: p.name == "report.html"):
            os.replace(item, out / item.name)
        staging.rmdir()
        return
    old = Path(tempfile.mkdtemp(prefix=".report-old-", dir=out.parent))
    os.replace(out, old)  # onto the empty folder just made: a name nobody else holds
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def report_path_error(out: Path) -> None:
    """BruError unless ``out`` may receive a report: absent, empty, or a report bru wrote."""
    if out.exists() and not out.is_dir():
        raise BruError(f"--out: {out} is a file; give a folder for the report")
    if out.is_dir() and not _is_replaceable(out):
        raise BruError(
            f"--out: {out} holds files bru did not write (no {REPORT_MARKER} in it) and would be replaced whole; "
            "give a new or empty folder, or the folder of an earlier report"
        )
