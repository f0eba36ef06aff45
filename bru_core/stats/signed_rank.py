"""The exact null distribution of the Wilcoxon signed-rank statistic, shared by the test
(bru_core.stats.paired) and the power simulations (bru_core.stats.power).

Computed here (a small dynamic programme over the doubled mid-ranks) rather than taken
from ``scipy.stats.wilcoxon``, because scipy switches to the normal approximation as soon
as a difference is zero or two are tied, and because the power simulations need it
vectorised."""

from __future__ import annotations

import functools

import numpy as np

EXACT_MAX_N = 300  # the exact signed-rank distribution up to here; the normal approximation beyond


@functools.lru_cache(maxsize=512)
def signed_rank_pmf(doubled_ranks: tuple[int, ...]) -> np.ndarray:
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


def untied_pmf(n: int) -> np.ndarray:
    return signed_rank_pmf(tuple(range(2, 2 * n + 1, 2)))


def lower_critical(n: int, alpha: float) -> int | None:
    """The largest t with 2 P(T+ <= t) <= alpha for n untied differences (None: no t)."""
    cdf = np.cumsum(untied_pmf(n)[::2])  # doubled ranks are even: T+ = index / 2
    below = np.nonzero(2 * cdf <= alpha * (1 + 1e-12))[0]
    return int(below[-1]) if below.size else None


def positive_rank_sum(d: np.ndarray) -> np.ndarray:
    """T+ along the last axis of continuous (untied, non-zero) differences."""
    ranks = np.abs(d).argsort(axis=-1).argsort(axis=-1) + 1
    return (ranks * (d > 0)).sum(axis=-1)
