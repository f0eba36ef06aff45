"""The report's page: report.html, section by section, with its figures embedded, from what
the results database holds of one campaign."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bru_core.report.figures import plot_curves, plot_forest, plot_ranks, plot_seeds
from bru_core.report.words import (
    family_size,
    fmt_diff,
    fmt_p,
    fmt_value,
    headline_rows,
    metric_info,
    rank_rows,
    sentence,
    statistics_paragraph,
)
from bru_core.settings import Settings, shown_url
from bru_core.stats import ALPHA

Rows = list[dict[str, Any]]

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}figure{margin:1em 0}
figcaption{font-size:11px;color:#777}.better{color:#2ca02c}.worse{color:#d62728}li{margin:.3em 0}"""


@dataclass(frozen=True)
class Campaign:
    """What the results database holds of one campaign: its record (``info``: spec,
    protocol, provenance) and the rows of each table."""

    name: str
    info: Any
    tasks: Rows
    studies: Rows
    evaluations: Rows
    summaries: Rows
    comparisons: Rows
    rankings: Rows
    curves: Rows


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def _sentences(rows: Rows, comparisons: Rows) -> str:
    """One list item per row, coloured by its verdict."""
    return "".join(
        f'<li class="{html.escape(r["better"].replace(" ", "-"))}">'
        f"{html.escape(sentence(r, family_size(comparisons, r)))}</li>"
        for r in rows
    )


def render(campaign: Campaign, settings: Settings, staging: Path) -> None:
    """report.html and its PNGs, into the staging folder."""
    info, comparisons = campaign.info, campaign.comparisons
    activations = [a.strip().lower() for a in info.spec["activations"]]
    labels = list(dict.fromkeys(s["activation"] for s in campaign.summaries)) or activations
    headline = headline_rows(comparisons, {t["task"]: t["primary_metric"] for t in campaign.tasks})
    parts = _opening(campaign, settings, headline)
    parts.append("<h2>Studies</h2>" + _studies_table(campaign.studies))
    parts.append("<h2>Repeats</h2>" + _repeats_table(campaign.evaluations, labels))
    for task in campaign.tasks:
        parts += _task_section(campaign, task, headline, labels, staging)
    parts.append(_all_comparisons(comparisons))
    parts += _across_tasks(headline, campaign.rankings, staging)
    name = html.escape(campaign.name)
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>bru-lab {name}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    (staging / "report.html").write_text(page, encoding="utf-8")


def _opening(campaign: Campaign, settings: Settings, headline: Rows) -> list[str]:
    """The title, where the numbers came from, the protocol, the statistics and the headline sentences."""
    info, comparisons = campaign.info, campaign.comparisons
    parts: list[str] = [f"<h1>bru-lab report: campaign {html.escape(campaign.name)}</h1>"]
    parts.append(f"<p>Aggregated {html.escape(info.aggregated_at.isoformat() if hasattr(info.aggregated_at, 'isoformat') else str(info.aggregated_at))} "
                 f"by bru-lab {html.escape(info.bru_version)} from MLflow {html.escape(shown_url(info.tracking_uri, settings.home_path))} (experiment {html.escape(info.mlflow_experiment_id)}).</p>")  # fmt: skip
    parts.append(
        "<h2>Protocol</h2><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in info.protocol.splitlines())
        + "</ul>"
    )
    confirmatory = [c for c in comparisons if c.get("family") == "confirmatory"]
    alpha = (info.spec.get("compare") or {}).get("alpha", ALPHA)
    parts.append(f"<p>{html.escape(statistics_paragraph(confirmatory, alpha))}</p>")
    if headline:
        title = "Confirmatory comparisons" if confirmatory else "Comparisons (exploratory campaign)"
        parts.append(f"<h2>{title}</h2><ul>{_sentences(headline, comparisons)}</ul>")
    return parts


def _studies_table(studies: Rows) -> str:
    return _table(
        ["task", "activation", "budget", "with outcome", "complete", "pruned", "failed", "lost (retried)", "best value", "best parameters"],
        [[s["task"], s["activation"], s["trials"], s["done"], s["complete"], s["pruned"], s["failed"], s["lost"],
          fmt_value("x", s["best_value"]), ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in (s["best_params"] or {}).items())]
         for s in studies],
    )  # fmt: skip


def _repeats_table(evaluations: Rows, labels: list[str]) -> str:
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


