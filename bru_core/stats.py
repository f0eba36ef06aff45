"""The statistics of a comparison, on numpy and scipy.stats.

scipy is used wherever it has the method: the bootstrap (``scipy.stats.bootstrap``, BCa,
seeded), the Wilcoxon signed-rank test (``wilcoxon``: exact null distribution for small n
without ties, exhaustive permutations with ties up to n = 13), the paired t-test
(``ttest_rel``), the Friedman test (``friedmanchisquare``), ranks (``rankdata``), the
studentized range for Nemenyi's critical difference (``studentized_range``) and the
interquartile mean (``trim_mean``). Only Holm's step-down correction, Cohen's d_z, the
probability of improvement and the learning-speed measures are written here, each a few
lines with a test against a worked example.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

RESAMPLES = 10_000
CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    lower_is_better: bool
    percent: bool  # shown as a percentage
    classification_only: bool = False
    description: str = ""


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("test_error", "test error", True, True, True, "final test error (classifiers)"),
        MetricInfo(
            "test_loss",
            "test loss",
            True,
            False,
            False,
            "final test loss (the reconstruction loss of the auto-encoder)",
        ),
        MetricInfo(
            "best_val_loss", "best validation loss", True, False, False, "lowest validation loss over the epochs"
        ),
        MetricInfo(
            "error_quotient", "error quotient", True, False, False, "final test loss / final train loss (over-fitting)"
        ),
        MetricInfo(
            "train_loss_auc",
            "training-loss AUC",
            True,
            False,
            False,
            "area under the training-loss curve / epochs (learning speed)",
        ),
        MetricInfo(
            "epochs_to_target",
            "epochs to target",
            True,
            False,
            False,
            "first epoch whose validation metric reaches the task target (epochs + 1 if never)",
        ),
    )
}


def primary_metric(objective: str) -> str:
    """The headline metric of a task: test error for classifiers, test loss otherwise."""
    return "test_error" if objective == "classification" else "test_loss"


def metrics_for(objective: str) -> list[str]:
    return [m.name for m in METRICS.values() if objective == "classification" or not m.classification_only]


# --------------------------------------------------------------------------- one sample


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float | None  # None for n < 2
    median: float
    iqm: float
    ci_low: float | None  # 95% bootstrap CI of the mean; None for n < 2
    ci_high: float | None


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def bootstrap_ci(
    values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> tuple[float, float] | tuple[None, None]:
    """BCa bootstrap CI of the mean, seeded; (v, v) when every value is v; None for n < 2."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None, None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on very small or near-degenerate samples
        result = stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=resamples,
            confidence_level=confidence,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa undefined: fall back to percentiles
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = stats.bootstrap(
                (x,),
                np.mean,
                n_resamples=resamples,
                confidence_level=confidence,
                method="percentile",
                rng=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def describe(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES) -> Summary:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("describe: no values")
    low, high = bootstrap_ci(x, seed, resamples)
    return Summary(
        n=int(x.size),
        mean=float(x.mean()),
        sd=float(x.std(ddof=1)) if x.size > 1 else None,
        median=float(np.median(x)),
        iqm=iqm(x),
        ci_low=low,
        ci_high=high,
    )


# --------------------------------------------------------------------------- paired


@dataclass(frozen=True)
class TestResult:
    test: str  # wilcoxon_exact | wilcoxon_permutation | wilcoxon_asymptotic | paired_t | none
    statistic: float | None
    p_value: float | None


@dataclass(frozen=True)
class PairedComparison:
    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None  # mean_a - mean_b over the paired seeds
    ci_low: float | None  # bootstrap CI of the mean difference
    ci_high: float | None
    effect_size: float | None  # Cohen's d_z = mean(d) / sd(d)
    prob_improvement: float | None  # share of seeds where a beats b (ties count half)
    tests: tuple[TestResult, ...]
    note: str  # why a test was not run, or how it was run


def cohens_dz(diffs: Sequence[float]) -> float | None:
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean())
    return float(d.mean() / sd)


def prob_improvement(a: Sequence[float], b: Sequence[float], lower_is_better: bool) -> float:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    wins = (x < y) if lower_is_better else (x > y)
    return float((wins.sum() + 0.5 * (x == y).sum()) / x.size)


def wilcoxon(diffs: Sequence[float]) -> TestResult:
    """Wilcoxon signed-rank on paired differences, two-sided: exact for n <= 50 without
    ties or zeros, exhaustive permutations with them (n <= 13), asymptotic beyond."""
    d = np.asarray(diffs, dtype=float)
    nonzero = d[d != 0]
    if nonzero.size == 0:
        return TestResult("wilcoxon_exact", 0.0, 1.0)
    ties = np.unique(np.abs(nonzero)).size < nonzero.size or nonzero.size < d.size
    if not ties and d.size <= 50:
        method = "exact"
    elif ties and d.size <= 13:
        method = "permutation"
    else:
        method = "asymptotic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.wilcoxon(d, method="auto")
    return TestResult(f"wilcoxon_{method}", float(result.statistic), float(result.pvalue))


