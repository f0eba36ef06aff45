"""Power, before anything trains: whether a family of comparisons can reach its alpha at
all (``min_adjusted_p``), the minimum detectable difference at 80% power in units of the sd
of the differences (``detectable_shift``, ``mdd``), and the power of a whole confirmatory
family under Holm's correction (``family_power``), simulated and vectorised."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from bru_core.stats.levels import ALPHA, POWER
from bru_core.stats.multiple import holm_reject
from bru_core.stats.signed_rank import lower_critical, positive_rank_sum, untied_pmf

SIMULATED_MAX_N = 50  # signed-rank power simulated up to here; Noether's approximation beyond
POWER_SEED = 20_181_127  # the simulations behind power figures are seeded: same input, same figure


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
    lower = lower_critical(n, alpha)
    assert lower is not None
    upper = n * (n + 1) // 2 - lower
    z = np.random.default_rng(POWER_SEED + n).standard_normal((_SIMULATIONS, n))

    def rank_power(delta: float) -> float:
        t_plus = positive_rank_sum(z + delta)
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
    cdf = np.cumsum(untied_pmf(n)[::2])
    t_plus = positive_rank_sum(d)
    total = n * (n + 1) // 2
    t = np.minimum(t_plus, total - t_plus)
    return np.minimum(1.0, 2 * cdf[t]), 2 * t_plus < total
