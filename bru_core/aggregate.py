"""From MLflow's repeat runs to the evidence: evaluations, summaries, comparisons, rankings.

``aggregate(campaign)`` reads the campaign's spec and every FINISHED repeat run (final
metrics and per-epoch curves) from MLflow, computes the statistics of bru_core.stats, and
replaces the campaign's rows in the results database in one transaction. Reading is the
only thing it does to MLflow; rerunning it gives the same rows (the bootstrap is seeded).
"""

from __future__ import annotations

import statistics as pystats
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bru_core import stats
from bru_core.errors import BruError
from bru_core.models import model_kind
from bru_core.results import (
    Campaign,
    ComparisonRow,
    CurvePoint,
    Evaluation,
    RankingRow,
    ResultsStore,
    Study,
    SummaryRow,
    Task,
    now,
)
from bru_core.settings import Settings, get_settings
from bru_core.spec import CampaignSpec, parse_spec
from bru_core.tracking import ROLE, Tracker

CURVES = ("train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error")


@dataclass
class RepeatRun:
    task: str
    activation: str
    seed: int
    run_id: str
    final: dict[str, float]
    curves: dict[str, list[float]]
    seconds: float | None


@dataclass
class AggregateResult:
    campaign: str
    evaluations: int
    comparisons: int
    tests: int  # comparison rows with a p-value
    missing: list[str] = field(default_factory=list)  # task x activation without finished repeats
    report_dir: str | None = None


def objective_of(spec: CampaignSpec, task: str) -> str:
    return model_kind(spec.task(task).model).objective


def collect(tracker: Tracker, spec: CampaignSpec, on_run: Callable[[int, int], None] | None = None) -> list[RepeatRun]:
    """Every FINISHED repeat run of the campaign with its final metrics and curves."""
    experiment_id = tracker.experiment_id(spec.name)
    runs = tracker.find_runs(experiment_id, {ROLE: "repeat"}, status="FINISHED")
    result = []
    for i, run in enumerate(runs):
        tags = run.data.tags
        final = {k.removeprefix("final_"): v for k, v in run.data.metrics.items() if k.startswith("final_")}
        keys = set(run.data.metrics)
        curves = {key: tracker.metric_history(run.info.run_id, key) for key in CURVES if key in keys}
        result.append(
            RepeatRun(
                tags["bru.task"],
                tags["bru.activation"],
                int(tags["bru.seed"]),
                run.info.run_id,
                final,
                curves,
                run.data.metrics.get("seconds"),
            )
        )
        if on_run is not None:
            on_run(i + 1, len(runs))
    return result


def _studies(tracker: Tracker, spec: CampaignSpec) -> list[Study]:
    rows = []
    for run in tracker.find_runs(tracker.experiment_id(spec.name), {ROLE: "study"}):
        tags = run.data.tags

        def number(key: str, tags: dict[str, str] = tags) -> int | None:
            return int(tags[key]) if key in tags else None

        rows.append(
            Study(
                task=tags.get("bru.task", ""),
                activation=tags.get("bru.activation", ""),
                study_name=tags.get("bru.study", ""),
                trials=number("bru.budget"),
                done=number("bru.done"),
                complete=number("bru.complete"),
                pruned=number("bru.pruned"),
                failed=number("bru.failed"),
                lost=number("bru.lost"),
                best_value=run.data.metrics.get("best_value"),
                best_params={
                    k.removeprefix("best_"): _number(v) for k, v in run.data.params.items() if k.startswith("best_")
                }
                or None,
                mlflow_run_id=run.info.run_id,
            )
        )
    return rows


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def evaluate_runs(spec: CampaignSpec, runs: list[RepeatRun]) -> tuple[list[Evaluation], dict[str, float | None]]:
    """One Evaluation per run, and each task's target for epochs-to-target: the median over
    activations of the mean final validation metric."""
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        metric = "val_error" if objective_of(spec, run.task) == "classification" else "val_loss"
        if metric in run.final:
            by_task[run.task][run.activation].append(run.final[metric])
    targets: dict[str, float | None] = {}
    for task in (t.name for t in spec.tasks):
        means = [pystats.fmean(v) for v in by_task.get(task, {}).values() if v]
        targets[task] = pystats.median(means) if means else None
    evaluations = []
    for run in runs:
        objective = objective_of(spec, run.task)
        val_metric = "val_error" if objective == "classification" else "val_loss"
        target = targets.get(run.task)
        curve = run.curves.get(val_metric, [])
        evaluations.append(
            Evaluation(
                task=run.task,
                activation=run.activation,
                seed=run.seed,
                mlflow_run_id=run.run_id,
                test_error=run.final.get("test_error") if objective == "classification" else None,
                test_loss=run.final.get("test_loss"),
                best_val_loss=min(run.curves["val_loss"]) if run.curves.get("val_loss") else None,
                error_quotient=run.final.get("error_quotient"),
                train_loss_auc=stats.train_loss_auc(run.curves["train_loss"]) if run.curves.get("train_loss") else None,
                epochs_to_target=float(stats.epochs_to_target(curve, target)) if curve and target is not None else None,
                val_error=run.final.get("val_error") if objective == "classification" else None,
                val_loss=run.final.get("val_loss"),
                train_loss=run.final.get("train_loss"),
                epochs=max((len(c) for c in run.curves.values()), default=0),
                seconds=run.seconds,
            )
        )
    return evaluations, targets


