"""The statistics of a comparison, on numpy and scipy.stats (docs/statistics.md says why each).

Paired by seed: seed s of every activation saw the same initialisation stream and batch
order, so the differences d_s = a_s - b_s are the data. Two tests, each with its own
estimate and interval, so that a verdict's direction always agrees with its test:

* the Wilcoxon signed-rank test with the Hodges-Lehmann estimate (the median of the Walsh
  averages (d_i + d_j) / 2) and the Walsh-average interval that inverts the same test;
* the paired t-test (``scipy.stats.ttest_1samp``) with the mean difference and its
  t-interval.

The signed-rank test is computed here from its exact conditional null distribution (a
small dynamic programme over the doubled mid-ranks) rather than by ``scipy.stats.wilcoxon``,
because scipy switches to the normal approximation as soon as a difference is zero or two
are tied, and because the same code must run vectorised in the power simulations. It
agrees with scipy's exact and permutation p-values (tests/test_stats.py).

A run that diverged is an outcome, not a gap: a value that is not finite is a *failure*,
the worst outcome there is. In the rank test it takes the worst rank (two failures on one
seed are a tie); means, t-tests and intervals of means leave it out and count it.

Power: ``min_adjusted_p`` says before any training whether a family can reach its alpha
at all; ``detectable_shift`` gives the minimum detectable difference at 80% power (in
units of the sd of the differences); ``family_power`` simulates a whole confirmatory
family under Holm's correction, vectorised.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80  # the power a minimum detectable difference is quoted at
TESTS = ("wilcoxon", "t")  # what a spec's compare.test may name
EXACT_MAX_N = 300  # the exact signed-rank distribution up to here; the normal approximation beyond
SIMULATED_MAX_N = 50  # signed-rank power simulated up to here; Noether's approximation beyond
# Below this train loss the error quotient is floored: a float32 cross-entropy of a
# saturated network is mostly rounding there (x_c - logsumexp(x) loses what is below
# one ulp of the logit), and a zero would make the quotient infinite.
TRAIN_LOSS_FLOOR = 1e-6
POWER_SEED = 20_181_127  # the simulations behind power figures are seeded: same input, same figure


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    lower_is_better: bool
    percent: bool  # shown as a percentage
    classification_only: bool = False
    description: str = ""
    validation_based: bool = False  # measured on the split that chose the hyperparameters: exploratory only
    censored: bool = False  # has a ceiling that stands for "never": ranks only, no mean-based test


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("test_error", "test error", True, True, True, "final test error (classifiers)"),
        MetricInfo(
            "test_loss", "test loss", True, False, False,
            "final test loss (the reconstruction loss of the auto-encoder)",
        ),
        MetricInfo(
            "log_error_quotient", "log error quotient", True, False, False,
            f"ln(final test loss / max(final train loss, {TRAIN_LOSS_FLOOR:g})): over-fitting on a log scale",
        ),
        MetricInfo(
            "train_loss_auc", "training-loss AUC", True, False, False,
            "area under the training-loss curve / epochs (learning speed)",
        ),
        MetricInfo(
            "best_val_loss", "best validation loss", True, False, False,
            "lowest validation loss over the epochs", validation_based=True,
        ),
        MetricInfo(
            "epochs_to_target", "epochs to target", True, False, False,
            "first epoch whose validation metric reaches the task target (epochs + 1 if never: censored)",
            validation_based=True, censored=True,
        ),
    )
}  # fmt: skip


def primary_metric(objective: str) -> str:
    """The headline metric of a task: test error for classifiers, test loss otherwise."""
    return "test_error" if objective == "classification" else "test_loss"


def validation_metric(objective: str) -> str:
    """The validation metric that chooses hyperparameters (a study's objective) and defines
    epochs-to-target: validation error for classifiers, validation loss otherwise."""
    return "val_loss" if objective == "reconstruction" else "val_error"


def test_kind(test: str) -> str:
    """The spec's name (compare.test) of a comparison row's test: t or wilcoxon."""
    return "t" if test == "paired_t" else "wilcoxon"


def holm_family(family: str, metric: str, test: str) -> tuple[str, ...]:
    """Which Holm family a comparison row belongs to: every confirmatory row together;
    an exploratory row with the rows of its metric and test."""
    return (family,) if family == "confirmatory" else (family, metric, test_kind(test))


def metrics_for(objective: str) -> list[str]:
    return [m.name for m in METRICS.values() if objective == "classification" or not m.classification_only]


def log_error_quotient(test_loss: float | None, train_loss: float | None) -> float | None:
    """ln(test loss / train loss), the train loss floored at TRAIN_LOSS_FLOOR: the error
    quotient on the scale where it is roughly symmetric (a ratio of 2 and of 1/2 are
    equally far from 1) and never infinite."""
    if test_loss is None or train_loss is None or not (math.isfinite(test_loss) and math.isfinite(train_loss)):
        return None
    if test_loss <= 0:
        return None
    return math.log(test_loss / max(train_loss, TRAIN_LOSS_FLOOR))


# --------------------------------------------------------------------------- one sample


@dataclass(frozen=True)
class Summary:
    n: int  # finite values
    n_failed: int  # values that were not finite (runs that diverged): left out of everything below
    mean: float | None
    sd: float | None  # None for n < 2
    median: float | None
    iqm: float | None
    ci_low: float | None  # 95% t-interval of the mean; None for n < 2
    ci_high: float | None


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """Student's t-interval of the mean: exact for normal data at every n, and close for
    symmetric heavy tails (coverage measured in tests/test_stats.py, docs/statistics.md)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None, None
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * sd / math.sqrt(x.size)
    return mean - half, mean + half


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, sd, median, IQM and the t-interval of the finite values; the rest counted as failed."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("describe: no values")
    finite = x[np.isfinite(x)]
    failed = int(x.size - finite.size)
    if finite.size == 0:
        return Summary(0, failed, None, None, None, None, None, None)
    low, high = t_interval(finite, confidence)
    return Summary(
        n=int(finite.size),
        n_failed=failed,
        mean=float(finite.mean()),
        sd=float(finite.std(ddof=1)) if finite.size > 1 else None,
        median=float(np.median(finite)),
        iqm=iqm(finite),
        ci_low=low,
        ci_high=high,
    )


# --------------------------------------------------------------------------- signed ranks


@functools.lru_cache(maxsize=512)
def _signed_rank_pmf(doubled_ranks: tuple[int, ...]) -> np.ndarray:
    """Null distribution of 2 T+ (T+ the sum of the ranks of the positive differences),
    each sign + or - with probability 1/2, given the doubled mid-ranks: exact with ties."""
    total = sum(doubled_ranks)
    pmf = np.zeros(total + 1)
    pmf[0] = 1.0
    for r in doubled_ranks:
        shifted = np.zeros_like(pmf)
        shifted[r:] = pmf[: total + 1 - r]
        pmf = 0.5 * (pmf + shifted)
    return pmf


def _untied_pmf(n: int) -> np.ndarray:
    return _signed_rank_pmf(tuple(range(2, 2 * n + 1, 2)))


def _lower_critical(n: int, alpha: float) -> int | None:
    """The largest t with 2 P(T+ <= t) <= alpha for n untied differences (None: no t)."""
    cdf = np.cumsum(_untied_pmf(n)[::2])  # doubled ranks are even: T+ = index / 2
    below = np.nonzero(2 * cdf <= alpha * (1 + 1e-12))[0]
    return int(below[-1]) if below.size else None


@dataclass(frozen=True)
class TestResult:
    test: str  # wilcoxon_exact | wilcoxon_asymptotic | paired_t | none
    statistic: float | None  # Wilcoxon: min(T+, T-) as scipy reports it; t: the t statistic
    p_value: float | None  # two-sided; None: not tested (the note says why)
    estimate: float | None  # Hodges-Lehmann for Wilcoxon, the mean difference for t (a - b)
    ci_low: float | None  # the interval that inverts the same test
    ci_high: float | None
    note: str = ""


def _as_outcomes(d: np.ndarray) -> np.ndarray:
    """Differences as outcomes: a failure of one side stays a signed infinity (a finite
    surrogate is built where one is needed); NaN, a failure on both sides, is a tie."""
    return np.where(np.isnan(d), 0.0, d)


def _surrogate(d: np.ndarray) -> tuple[np.ndarray, float]:
    """Failures replaced by +-W, with W so large that any Walsh average holding a failure
    lies beyond every finite one (|x| > D): then order statistics of the Walsh averages
    can be mapped back to +-inf by that bound D."""
    finite = d[np.isfinite(d)]
    bound = float(np.abs(finite).max()) if finite.size else 0.0
    w = 4 * bound + 1
    return np.where(np.isposinf(d), w, np.where(np.isneginf(d), -w, d)), bound


def _walsh(d: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(d.size)
    return np.sort((d[i] + d[j]) / 2)


def _unsurrogate(value: float, bound: float) -> float:
    """A Walsh average of the surrogate back as an outcome: beyond the finite ones, +-inf."""
    return math.copysign(math.inf, value) if abs(value) > bound else value


def hodges_lehmann(differences: Sequence[float]) -> float | None:
    """The median of the Walsh averages: the estimate that goes with the signed-rank test
    (+-inf when failures of one side decide the median; None when the two middle Walsh
    averages are failures of opposite sides)."""
    d = _as_outcomes(np.asarray(differences, dtype=float))
    if d.size == 0:
        return None
    surrogate, bound = _surrogate(d)
    walsh = _walsh(surrogate)
    middle = walsh.size // 2
    centre = [walsh[middle]] if walsh.size % 2 else [walsh[middle - 1], walsh[middle]]
    values = [_unsurrogate(float(v), bound) for v in centre]
    if math.isinf(values[0]) and math.isinf(values[-1]) and values[0] != values[-1]:
        return None
    return float(np.mean(values)) if all(map(math.isfinite, values)) else next(v for v in values if math.isinf(v))


def walsh_interval(differences: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None]:
    """The distribution-free interval of the Hodges-Lehmann estimate (Tukey; Hollander and
    Wolfe ch. 3): Walsh averages t+1 and M-t, t the lower critical value of the exact
    signed-rank distribution, so its coverage is at least ``confidence`` for symmetric
    differences. None with too few differences for that confidence (n <= 5 at 95%)."""
    d = _as_outcomes(np.asarray(differences, dtype=float))
    n = d.size
    if n < 2:
        return None, None
    if n > EXACT_MAX_N:  # the normal approximation of the critical value
        m = n * (n + 1) / 2
        z = stats.norm.ppf(0.5 + confidence / 2)
        t = math.floor(m / 2 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24))
    else:
        found = _lower_critical(n, 1 - confidence)
        if found is None:
            return None, None
        t = found
    surrogate, bound = _surrogate(d)
    walsh = _walsh(surrogate)
    low, high = float(walsh[t]), float(walsh[walsh.size - 1 - t])
    return _unsurrogate(low, bound), _unsurrogate(high, bound)


def wilcoxon(differences: Sequence[float], confidence: float = CONFIDENCE) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of paired differences; zero differences are
    dropped (Wilcoxon's rule, as scipy's default), ties take mid-ranks, and the p-value
    comes from the exact conditional distribution up to EXACT_MAX_N non-zero differences
    (the normal approximation with the tie correction beyond). Infinite differences
    (failures) take the top ranks."""
    d = _as_outcomes(np.asarray(differences, dtype=float))
    estimate = hodges_lehmann(d)
    low, high = walsh_interval(d, confidence)
    nonzero = d[d != 0]
    n = nonzero.size
    if n == 0:
        return TestResult("wilcoxon_exact", 0.0, 1.0, estimate, low, high, "every difference is zero")
    ranks = stats.rankdata(np.abs(nonzero))  # infinities tie at the top
    t_plus = float(ranks[nonzero > 0].sum())
    total = n * (n + 1) / 2
    statistic = min(t_plus, total - t_plus)
    if n <= EXACT_MAX_N:
        pmf = _signed_rank_pmf(tuple(round(2 * float(r)) for r in ranks))
        k = round(2 * t_plus)
        p = 2 * min(pmf[: k + 1].sum(), pmf[k:].sum())
        test = "wilcoxon_exact"
    else:
        _, counts = np.unique(ranks, return_counts=True)
        var = n * (n + 1) * (2 * n + 1) / 24 - (counts**3 - counts).sum() / 48
        z = (t_plus - total / 2) / math.sqrt(var) if var > 0 else 0.0
        p = 2 * stats.norm.sf(abs(z))
        test = "wilcoxon_asymptotic"
    return TestResult(test, statistic, float(min(1.0, p)), estimate, low, high)


def paired_t(differences: Sequence[float], confidence: float = CONFIDENCE) -> TestResult:
    """Paired t-test of the finite differences (failures left out: a mean cannot hold one),
    with the mean difference and its t-interval."""
    d = np.asarray(differences, dtype=float)
    finite = d[np.isfinite(d)]
    left_out = int(d.size - finite.size)
    note = f"{left_out} pair(s) with a failure left out of the t-test" if left_out else ""
    if finite.size < 2:
        return TestResult("paired_t", None, None, float(finite.mean()) if finite.size else None, None, None,
                          _join(note, "fewer than two complete pairs: no t-test"))  # fmt: skip
    mean = float(finite.mean())
    if np.all(finite == finite[0]):
        # sd = 0: t is undefined (scipy would say p = 0 for any constant non-zero difference)
        return TestResult("paired_t", None, None, mean, mean, mean,
                          _join(note, f"all {finite.size} differences equal {finite[0]:.6g}: no variance, no t-test"))  # fmt: skip
    result = stats.ttest_1samp(finite, 0.0)
    interval = result.confidence_interval(confidence)
    return TestResult("paired_t", float(result.statistic), float(result.pvalue), mean,
                      float(interval.low), float(interval.high), note)  # fmt: skip


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# --------------------------------------------------------------------------- paired


@dataclass(frozen=True)
class PairedComparison:
    n: int  # seeds both sides have (failures included)
    n_complete: int  # of which both finite
    n_failed_a: int
    n_failed_b: int
    mean_a: float | None  # over the complete pairs
    mean_b: float | None
    sd_diff: float | None  # sd of the complete pairs' differences
    robust_sd_diff: (
        float | None
    )  # 1.4826 x their median absolute deviation: the sd of normal differences, unmoved by an outlier
    effect_size: float | None  # Cohen's d_z = mean(d) / sd(d) over the complete pairs
    prob_improvement: float | None  # share of seeds where a beats b (ties count half; a failure loses)
    tests: tuple[TestResult, ...]
    note: str


def cohens_dz(diffs: Sequence[float]) -> float | None:
    """mean / sd of the differences; 0 when all are zero, None when undefined (n < 2, or
    a constant non-zero difference)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else None
    return float(d.mean() / sd)


def prob_improvement(a: Sequence[float], b: Sequence[float], lower_is_better: bool) -> float:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    wins = (x < y) if lower_is_better else (x > y)
    return float((wins.sum() + 0.5 * (x == y).sum()) / x.size)


def _worst(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Non-finite values (failures) as the worst outcome: +inf if lower is better, else -inf."""
    return np.where(np.isfinite(values), values, math.inf if lower_is_better else -math.inf)


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b, with a failure on both sides a tie (0) rather than inf - inf."""
    with np.errstate(invalid="ignore"):
        d = a - b
    return np.where(np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b)), 0.0, d)


