"""From MLflow's repeat runs to the evidence: evaluations, summaries, comparisons, rankings.

``aggregate(campaign)`` reads the campaign's spec and every repeat run with an outcome
(finished, or diverged: a failure, the worst outcome) from MLflow, computes the statistics
of bru_core.stats, and replaces the campaign's rows in the results database in one
transaction. Of MLflow it only reads the runs (it logs the report to the campaign's run and
holds that run RUNNING meanwhile); rerunning it gives the same rows.

The comparisons follow the spec's declared design (docs/statistics.md): the confirmatory
family (each task's primary metric, each candidate against each reference, the spec's
test) is Holm-adjusted as one family and carries its minimum detectable difference; every
other row is exploratory, Holm-adjusted within its metric and test.
"""

from __future__ import annotations

import math
import statistics as pystats
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bru_core import stats
from bru_core.errors import BruError
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
from bru_core.spec import CampaignSpec, TaskSpec, parse_spec
from bru_core.tracking import DIVERGED, ROLE, Tracker, final_metrics

CURVES = ("train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error")
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
FINISHED = "finished"


@dataclass
class RepeatRun:
    task: str
    activation: str
    seed: int
    run_id: str
    final: dict[str, float]
    curves: dict[str, list[float]]
    seconds: float | None
    status: str = FINISHED  # finished | diverged
    failure: str | None = None


@dataclass
class AggregateResult:
    campaign: str
    evaluations: int
    comparisons: int
    tests: int  # comparison rows with a p-value
    missing: list[str] = field(default_factory=list)  # task x activation without repeat outcomes
    failed: int = 0  # repeat runs that diverged
    report_dir: str | None = None


