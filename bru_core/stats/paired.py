"""The two paired tests, each with its own estimate and the interval that inverts it, so
that a verdict's direction always agrees with its test:

* the Wilcoxon signed-rank test with the Hodges-Lehmann estimate (the median of the Walsh
  averages (d_i + d_j) / 2) and the Walsh-average interval;
* the paired t-test (``scipy.stats.ttest_1samp``) with the mean difference and its
  t-interval.

A failure (a difference that is not finite) takes the worst rank in the signed-rank test
and is left out of the t-test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bru_core.stats.levels import CONFIDENCE
from bru_core.stats.signed_rank import EXACT_MAX_N, lower_critical, signed_rank_pmf


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
        found = lower_critical(n, 1 - confidence)
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
        pmf = signed_rank_pmf(tuple(round(2 * float(r)) for r in ranks))
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
                          join_notes(note, "fewer than two complete pairs: no t-test"))  # fmt: skip
    mean = float(finite.mean())
    if np.all(finite == finite[0]):
        # sd = 0: t is undefined (scipy would say p = 0 for any constant non-zero difference)
        return TestResult("paired_t", None, None, mean, mean, mean,
                          join_notes(note, f"all {finite.size} differences equal {finite[0]:.6g}: no variance, no t-test"))  # fmt: skip
    result = stats.ttest_1samp(finite, 0.0)
    interval = result.confidence_interval(confidence)
    return TestResult("paired_t", float(result.statistic), float(result.pvalue), mean,
                      float(interval.low), float(interval.high), note)  # fmt: skip


def join_notes(*notes: str) -> str:
    return "; ".join(n for n in notes if n)
