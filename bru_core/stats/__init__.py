"""The statistics of a comparison, on numpy and scipy.stats (docs/statistics.md says why each).

Paired by seed: seed s of every activation saw the same initialisation stream and batch
order, so the differences d_s = a_s - b_s are the data. Two tests, each with its own
estimate and interval (bru_core.stats.paired): the exact Wilcoxon signed-rank test with
the Hodges-Lehmann estimate, and the paired t-test with the mean difference.

A run that diverged is an outcome, not a gap: a value that is not finite is a *failure*,
the worst outcome there is. In the rank test it takes the worst rank (two failures on one
seed are a tie); means, t-tests and intervals of means leave it out and count it.

One module per idea:

* levels: the confidence, alpha and power everything is quoted at;
* metrics: what is measured of a run, a task's headline and validation metric;
* summary: one activation's seeds on one metric;
* signed_rank: the exact null distribution of the signed-rank statistic;
* paired: the two paired tests, their estimates and intervals;
* comparison: one activation against another, with effect sizes;
* multiple: Holm's families and adjustment, and the verdict;
* power: whether a family can reach alpha, minimum detectable differences, family power;
* ranking: average ranks and Friedman's test across tasks.

Everything is imported from here (``from bru_core import stats``).
"""

from bru_core.stats.comparison import (
    PairedComparison,
    cohens_dz,
    compare_paired,
    paired_differences,
    prob_improvement,
)
from bru_core.stats.levels import ALPHA, CONFIDENCE, POWER, TESTS
from bru_core.stats.metrics import (
    METRICS,
    TRAIN_LOSS_FLOOR,
    MetricInfo,
    epochs_to_target,
    log_error_quotient,
    metrics_for,
    primary_metric,
    train_loss_auc,
    validation_metric,
)
from bru_core.stats.multiple import holm, holm_family, holm_reject, test_kind, verdict
from bru_core.stats.paired import TestResult, hodges_lehmann, paired_t, walsh_interval, wilcoxon
from bru_core.stats.power import (
    POWER_SEED,
    SIMULATED_MAX_N,
    FamilyPower,
    detectable_shift,
    family_power,
    fewest_seeds,
    mdd,
    min_adjusted_p,
    min_attainable_p,
    seeds_for,
)
from bru_core.stats.ranking import Friedman, average_ranks, friedman, nemenyi_cd
from bru_core.stats.signed_rank import EXACT_MAX_N
from bru_core.stats.summary import Summary, describe, iqm, t_interval

__all__ = [
    "ALPHA",
    "CONFIDENCE",
    "EXACT_MAX_N",
    "METRICS",
    "POWER",
    "POWER_SEED",
    "SIMULATED_MAX_N",
    "TESTS",
    "TRAIN_LOSS_FLOOR",
    "FamilyPower",
    "Friedman",
    "MetricInfo",
    "PairedComparison",
    "Summary",
    "TestResult",
    "average_ranks",
    "cohens_dz",
    "compare_paired",
    "describe",
    "detectable_shift",
    "epochs_to_target",
    "family_power",
    "fewest_seeds",
    "friedman",
    "hodges_lehmann",
    "holm",
    "holm_family",
    "holm_reject",
    "iqm",
    "log_error_quotient",
    "mdd",
    "metrics_for",
    "min_adjusted_p",
    "min_attainable_p",
    "nemenyi_cd",
    "paired_differences",
    "paired_t",
    "primary_metric",
    "prob_improvement",
    "seeds_for",
    "t_interval",
    "test_kind",
    "train_loss_auc",
    "validation_metric",
    "verdict",
    "walsh_interval",
    "wilcoxon",
]
