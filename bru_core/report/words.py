"""The report's words: numbers formatted for a reader, the rows a reader is told about
first, one plain sentence per comparison, and the paragraph on the statistics."""

from __future__ import annotations

import math
from typing import Any

from bru_core.stats import METRICS, TRAIN_LOSS_FLOOR, MetricInfo, holm_family


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


def headline_rows(comparisons: list[dict[str, Any]], primary: dict[str, str]) -> list[dict[str, Any]]:
    """The rows a reader is told about first: the confirmatory family; in a campaign that
    declared none (compare.exploratory), the signed-rank rows of each task's primary metric."""
    confirmatory = [r for r in comparisons if r.get("family") == "confirmatory"]
    if confirmatory:
        return confirmatory
    return rank_rows([r for r in comparisons if r["metric"] == primary.get(r["task"])])


def rank_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def statistics_paragraph(confirmatory: list[dict[str, Any]], alpha: float) -> str:
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