def paired_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.all(d == d[0]):  # no variance: t undefined; identical pairs mean no evidence
        return TestResult("paired_t", None, 1.0 if d[0] == 0 else 0.0)
    result = stats.ttest_rel(a, b)
    return TestResult("paired_t", float(result.statistic), float(result.pvalue))


def compare_paired(
    a: Mapping[int, float], b: Mapping[int, float], lower_is_better: bool, seed: int = 0, resamples: int = RESAMPLES
) -> PairedComparison:
    """a against b, paired by seed (only seeds both have)."""
    seeds = sorted(set(a) & set(b))
    n = len(seeds)
    if n == 0:
        return PairedComparison(
            0, None, None, None, None, None, None, None, (TestResult("none", None, None),), "no seed in common"
        )
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    d = x - y
    low, high = bootstrap_ci(d, seed, resamples)
    common = dict(
        n=n, mean_a=float(x.mean()), mean_b=float(y.mean()), diff=float(d.mean()), ci_low=low, ci_high=high,
        effect_size=cohens_dz(d), prob_improvement=prob_improvement(x, y, lower_is_better),
    )  # fmt: skip
    if n < 2:
        return PairedComparison(
            **common, tests=(TestResult("none", None, None),), note="fewer than two paired seeds: no test"
        )
    tests = (wilcoxon(d), paired_t(x, y))
    note = ""
    informative = int(np.count_nonzero(d))  # the signed-rank test drops zero differences
    if informative < 6:
        note = f"with {informative} non-zero paired differences a two-sided Wilcoxon p-value cannot go below {min(1.0, 2 / 2**informative):.4f}"
    return PairedComparison(**common, tests=tests, note=note)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None), in the input order."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(diff: float | None, p_adjusted: float | None, lower_is_better: bool, alpha: float = ALPHA) -> str:
    """better | worse | no difference | not tested, for a against b."""
    if p_adjusted is None or diff is None:
        return "not tested"
    if p_adjusted >= alpha or diff == 0:
        return "no difference"
    return "better" if (diff < 0) == lower_is_better else "worse"


# --------------------------------------------------------------------------- across tasks


def average_ranks(table: Mapping[str, Mapping[str, float]], lower_is_better: bool) -> dict[str, float]:
    """Mean rank of each activation over tasks (rank 1 = best; ties share the average rank).
    ``table``: task -> activation -> value; only activations present in every task count."""
    tasks = list(table)
    activations = sorted(set.intersection(*(set(table[t]) for t in tasks))) if tasks else []
    if not activations:
        return {}
    ranks = np.zeros(len(activations))
    for task in tasks:
        values = np.array([table[task][a] for a in activations], dtype=float)
        ranks += stats.rankdata(values if lower_is_better else -values)
    return {a: float(r / len(tasks)) for a, r in zip(activations, ranks, strict=True)}


@dataclass(frozen=True)
class Friedman:
    statistic: float | None
    p_value: float | None
    critical_difference: float | None  # Nemenyi, alpha = 0.05
    note: str


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of average ranks (Demšar 2006):
    q_alpha sqrt(k (k + 1) / (6 n)), q_alpha the studentized range quantile / sqrt(2)."""
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6 * n)))


def friedman(table: Mapping[str, Mapping[str, float]], lower_is_better: bool) -> Friedman:
    """Friedman's test over tasks (blocks) and activations (treatments), with Nemenyi's CD."""
    tasks = list(table)
    activations = sorted(set.intersection(*(set(table[t]) for t in tasks))) if tasks else []
    k, n = len(activations), len(tasks)
    if k < 3 or n < 2:
        return Friedman(
            None,
            None,
            nemenyi_cd(k, n) if k >= 2 and n >= 1 else None,
            f"Friedman needs at least 3 activations and 2 tasks (have {k} and {n})",
        )
    columns = [[table[t][a] if lower_is_better else -table[t][a] for t in tasks] for a in activations]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.friedmanchisquare(*columns)
    return Friedman(float(result.statistic), float(result.pvalue), nemenyi_cd(k, n), "")


# --------------------------------------------------------------------------- learning speed


def train_loss_auc(losses: Sequence[float]) -> float:
    """Area under the per-epoch training-loss curve (trapezoids), divided by the span in
    epochs: the average training loss over training. Lower means learning sooner."""
    y = np.asarray(losses, dtype=float)
    if y.size == 0:
        raise ValueError("train_loss_auc: empty curve")
    if y.size == 1:
        return float(y[0])
    return float(np.trapezoid(y) / (y.size - 1))


def epochs_to_target(curve: Sequence[float], target: float, lower_is_better: bool = True) -> int:
    """The first epoch (1-based) whose value reaches ``target``; len(curve) + 1 if none."""
    for epoch, value in enumerate(curve, start=1):
        if (value <= target) if lower_is_better else (value >= target):
            return epoch
    return len(curve) + 1
