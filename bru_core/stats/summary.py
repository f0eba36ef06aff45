"""One sample: the summary of an activation's seeds on one metric."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bru_core.stats.levels import CONFIDENCE


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