def collect(tracker: Tracker, spec: CampaignSpec, on_run: Callable[[int, int], None] | None = None) -> list[RepeatRun]:
    """Every repeat run of the campaign with an outcome, with its final metrics and curves."""
    runs = tracker.repeat_outcomes(spec.name)
    result = []
    for i, run in enumerate(runs):
        tags = run.data.tags
        final = final_metrics(run)
        keys = set(run.data.metrics)
        curves = {key: tracker.metric_history(run.info.run_id, key) for key in CURVES if key in keys}
        diverged = run.info.status == "FAILED" and tags.get("bru.state") == DIVERGED
        result.append(
            RepeatRun(
                tags["bru.task"],
                tags["bru.activation"],
                int(tags["bru.seed"]),
                run.info.run_id,
                final,
                curves,
                run.data.metrics.get("seconds"),
                DIVERGED if diverged else FINISHED,
                tags.get("bru.failure") if diverged else None,
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
    activations of the mean final validation metric of the finished runs."""
    by_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        metric = spec.validation_metric(run.task)
        if run.status == FINISHED and metric in run.final:
            by_task[run.task][run.activation].append(run.final[metric])
    targets: dict[str, float | None] = {}
    for task in (t.name for t in spec.tasks):
        means = [pystats.fmean(v) for v in by_task.get(task, {}).values() if v]
        targets[task] = pystats.median(means) if means else None
    evaluations = []
    for run in runs:
        objective = spec.task(run.task).objective
        epochs = max((len(c) for c in run.curves.values()), default=0)
        common = dict(task=run.task, activation=run.activation, seed=run.seed, mlflow_run_id=run.run_id,
                      epochs=epochs, seconds=run.seconds, status=run.status, failure=run.failure)  # fmt: skip
        if run.status != FINISHED:  # diverged: no metric; the statistics count it as a failure
            evaluations.append(Evaluation(**common))
            continue
        target = targets.get(run.task)
        curve = run.curves.get(spec.validation_metric(run.task), [])
        final = run.final
        evaluations.append(
            Evaluation(
                **common,
                test_error=final.get("test_error") if objective == "classification" else None,
                test_loss=final.get("test_loss"),
                best_val_loss=min(run.curves["val_loss"]) if run.curves.get("val_loss") else None,
                error_quotient=final.get("error_quotient"),
                log_error_quotient=stats.log_error_quotient(final.get("test_loss"), final.get("train_loss")),
                train_loss_auc=stats.train_loss_auc(run.curves["train_loss"]) if run.curves.get("train_loss") else None,
                epochs_to_target=float(stats.epochs_to_target(curve, target)) if curve and target is not None else None,
                val_error=final.get("val_error") if objective == "classification" else None,
                val_loss=final.get("val_loss"),
                train_loss=final.get("train_loss"),
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


def _values(evaluations: list[Evaluation]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(task, activation, metric) -> seed -> value; a diverged run is +inf (every metric
    is lower-is-better): the worst outcome."""
    values: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for e in evaluations:
        for metric in stats.METRICS:
            value = math.inf if e.status != FINISHED else getattr(e, metric)
            if value is not None:
                values[(e.task, e.activation, metric)][e.seed] = value
    return values


def _metric_note(info: stats.MetricInfo, xa: dict[int, float], xb: dict[int, float], epochs: int) -> str:
    notes = []
    if info.validation_based:
        notes.append("measured on the validation split that chose the hyperparameters: exploratory only")
    if info.censored:
        never_a = sum(math.isfinite(v) and v > epochs for v in xa.values())
        never_b = sum(math.isfinite(v) and v > epochs for v in xb.values())
        notes.append(
            f"censored: {never_a} seed(s) of a and {never_b} of b never reached the target (counted as "
            f"{epochs + 1}); compared by ranks only"
        )
    return "; ".join(notes)


def _scale_for(test: str, c: stats.PairedComparison) -> float | None:
    """The sd a row's minimum detectable difference is computed for: the t-test's power
    depends on the sd itself; the signed-rank test's on the bulk of the differences, so it
    gets the robust sd (one wild seed would otherwise claim that nothing under tens of
    points was detectable), or the sd where most differences are tied and the MAD is 0."""
    if test == "wilcoxon" and c.robust_sd_diff:
        return c.robust_sd_diff
    return c.sd_diff


def compute(
    spec: CampaignSpec, evaluations: list[Evaluation]
) -> tuple[list[SummaryRow], list[ComparisonRow], list[RankingRow]]:
    """Summaries, paired comparisons (the declared families, Holm within each) and rankings."""
    values = _values(evaluations)
    labels, pairs = spec.labels, comparison_pairs(spec.labels, spec.references)
    # (task, metric, a, b) of the confirmatory family: each task's primary metric only
    confirmatory = {(t, spec.primary_metric(t), a, b) for t, a, b in spec.confirmatory_pairs()}
    summaries: list[SummaryRow] = []
    compared: list[tuple[ComparisonRow, float | None]] = []
    for task in spec.tasks:
        for metric in stats.metrics_for(task.objective):
            summaries += _summaries(task, metric, labels, values)
            compared += _comparisons(task, metric, pairs, values, confirmatory, spec.compare.test)
    comparisons = _adjust(compared, spec.compare.alpha)
    return summaries, comparisons, _rankings(spec, summaries)


def _summaries(
    task: TaskSpec, metric: str, labels: list[str], values: dict[tuple[str, str, str], dict[int, float]]
) -> list[SummaryRow]:
    """One row per activation with values of ``metric`` on ``task``."""
    info = stats.METRICS[metric]
    rows = []
    for activation in labels:
        sample = values.get((task.name, activation, metric))
        if not sample:
            continue
        s = stats.describe(list(sample.values()))
        censored = sum(math.isfinite(v) and v > task.epochs for v in sample.values()) if info.censored else 0
        rows.append(
            SummaryRow(task=task.name, activation=activation, metric=metric, lower_is_better=info.lower_is_better,
                       n=s.n, n_failed=s.n_failed, n_censored=censored, mean=s.mean, sd=s.sd, median=s.median,
                       iqm=s.iqm, ci_low=s.ci_low, ci_high=s.ci_high)
        )  # fmt: skip
    return rows


def _comparisons(
    task: TaskSpec,
    metric: str,
    pairs: list[tuple[str, str]],
    values: dict[tuple[str, str, str], dict[int, float]],
    confirmatory: set[tuple[str, str, str, str]],
    test: str,
) -> list[tuple[ComparisonRow, float | None]]:
    """Each pair on one task and metric under each test the metric allows, not yet
    adjusted; each row with the sd its minimum detectable difference is for."""
    info = stats.METRICS[metric]
    tests = ("wilcoxon",) if info.censored else ("wilcoxon", "paired_t")
    rows = []
    for a, b in pairs:
        xa, xb = values.get((task.name, a, metric), {}), values.get((task.name, b, metric), {})
        c = stats.compare_paired(xa, xb, info.lower_is_better, tests)
        missing = f"no repeat runs of {a if not xa else b}" if not (xa and xb) else ""
        metric_note = _metric_note(info, xa, xb, task.epochs)
        for kind, t in zip(tests, c.tests, strict=True):
            declared = (task.name, metric, a, b) in confirmatory and stats.test_kind(kind) == test
            diff = None if c.mean_a is None or c.mean_b is None else c.mean_a - c.mean_b
            note = "; ".join(n for n in (missing or c.note, t.note, metric_note) if n)
            row = ComparisonRow(
                task=task.name, metric=metric, a=a, b=b, family=CONFIRMATORY if declared else EXPLORATORY, n=c.n,
                n_failed_a=c.n_failed_a, n_failed_b=c.n_failed_b, mean_a=c.mean_a, mean_b=c.mean_b, diff=diff,
                estimate=t.estimate, ci_low=t.ci_low, ci_high=t.ci_high, test=t.test, statistic=t.statistic,
                p_value=t.p_value, p_adjusted=None, mdd=None, effect_size=c.effect_size, effect_size_kind="cohen_dz",
                better="not tested", prob_improvement=c.prob_improvement, lower_is_better=info.lower_is_better,
                note=note,
            )  # fmt: skip
            rows.append((row, _scale_for(kind, c)))
    return rows


def _adjust(compared: list[tuple[ComparisonRow, float | None]], alpha: float) -> list[ComparisonRow]:
    """Holm within each family, the verdicts, and the confirmatory rows' minimum detectable
    difference; the rows in their order."""
    families: dict[tuple[str, ...], list[tuple[ComparisonRow, float | None]]] = defaultdict(list)
    for row, scale in compared:
        families[stats.holm_family(row.family, row.metric, row.test)].append((row, scale))
    for members in families.values():
        adjusted = stats.holm([row.p_value for row, _ in members])
        size = sum(p is not None for p in adjusted)
        for (row, scale), p in zip(members, adjusted, strict=True):
            row.p_adjusted = p
            row.better = stats.verdict(row.estimate, p, row.lower_is_better, alpha)
            if row.family == CONFIRMATORY and p is not None:
                # The difference a lone real effect needs to be found 80% of the time at
                # Holm's first step, alpha / family size, for normal differences of the observed sd.
                row.mdd = stats.mdd(stats.test_kind(row.test), row.n, scale, alpha / size)
    return [row for row, _ in compared]


def _rankings(spec: CampaignSpec, summaries: list[SummaryRow]) -> list[RankingRow]:
    means: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (metric, task) -> activation -> mean
    for s in summaries:
        if s.mean is not None:
            means[(s.metric, s.task)][s.activation] = s.mean
    tasks = [t.name for t in spec.tasks]
    rankings = []
    tables: dict[str, dict[str, dict[str, float]]] = {
        "primary": {t: means.get((spec.primary_metric(t), t), {}) for t in tasks}
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
    report: bool = True,
    on_run: Callable[[int, int], None] | None = None,
) -> AggregateResult:
    """Read the campaign from MLflow, write its evidence to the results database, and (with
    ``report``) write the report and log it to the campaign's run in MLflow."""
    import bru_core

    settings = settings or get_settings()
    with Tracker(settings) as tracker:
        spec = parse_spec(tracker.campaign_spec(campaign), f"campaign {campaign}", stored=True)
        with tracker.working_on(campaign):  # a stage of the campaign: its run is RUNNING meanwhile
            runs = collect(tracker, spec, on_run)
            if not runs:
                raise BruError(f"campaign {campaign!r} has no repeat runs yet: run bru search (with repeats) first")
            evaluations, targets = evaluate_runs(spec, runs)
            summaries, comparisons, rankings = compute(spec, evaluations)
            tasks = [
                Task(task=t.name, dataset=t.dataset, model=t.model, objective=t.objective, epochs=t.epochs,
                     primary_metric=spec.primary_metric(t.name), target_metric=spec.validation_metric(t.name),
                     target=targets.get(t.name))
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
                sum(c.p_value is not None for c in comparisons), missing, sum(e.status != FINISHED for e in evaluations),
            )  # fmt: skip
            if report:
                from bru_core.report import write_report

                folder = settings.home_path / "reports" / campaign
                write_report(campaign, folder, settings)
                tracker.log_report(campaign, folder)
                result.report_dir = str(folder)
            return result