def compare_paired(
    a: Mapping[int, float],
    b: Mapping[int, float],
    lower_is_better: bool,
    tests: Sequence[str] = ("wilcoxon", "paired_t"),
    confidence: float = CONFIDENCE,
) -> PairedComparison:
    """a against b, paired by seed (the seeds both have; a non-finite value is a failure)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        none = tuple(TestResult("none", None, None, None, None, None) for _ in tests)
        return PairedComparison(0, 0, 0, 0, None, None, None, None, None, None, none, "no seed in common")
    x = _worst(np.array([a[s] for s in seeds], dtype=float), lower_is_better)
    y = _worst(np.array([b[s] for s in seeds], dtype=float), lower_is_better)
    d = paired_differences(x, y)
    complete = np.isfinite(x) & np.isfinite(y)
    dc = d[complete]
    n_failed_a, n_failed_b = int((~np.isfinite(x)).sum()), int((~np.isfinite(y)).sum())
    results = []
    for name in tests:
        if len(seeds) < 2:
            results.append(TestResult("none", None, None, None, None, None, "fewer than two paired seeds: no test"))
        elif name == "wilcoxon":
            results.append(wilcoxon(d, confidence))
        else:  # the complete pairs only: a tie of two failures is no difference of means either
            results.append(paired_t(np.where(complete, d, math.nan), confidence))
    notes = []
    if n_failed_a or n_failed_b:
        notes.append(f"failed (diverged) seeds: {n_failed_a} of a, {n_failed_b} of b, ranked as the worst outcome")
    informative = int(np.count_nonzero(d))
    if len(seeds) >= 2 and informative < 6 and "wilcoxon" in tests:
        notes.append(
            f"with {informative} non-zero paired differences a two-sided Wilcoxon p-value cannot go below "
            f"{min(1.0, 2 / 2**informative):.4f}"
        )
    return PairedComparison(
        n=len(seeds),
        n_complete=int(complete.sum()),
        n_failed_a=n_failed_a,
        n_failed_b=n_failed_b,
        mean_a=float(x[complete].mean()) if complete.any() else None,
        mean_b=float(y[complete].mean()) if complete.any() else None,
        sd_diff=float(dc.std(ddof=1)) if dc.size > 1 else None,
        robust_sd_diff=float(stats.median_abs_deviation(dc, scale="normal")) if dc.size > 1 else None,
        effect_size=cohens_dz(dc),
        prob_improvement=prob_improvement(x, y, lower_is_better),
        tests=tuple(results),
        note=_join(*notes),
    )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values, in the input order. A p-value that is None or
    not finite is "not tested": it stays None and is not counted in the family."""
    indexed = [(p, i) for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(estimate: float | None, p_adjusted: float | None, lower_is_better: bool, alpha: float = ALPHA) -> str:
    """better | worse | no difference | not tested, for a against b; the direction is that
    of the test's own estimate."""
    if p_adjusted is None or estimate is None or math.isnan(estimate):
        return "not tested"
    if p_adjusted > alpha or estimate == 0:
        return "no difference"
    return "better" if (estimate < 0) == lower_is_better else "worse"


# --------------------------------------------------------------------------- power


def min_attainable_p(test: str, n: int) -> float:
    """The smallest two-sided p-value a test can give with n paired seeds: 2 / 2^n for the
    exact signed-rank test (all differences of one sign, no ties), 0 for the t-test."""
    if n < 2:
        return 1.0
    return 0.0 if test == "t" else min(1.0, 2.0 / 2.0**n)


def min_adjusted_p(test: str, n: int, family_size: int) -> float:
    """The smallest Holm-adjusted p any comparison of a family can reach: the smallest p
    times the family size (Holm's first step)."""
    return min(1.0, family_size * min_attainable_p(test, n))


def fewest_seeds(test: str, family_size: int, alpha: float = ALPHA) -> int:
    """The fewest seeds with which a family of this size can reach alpha at all."""
    n = 2
    while min_adjusted_p(test, n, family_size) > alpha:
        n += 1
    return n


_SIMULATIONS = 20_000


@functools.lru_cache(maxsize=256)
def detectable_shift(test: str, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest shift, in units of the sd of the differences, that a two-sided level-
    ``alpha`` test on n normal paired differences detects with probability ``power``
    (math.inf if it cannot reach alpha with n). The t-test's from the non-central t; the
    exact signed-rank test's by a seeded simulation of 20,000 samples up to n = 50 (its
    critical region is exact, so the figure is exact up to simulation error, about
    +-0.01 sd), from the t-test's by Noether's efficiency 3/pi beyond."""
    if n < 2 or min_attainable_p(test, n) > alpha:
        return math.inf
    if test == "t":
        critical = stats.t.ppf(1 - alpha / 2, n - 1)

        def t_power(delta: float) -> float:
            nc = delta * math.sqrt(n)
            wrong_tail = float(stats.nct.cdf(-critical, n - 1, nc))  # negligible; scipy gives nan for some nc
            return float(stats.nct.sf(critical, n - 1, nc)) + (wrong_tail if math.isfinite(wrong_tail) else 0.0)

        high = 1.0
        while t_power(high) < power:  # a bracket where the non-central t is still well computed
            high *= 2
        return float(optimize.brentq(lambda dl: t_power(dl) - power, 0.0, high, xtol=1e-6))
    if n > SIMULATED_MAX_N:  # Noether: the signed-rank test is worth 3/pi of the t-test's seeds
        return detectable_shift("t", n, alpha, power) / math.sqrt(3 / math.pi)
    lower = _lower_critical(n, alpha)
    assert lower is not None
    upper = n * (n + 1) // 2 - lower
    z = np.random.default_rng(POWER_SEED + n).standard_normal((_SIMULATIONS, n))

    def rank_power(delta: float) -> float:
        t_plus = _t_plus(z + delta)
        return float(np.mean((t_plus <= lower) | (t_plus >= upper)))

    high = 1.0
    while rank_power(high) < power:
        high *= 2
    low = 0.0
    while high - low > 1e-3:
        mid = (low + high) / 2
        if rank_power(mid) >= power:
            high = mid
        else:
            low = mid
    return high


def _t_plus(d: np.ndarray) -> np.ndarray:
    """T+ along the last axis of continuous (untied, non-zero) differences."""
    ranks = np.abs(d).argsort(axis=-1).argsort(axis=-1) + 1
    return (ranks * (d > 0)).sum(axis=-1)


def mdd(test: str, n: int, sd: float | None, alpha: float, power: float = POWER) -> float | None:
    """The minimum detectable difference: the smallest true difference the test detects
    with probability ``power`` at ``alpha``, for normal differences with this sd (None
    when the sd is unknown or zero)."""
    if sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    return detectable_shift(test, n, alpha, power) * sd


def seeds_for(test: str, effect_in_sd: float, alpha: float, power: float = POWER, limit: int = 10_000) -> int | None:
    """The fewest seeds that detect a difference of ``effect_in_sd`` sds with this power at
    alpha (None: more than ``limit``)."""
    if effect_in_sd <= 0:
        return None

    def enough(n: int) -> bool:
        return detectable_shift(test, n, alpha, power) <= effect_in_sd

    high = 2
    while not enough(high):
        if high >= limit:
            return None
        high = min(limit, high * 2)
    low = high // 2
    while high - low > 1:  # the shift falls as n grows: the smallest n that is enough
        mid = (low + high) // 2
        if enough(mid):
            high = mid
        else:
            low = mid
    return high


@dataclass(frozen=True)
class FamilyPower:
    average: float  # expected share of the family's comparisons detected in the right direction
    any: float  # probability that at least one is detected
    all: float  # probability that every one is
    simulations: int


def family_power(
    test: str,
    seeds: int,
    tasks: int,
    candidates: int,
    references: int,
    effect_dz: float = 1.0,
    alpha: float = ALPHA,
    simulations: int = 4000,
    seed: int = POWER_SEED,
) -> FamilyPower:
    """Power of a confirmatory family under Holm's correction, simulated (vectorised): per
    task and seed, every activation gets independent normal noise of variance 1/2 (so a
    paired difference has sd 1 and comparisons that share an activation are correlated, as
    in a real campaign), and every candidate is better than every reference by effect_dz.
    The faithful check, through the aggregation code itself, is ``bru bench stats``."""
    m = tasks * candidates * references
    if m == 0:
        return FamilyPower(0.0, 0.0, 0.0, simulations)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((simulations, tasks, candidates + references, seeds)) * math.sqrt(0.5)
    noise[:, :, :candidates] -= effect_dz
    cand, ref = noise[:, :, :candidates], noise[:, :, candidates:]
    d = (cand[:, :, :, None, :] - ref[:, :, None, :, :]).reshape(simulations, m, seeds)
    p, negative = _p_values(test, d)
    detected = holm_reject(p, alpha) & negative
    return FamilyPower(
        float(detected.mean()), float(detected.any(axis=1).mean()), float(detected.all(axis=1).mean()), simulations
    )


def _p_values(test: str, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p-values along the last axis (continuous data: no ties, no zeros), and
    whether each test's own estimate is negative (t: the mean; signed ranks: T+ below
    its centre, which is where the Hodges-Lehmann estimate is negative)."""
    n = d.shape[-1]
    if test == "t":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return stats.ttest_1samp(d, 0.0, axis=-1).pvalue, d.mean(axis=-1) < 0
    cdf = np.cumsum(_untied_pmf(n)[::2])
    t_plus = _t_plus(d)
    total = n * (n + 1) // 2
    t = np.minimum(t_plus, total - t_plus)
    return np.minimum(1.0, 2 * cdf[t]), 2 * t_plus < total


def holm_reject(p: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Holm's rejections along the last axis, vectorised (same decisions as holm() <= alpha)."""
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ordered = np.take_along_axis(p, order, axis=-1)
    passes = ordered <= alpha / (m - np.arange(m))
    steps = np.cumprod(passes, axis=-1).astype(bool)  # step-down: stop at the first failure
    reject = np.zeros_like(steps)
    np.put_along_axis(reject, order, steps, axis=-1)
    return reject


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
    """The first epoch (1-based) whose value reaches ``target``; len(curve) + 1 if none
    (a censored value: "not within the run")."""
    for epoch, value in enumerate(curve, start=1):
        if (value <= target) if lower_is_better else (value >= target):
            return epoch
    return len(curve) + 1