def comparison_pairs(labels: list[str], references: list[str]) -> list[tuple[str, str]]:
    """(a, b): every activation against every reference, each unordered pair once."""
    pairs = []
    for j, b in enumerate(references):
        for a in labels:
            if a == b or (a in references and references.index(a) < j):
                continue
            pairs.append((a, b))
    return pairs


def compute(
    spec: CampaignSpec, evaluations: list[Evaluation], seed: int = 0, resamples: int = stats.RESAMPLES
) -> tuple[list[SummaryRow], list[ComparisonRow], list[RankingRow]]:
    """Summaries, paired comparisons (Holm over the campaign, per test) and rankings."""
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(
        dict
    )  # (task, activation, metric) -> seed -> value
    for e in evaluations:
        for metric in stats.METRICS:
            value = getattr(e, metric)
            if value is not None:
                values[(e.task, e.activation, metric)][e.seed] = value
    summaries: list[SummaryRow] = []
    comparisons: list[ComparisonRow] = []
    for task in (t.name for t in spec.tasks):
        objective = objective_of(spec, task)
        for metric in stats.metrics_for(objective):
            info = stats.METRICS[metric]
            for activation in spec.labels:
                sample = values.get((task, activation, metric))
                if not sample:
                    continue
                s = stats.describe(list(sample.values()), seed, resamples)
                summaries.append(
                    SummaryRow(task=task, activation=activation, metric=metric, lower_is_better=info.lower_is_better, n=s.n, mean=s.mean, sd=s.sd,
                               median=s.median, iqm=s.iqm, ci_low=s.ci_low, ci_high=s.ci_high)
                )  # fmt: skip
            for a, b in comparison_pairs(spec.labels, spec.references):
                xa, xb = values.get((task, a, metric), {}), values.get((task, b, metric), {})
                c = stats.compare_paired(xa, xb, info.lower_is_better, seed, resamples)
                note = c.note if (xa and xb) else f"no finished repeat runs of {a if not xa else b}"
                for t in c.tests:
                    comparisons.append(
                        ComparisonRow(task=task, metric=metric, a=a, b=b, n=c.n, mean_a=c.mean_a, mean_b=c.mean_b, diff=c.diff,
                                      ci_low=c.ci_low, ci_high=c.ci_high, test=t.test, statistic=t.statistic, p_value=t.p_value,
                                      p_adjusted=None, effect_size=c.effect_size, effect_size_kind="cohen_dz", better="not tested",
                                      prob_improvement=c.prob_improvement, lower_is_better=info.lower_is_better, note=note)
                    )  # fmt: skip
    for family in ("wilcoxon", "paired_t"):
        rows = [r for r in comparisons if r.test.startswith(family)]
        for row, adjusted in zip(rows, stats.holm([r.p_value for r in rows]), strict=True):
            row.p_adjusted = adjusted
            row.better = stats.verdict(row.diff, adjusted, row.lower_is_better)
    return summaries, comparisons, _rankings(spec, summaries)


