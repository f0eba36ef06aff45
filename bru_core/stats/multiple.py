"""Multiple comparisons: which Holm family a comparison belongs to, Holm's adjustment
(one family, and vectorised for the power simulations), and the verdict it leads to."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bru_core.stats.levels import ALPHA


def test_kind(test: str) -> str:
    """The spec's name (compare.test) of a comparison row's test: t or wilcoxon."""
    return "t" if test == "paired_t" else "wilcoxon"


def holm_family(family: str, metric: str, test: str) -> tuple[str, ...]:
    """Which Holm family a comparison row belongs to: every confirmatory row together;
    an exploratory row with the rows of its metric and test."""
    return (family,) if family == "confirmatory" else (family, metric, test_kind(test))


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