def _summary_table(task_summaries: Rows, metric: str) -> str:
    """Per activation and metric: the seeds, failures and the summary statistics."""
    return _table(
        ["activation", "metric", "n", "failed", "never reached", "mean", "sd", "median", "IQM", "95% CI (t)"],
        [[s["activation"], metric_info(s["metric"]).label, s["n"], s.get("n_failed") or 0,
          s.get("n_censored") or 0 if metric_info(s["metric"]).censored else "", fmt_value(s["metric"], s["mean"]),
          fmt_value(s["metric"], s["sd"]), fmt_value(s["metric"], s["median"]), fmt_value(s["metric"], s["iqm"]),
          f"[{fmt_value(s['metric'], s['ci_low'])}, {fmt_value(s['metric'], s['ci_high'])}]"] for s in task_summaries],
    )  # fmt: skip


def _task_section(
    campaign: Campaign, task: dict[str, Any], headline: Rows, labels: list[str], staging: Path
) -> list[str]:
    """One task: its summaries, its sentences (headline rows first), its curves and its seeds."""
    name, metric, objective = task["task"], task["primary_metric"], task["objective"]
    comparisons = campaign.comparisons
    task_summaries = [s for s in campaign.summaries if s["task"] == name]
    parts = [f"<h2>{html.escape(name)}</h2>", _summary_table(task_summaries, metric)]
    rows = [c for c in headline if c["task"] == name]
    others = [c for c in rank_rows([c for c in comparisons if c["task"] == name and c["metric"] == metric])
              if c not in rows]  # fmt: skip
    if rows or others:
        parts.append(f"<ul>{_sentences([*rows, *others], comparisons)}</ul>")
    task_curves = [p for p in campaign.curves if p["task"] == name]
    if task_curves:
        curves = plot_curves(name, objective, task_curves, labels, staging / f"curves-{_slug(name)}.png")
        parts.append(_img(curves, f"learning curves {name}"))
    task_evals = [e for e in campaign.evaluations if e["task"] == name]
    by_activation = {s["activation"]: s for s in task_summaries if s["metric"] == metric}
    if task_evals:
        seeds = plot_seeds(name, metric, task_evals, by_activation, labels, staging / f"seeds-{_slug(name)}.png")
        parts.append(_img(seeds, f"final {metric} per seed {name}"))
    return parts


# Read with the table of every comparison: which rows are adjusted together, and what each estimate is.
ALL_COMPARISONS_NOTE = (
    "Confirmatory rows are Holm-adjusted together; every exploratory row within its metric and test. The estimate "
    "and its 95% interval are the test's own: Hodges-Lehmann with the Walsh-average interval for Wilcoxon rows, the "
    "mean difference with its t-interval for t rows (intervals are per comparison, not simultaneous). MDD: the "
    "minimum detectable difference at 80% power (confirmatory rows)."
)


def _all_comparisons(comparisons: Rows) -> str:
    return f"<h2>All comparisons</h2><p>{ALL_COMPARISONS_NOTE}</p>" + _table(
        ["task", "metric", "a", "b", "family", "n", "failed a/b", "mean a", "mean b", "estimate a-b [95% CI]", "test",
         "statistic", "p", "p (Holm)", "MDD", "d_z", "P(a better)", "verdict", "note"],
        [[c["task"], c["metric"], c["a"], c["b"], c.get("family") or "exploratory", c["n"],
          f"{c.get('n_failed_a') or 0}/{c.get('n_failed_b') or 0}",
          fmt_value(c["metric"], c["mean_a"]), fmt_value(c["metric"], c["mean_b"]),
          f"{fmt_diff(c['metric'], c.get('estimate', c['diff']))} [{fmt_diff(c['metric'], c['ci_low'])}, {fmt_diff(c['metric'], c['ci_high'])}]",
          c["test"], fmt_value("x", c["statistic"]), fmt_p(c["p_value"]), fmt_p(c["p_adjusted"]),
          fmt_diff(c["metric"], c.get("mdd")).lstrip("+"),
          fmt_value("x", c["effect_size"], 3), fmt_value("x", c["prob_improvement"], 3), c["better"], c["note"]]
         for c in comparisons],
    )  # fmt: skip


def _across_tasks(headline: Rows, rankings: Rows, staging: Path) -> list[str]:
    """The forest plot of the headline rows, and the average ranks across tasks."""
    parts = ["<h2>Effect sizes</h2>" + _img(plot_forest(headline, staging / "forest.png"), "forest plot")]
    primary = [r for r in rankings if r["metric"] == "primary"]
    parts.append(
        "<h2>Across tasks</h2>"
        + _img(plot_ranks(primary, staging / "critical-difference.png"), "critical difference diagram")
    )
    if primary:
        parts.append(_table(["activation", "average rank", "tasks", "Friedman statistic", "Friedman p", "Nemenyi CD", "note"],
                            [[r["activation"], f"{r['mean_rank']:.2f}", r["n_tasks"], fmt_value("x", r["friedman_statistic"]),
                              fmt_p(r["friedman_p"]), fmt_value("x", r["critical_difference"], 3), r["note"]] for r in primary]))  # fmt: skip
    return parts