def _rankings(spec: CampaignSpec, summaries: list[SummaryRow]) -> list[RankingRow]:
    means: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (metric, task) -> activation -> mean
    for s in summaries:
        means[(s.metric, s.task)][s.activation] = s.mean
    tasks = [t.name for t in spec.tasks]
    rankings = []
    tables: dict[str, dict[str, dict[str, float]]] = {
        "primary": {t: means.get((stats.primary_metric(objective_of(spec, t)), t), {}) for t in tasks}
    }
    for metric in stats.METRICS:
        table = {t: means.get((metric, t), {}) for t in tasks}
        if all(table.values()):
            tables[metric] = table
    for metric, table in tables.items():
        table = {t: v for t, v in table.items() if v}
        if not table:
            continue
        ranks = stats.average_ranks(table, lower_is_better=True)
        test = stats.friedman(table, lower_is_better=True)
        for activation, rank in sorted(ranks.items(), key=lambda item: item[1]):
            rankings.append(
                RankingRow(metric=metric, activation=activation, mean_rank=rank, n_tasks=len(table), friedman_statistic=test.statistic,
                           friedman_p=test.p_value, critical_difference=test.critical_difference, note=test.note)
            )  # fmt: skip
    return rankings


def aggregate(
    campaign: str,
    settings: Settings | None = None,
    *,
    seed: int = 0,
    resamples: int = stats.RESAMPLES,
    report: bool = True,
    on_run: Callable[[int, int], None] | None = None,
) -> AggregateResult:
    """Read the campaign from MLflow, write its evidence to the results database, and (with
    ``report``) write the report and log it to the campaign's run in MLflow."""
    import bru_core

    settings = settings or get_settings()
    with Tracker(settings) as tracker:
        spec = parse_spec(tracker.campaign_spec(campaign), f"campaign {campaign}")
        runs = collect(tracker, spec, on_run)
        if not runs:
            raise BruError(
                f"campaign {campaign!r} has no finished repeat runs yet: run bru search (with repeats) first"
            )
        evaluations, targets = evaluate_runs(spec, runs)
        summaries, comparisons, rankings = compute(spec, evaluations, seed, resamples)
        tasks = [
            Task(task=t.name, dataset=t.dataset, model=t.model, objective=objective_of(spec, t.name), epochs=t.epochs,
                 primary_metric=stats.primary_metric(objective_of(spec, t.name)),
                 target_metric="val_error" if objective_of(spec, t.name) == "classification" else "val_loss", target=targets.get(t.name))
            for t in spec.tasks
        ]  # fmt: skip
        curves = [
            CurvePoint(task=r.task, activation=r.activation, seed=r.seed, metric=metric, epoch=epoch, value=value)
            for r in runs
            for metric, values in r.curves.items()
            for epoch, value in enumerate(values, start=1)
        ]
        row = Campaign(
            name=campaign,
            spec=spec.model_dump(mode="json"),
            protocol="\n".join(spec.protocol()),
            tracking_uri=tracker.uri,
            mlflow_experiment_id=tracker.experiment_id(campaign),
            aggregated_at=now(),
            bru_version=bru_core.__version__,
        )
        with ResultsStore(settings.results) as store:
            store.replace_campaign(
                row, [*tasks, *_studies(tracker, spec), *evaluations, *summaries, *comparisons, *rankings, *curves]
            )
        present = {(e.task, e.activation) for e in evaluations}
        missing = [f"{t.name} {a}" for t in spec.tasks for a in spec.labels if (t.name, a) not in present]
        result = AggregateResult(
            campaign, len(evaluations), len({(c.task, c.metric, c.a, c.b) for c in comparisons}),
            sum(c.p_value is not None for c in comparisons), missing,
        )  # fmt: skip
        if report:
            from bru_core.report import write_report

            folder = settings.home_path / "reports" / campaign
            write_report(campaign, folder, settings)
            tracker.log_report(campaign, folder)
            result.report_dir = str(folder)
        return result
