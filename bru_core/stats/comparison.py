"""One activation against another on one metric, paired by seed: both tests, the means,
the spread of the differences and the effect sizes, with failures as the worst outcome."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bru_core.stats.levels import CONFIDENCE
from bru_core.stats.paired import TestResult, join_notes, paired_t, wilcoxon


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
        note=join_notes(*notes),
    )
