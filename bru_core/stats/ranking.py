"""Across tasks: average ranks, Friedman's test and Nemenyi's critical difference."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bru_core.stats.levels import ALPHA


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
