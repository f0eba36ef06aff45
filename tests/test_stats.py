"""Tests of bru_core.stats: against scipy, against worked examples with published answers,
and a coverage simulation of the bootstrap confidence interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bru_core import stats as S

# --------------------------------------------------------------------------- Wilcoxon

_rng = np.random.default_rng(12345)

WILCOXON_SAMPLES = {
    # name: (differences, test name the module must report)
    "n5_no_ties": ([0.3, -1.1, 2.4, 0.7, 1.9], "wilcoxon_exact"),
    "n8_no_ties": ([1.5, -0.2, 3.1, 0.45, -0.9, 2.2, 0.05, 1.7], "wilcoxon_exact"),
    "n8_ties": ([1.0, -1.0, 2.0, 2.0, 3.0, -0.5, 0.5, 4.0], "wilcoxon_permutation"),
    "n8_zeros": ([0.0, 1.2, -0.4, 2.5, 0.0, 3.3, 0.8, -0.1], "wilcoxon_permutation"),
    "n13_ties": ([1, 2, 2, 3, -1, 4, 5, 5, -6, 7, 8, 9, 9], "wilcoxon_permutation"),
    "n14_ties": ([1, 2, 2, 3, -1, 4, 5, 5, -6, 7, 8, 9, 9, 10], "wilcoxon_asymptotic"),
    "n20_no_ties": (list(_rng.normal(0.4, 1.0, 20)), "wilcoxon_exact"),
    "n20_ties": (list(np.round(_rng.normal(0.5, 1.0, 20), 1)), None),  # ties almost surely
    "n20_zeros": ([0.0, 0.0, *_rng.normal(0.3, 1.0, 18)], "wilcoxon_asymptotic"),
    "n50_no_ties": (list(_rng.normal(0.2, 1.0, 50)), "wilcoxon_exact"),
    "n60_no_ties": (list(_rng.normal(0.2, 1.0, 60)), "wilcoxon_asymptotic"),
    "n60_ties": (list(np.round(_rng.normal(0.2, 1.0, 60))), "wilcoxon_asymptotic"),
}


@pytest.mark.parametrize("name", sorted(WILCOXON_SAMPLES))
def test_wilcoxon_matches_scipy(name):
    d, expected_test = WILCOXON_SAMPLES[name]
    d = np.asarray(d, dtype=float)
    if expected_test is None:  # a rounded sample: work out whether it really has ties
        nz = d[d != 0]
        tied = np.unique(np.abs(nz)).size < nz.size or nz.size < d.size
        assert tied, "the test sample was meant to have ties"
        expected_test = "wilcoxon_asymptotic"  # ties and n = 20 > 13
    ours = S.wilcoxon(d)
    ref = sps.wilcoxon(d)
    assert ours.test == expected_test
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-12, abs=1e-12)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)


def test_wilcoxon_exact_small_sample_known_value():
    # n = 5, all positive: exact two-sided p = 2 / 2**5 = 0.0625, statistic 0
    r = S.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0])
    assert r.test == "wilcoxon_exact"
    assert r.statistic == 0.0
    assert r.p_value == pytest.approx(0.0625)


def test_wilcoxon_all_zero_differences():
    r = S.wilcoxon([0.0, 0.0, 0.0, 0.0])
    assert r.p_value == 1.0
    assert r.statistic == 0.0


# --------------------------------------------------------------------------- paired t


@pytest.mark.parametrize(
    "a,b",
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.9, 3.4, 4.8, 5.1]),
        (list(np.random.default_rng(1).normal(0, 1, 20)), list(np.random.default_rng(2).normal(0.3, 1, 20))),
        ([0.12, 0.15, 0.11], [0.10, 0.16, 0.09]),
    ],
)
def test_paired_t_matches_scipy(a, b):
    ours = S.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours.test == "paired_t"
    assert ours.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-12)


def test_paired_t_no_variance():
    assert S.paired_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == S.TestResult("paired_t", None, 1.0)
    assert S.paired_t([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).p_value == 0.0


# --------------------------------------------------------------------------- compare_paired


def test_compare_paired_pairs_by_seed_and_matches_hand_computation():
    # dict order differs between a and b; seeds 7 (only a) and 9 (only b) are ignored
    a = {3: 0.30, 1: 0.10, 2: 0.25, 7: 100.0, 4: 0.12, 5: 0.40}
    b = {1: 0.20, 2: 0.20, 9: -100.0, 5: 0.45, 4: 0.18, 3: 0.30}
    r = S.compare_paired(a, b, lower_is_better=True, resamples=2000)
    seeds = [1, 2, 3, 4, 5]
    x = np.array([a[s] for s in seeds])
    y = np.array([b[s] for s in seeds])
    d = x - y  # [-0.1, 0.05, 0, -0.06, -0.05]
    assert r.n == 5
    assert r.mean_a == pytest.approx(x.mean())
    assert r.mean_b == pytest.approx(y.mean())
    assert r.diff == pytest.approx(x.mean() - y.mean())
    assert r.diff == pytest.approx(r.mean_a - r.mean_b)
    assert r.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    # a wins on seeds 1, 4, 5; loses on 2; ties on 3 -> (3 + 0.5) / 5
    assert r.prob_improvement == pytest.approx(0.7)
    # the tests are run on the same paired differences
    assert [t.test for t in r.tests] == ["wilcoxon_permutation", "paired_t"]  # zero difference on seed 3
    assert r.tests[0].p_value == pytest.approx(float(sps.wilcoxon(d).pvalue))
    assert r.tests[1].p_value == pytest.approx(float(sps.ttest_rel(x, y).pvalue))
    assert r.ci_low is not None and r.ci_high is not None
    assert r.ci_low <= r.diff <= r.ci_high
    assert (
        "4 non-zero paired differences" in r.note and "0.1250" in r.note
    )  # the floor counts non-zero differences only


def test_compare_paired_order_of_arguments_flips_sign():
    a = {s: float(v) for s, v in enumerate(np.random.default_rng(3).normal(1.0, 0.2, 8))}
    b = {s: float(v) for s, v in enumerate(np.random.default_rng(4).normal(1.1, 0.2, 8))}
    ab = S.compare_paired(a, b, lower_is_better=True, resamples=2000)
    ba = S.compare_paired(b, a, lower_is_better=True, resamples=2000)
    assert ab.diff == pytest.approx(-ba.diff)
    assert ab.effect_size == pytest.approx(-ba.effect_size)
    assert ab.prob_improvement == pytest.approx(1 - ba.prob_improvement)
    assert ab.tests[0].p_value == pytest.approx(ba.tests[0].p_value)
    assert ab.tests[1].p_value == pytest.approx(ba.tests[1].p_value)
    assert ab.note == ""  # n = 8 >= 6


def test_compare_paired_one_seed():
    r = S.compare_paired({1: 0.5, 2: 0.7}, {1: 0.4, 3: 0.1}, lower_is_better=True)
    assert r.n == 1
    assert r.tests == (S.TestResult("none", None, None),)
    assert "fewer than two" in r.note
    assert r.diff == pytest.approx(0.1)
    assert r.ci_low is None and r.ci_high is None
    assert r.effect_size is None


def test_compare_paired_no_common_seed():
    r = S.compare_paired({1: 0.5}, {2: 0.4}, lower_is_better=True)
    assert r.n == 0
    assert r.tests == (S.TestResult("none", None, None),)
    assert r.note  # says why
    assert "no seed" in r.note
    assert r.mean_a is None and r.mean_b is None and r.diff is None


def test_compare_paired_all_zero_differences():
    a = {1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6, 5: 0.7, 6: 0.8}
    r = S.compare_paired(a, dict(a), lower_is_better=True)
    assert r.diff == 0.0
    assert all(t.p_value == 1.0 for t in r.tests)
    assert r.prob_improvement == 0.5
    assert r.effect_size == 0.0
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)


# --------------------------------------------------------------------------- prob improvement, d_z


def test_prob_improvement_ties_count_half():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [2.0, 2.0, 1.0, 5.0]
    # lower is better: a wins at 0 and 3, ties at 1, loses at 2 -> (2 + 0.5) / 4
    assert S.prob_improvement(a, b, lower_is_better=True) == pytest.approx(0.625)
    # higher is better: a wins at 2, ties at 1 -> (1 + 0.5) / 4
    assert S.prob_improvement(a, b, lower_is_better=False) == pytest.approx(0.375)
    assert S.prob_improvement(a, a, lower_is_better=True) == 0.5


def test_cohens_dz():
    d = [0.1, 0.3, 0.2, 0.6]
    assert S.cohens_dz(d) == pytest.approx(np.mean(d) / np.std(d, ddof=1))
    assert S.cohens_dz([0.5]) is None
    assert S.cohens_dz([0.0, 0.0]) == 0.0
    assert S.cohens_dz([0.2, 0.2]) == math.inf
    assert S.cohens_dz([-0.2, -0.2]) == -math.inf


# --------------------------------------------------------------------------- Holm


def test_holm_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_none_kept_and_not_counted():
    adjusted = S.holm([0.01, None, 0.04, None, 0.03, 0.005])
    assert adjusted[1] is None and adjusted[3] is None
    assert [adjusted[i] for i in (0, 2, 4, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # m = 4, not 6
    assert S.holm([None, None]) == [None, None]
    assert S.holm([]) == []


def test_holm_capped_at_one_and_monotone():
    adjusted = S.holm([0.5, 0.6, 0.9, 0.2])
    assert all(p <= 1.0 for p in adjusted)
    assert adjusted == pytest.approx([1.0, 1.0, 1.0, 0.8])
    assert S.holm([0.03]) == pytest.approx([0.03])  # m = 1: unchanged
    p = list(np.random.default_rng(0).uniform(0, 0.2, 12))
    adj = S.holm(p)
    order = np.argsort(p)
    assert all(adj[i] >= p[i] for i in range(len(p)))
    assert all(adj[order[j]] <= adj[order[j + 1]] for j in range(len(p) - 1))


# --------------------------------------------------------------------------- Nemenyi, Friedman


def test_nemenyi_cd_demsar_example():
    # Demšar (2006), JMLR 7, section 3.2.2: k = 4, N = 14, q_0.05 = 2.569, CD = 1.25
    assert S.nemenyi_cd(4, 14) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), abs=1e-3)
    assert S.nemenyi_cd(4, 14) == pytest.approx(1.2536, abs=1e-3)
    assert round(S.nemenyi_cd(4, 14), 2) == 1.25


@pytest.mark.parametrize("k,q", [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (6, 2.850)])
@pytest.mark.parametrize("n", [5, 14, 30])
def test_nemenyi_q_table(k, q, n):
    # Demšar (2006), Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test
    assert S.nemenyi_cd(k, n) / math.sqrt(k * (k + 1) / (6 * n)) == pytest.approx(q, abs=2e-3)


# Ranks of four classifiers on 14 data sets with the column sums of Demšar's (2006) example
# (C4.5, C4.5+m, C4.5+cf, C4.5+m+cf): 44, 28, 40.5, 27.5, i.e. average ranks 3.143, 2.000,
# 2.893, 1.964. The per-data-set ranks are constructed (one tie, in the last row), not
# Demšar's Table 6; as values with lower-is-better, value = rank.
DEMSAR_RANKS = [
    (1, 4, 2, 3), (4, 2, 3, 1), (4, 1, 3, 2), (4, 1, 3, 2), (3, 1, 4, 2), (4, 1, 2, 3), (4, 1, 3, 2),
    (1, 4, 3, 2), (3, 1, 4, 2), (2, 4, 3, 1), (4, 3, 2, 1), (2, 1, 4, 3), (4, 3, 2, 1), (4, 1, 2.5, 2.5),
]  # fmt: skip
CLASSIFIERS = ["c45", "c45_m", "c45_cf", "c45_m_cf"]


def _demsar_table(sign: float = 1.0, offset: float = 0.0) -> dict[str, dict[str, float]]:
    return {
        f"data{i:02d}": {c: sign * float(r) + offset for c, r in zip(CLASSIFIERS, row, strict=True)}
        for i, row in enumerate(DEMSAR_RANKS)
    }


def test_demsar_average_ranks():
    ranks = S.average_ranks(_demsar_table(), lower_is_better=True)
    assert ranks == pytest.approx({"c45": 3.143, "c45_m": 2.000, "c45_cf": 2.893, "c45_m_cf": 1.964}, abs=5e-4)
    assert sum(ranks.values()) == pytest.approx(10.0)  # k (k + 1) / 2
    # the same table as higher-is-better scores (negated) gives the same ranks
    assert S.average_ranks(_demsar_table(-1.0), lower_is_better=False) == pytest.approx(ranks)


def test_demsar_friedman():
    k, n = 4, 14
    table = _demsar_table(offset=0.5)
    result = S.friedman(table, lower_is_better=True)
    ranks = S.average_ranks(table, lower_is_better=True)
    # Demšar's closed form (no tie correction): chi2_F = 12N/(k(k+1)) [sum R_j^2 - k(k+1)^2/4] = 9.28
    closed = 12 * n / (k * (k + 1)) * (sum(r * r for r in ranks.values()) - k * (k + 1) ** 2 / 4)
    assert closed == pytest.approx(9.28, abs=0.01)
    published = 12 * n / (k * (k + 1)) * (sum(r * r for r in (3.143, 2.000, 2.893, 1.964)) - k * (k + 1) ** 2 / 4)
    assert published == pytest.approx(9.28, abs=0.01)
    # scipy on the same columns
    columns = [[table[t][c] for t in table] for c in sorted(CLASSIFIERS)]
    ref = sps.friedmanchisquare(*columns)
    assert result.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(ref.pvalue), rel=1e-12)
    # scipy corrects for the one tie (a pair in one block): C = 1 - sum(t^3 - t) / (N k (k^2 - 1))
    correction = 1 - (2**3 - 2) / (n * k * (k * k - 1))
    assert result.statistic == pytest.approx(closed / correction, rel=1e-9)
    assert result.statistic == pytest.approx(9.28, abs=0.1)
    assert result.p_value == pytest.approx(float(sps.chi2.sf(result.statistic, k - 1)))
    assert result.p_value < 0.05
    assert result.critical_difference == pytest.approx(S.nemenyi_cd(4, 14))
    assert result.note == ""
    # higher-is-better: negated scores give the same statistic
    flipped = S.friedman(_demsar_table(-1.0), lower_is_better=False)
    assert flipped.statistic == pytest.approx(result.statistic)


def test_friedman_too_few_activations_or_tasks():
    two = {"t1": {"a": 1.0, "b": 2.0}, "t2": {"a": 1.5, "b": 1.0}, "t3": {"a": 0.2, "b": 0.3}}
    r = S.friedman(two, lower_is_better=True)
    assert r.statistic is None and r.p_value is None
    assert "at least 3" in r.note
    one_task = {"t1": {"a": 1.0, "b": 2.0, "c": 3.0}}
    r = S.friedman(one_task, lower_is_better=True)
    assert r.statistic is None and r.p_value is None
    assert r.note
    assert S.friedman({}, lower_is_better=True).statistic is None


def test_average_ranks_ties_direction_and_common_activations():
    table = {
        "t1": {"a": 0.1, "b": 0.2, "c": 0.2, "extra": 0.0},
        "t2": {"a": 0.3, "b": 0.1, "c": 0.2},
    }
    low = S.average_ranks(table, lower_is_better=True)
    assert set(low) == {"a", "b", "c"}  # "extra" is not in every task
    # t1: a=1, b=c=2.5; t2: b=1, c=2, a=3
    assert low == pytest.approx({"a": 2.0, "b": 1.75, "c": 2.25})
    high = S.average_ranks(table, lower_is_better=False)
    # t1: b=c=1.5, a=3; t2: a=1, c=2, b=3
    assert high == pytest.approx({"a": 2.0, "b": 2.25, "c": 1.75})
    assert S.average_ranks({}, lower_is_better=True) == {}
    assert S.average_ranks({"t1": {"a": 1.0}, "t2": {"b": 1.0}}, lower_is_better=True) == {}


# --------------------------------------------------------------------------- bootstrap, describe


def test_bootstrap_two_points():
    # the bootstrap distribution of the mean of [1, 2] is 1, 1.5, 2 with probabilities 1/4, 1/2, 1/4
    low, high = S.bootstrap_ci([1.0, 2.0])
    assert 1.0 <= low <= 1.5 <= high <= 2.0


def test_bootstrap_constant_and_single():
    assert S.bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert S.bootstrap_ci([5.0]) == (None, None)
    assert S.bootstrap_ci([]) == (None, None)


def test_bootstrap_seeded():
    x = list(np.random.default_rng(7).normal(10, 2, 15))
    assert S.bootstrap_ci(x, seed=1, resamples=2000) == S.bootstrap_ci(x, seed=1, resamples=2000)
    a = S.bootstrap_ci(x, seed=1, resamples=2000)
    b = S.bootstrap_ci(x, seed=2, resamples=2000)
    width = a[1] - a[0]
    assert abs(a[0] - b[0]) < 0.1 * width and abs(a[1] - b[1]) < 0.1 * width


def test_bootstrap_close_to_t_interval():
    x = np.random.default_rng(2024).normal(5.0, 1.5, 40)
    low, high = S.bootstrap_ci(x, resamples=10_000)
    t_low, t_high = sps.t.interval(0.95, df=x.size - 1, loc=x.mean(), scale=sps.sem(x))
    t_width = t_high - t_low
    assert (high - low) == pytest.approx(t_width, rel=0.15)
    assert abs(low - t_low) < 0.15 * t_width
    assert abs(high - t_high) < 0.15 * t_width


def test_describe():
    x = [2.0, 9.0, 4.0, 1.0, 7.0, 3.0, 8.0, 5.0, 6.0, 12.0, 0.5]
    s = S.describe(x, resamples=2000)
    arr = np.asarray(x)
    assert s.n == 11
    assert s.mean == pytest.approx(arr.mean())
    assert s.sd == pytest.approx(arr.std(ddof=1))
    assert s.median == pytest.approx(np.median(arr))
    assert s.iqm == pytest.approx(sps.trim_mean(arr, 0.25))
    assert s.ci_low < s.mean < s.ci_high


def test_iqm_by_hand():
    assert S.iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)  # mean(3, 4, 5, 6)
    assert S.iqm([8, 1, 7, 2, 100, 3, -50, 6]) == pytest.approx((2 + 3 + 6 + 7) / 4)  # robust to outliers
    assert S.describe([1, 2, 3, 4, 5, 6, 7, 8], resamples=2000).iqm == pytest.approx(4.5)


def test_describe_single_and_empty():
    s = S.describe([4.0])
    assert (s.n, s.mean, s.sd, s.median, s.iqm, s.ci_low, s.ci_high) == (1, 4.0, None, 4.0, 4.0, None, None)
    with pytest.raises(ValueError):
        S.describe([])


# --------------------------------------------------------------------------- coverage


def _coverage(draw, true_mean: float, reps: int = 400, n: int = 30) -> float:
    rng = np.random.default_rng(20240601)
    hits = 0
    for i in range(reps):
        low, high = S.bootstrap_ci(draw(rng, n), seed=i, resamples=2000)
        hits += low <= true_mean <= high
    return hits / reps


def test_bootstrap_coverage_normal():
    cov = _coverage(lambda rng, n: rng.normal(3.0, 2.0, n), 3.0)
    print(f"\nbootstrap CI coverage, normal(3, 2), n = 30, 400 samples: {cov:.4f}")
    assert 0.90 <= cov <= 0.985


def test_bootstrap_coverage_exponential():
    cov = _coverage(lambda rng, n: rng.exponential(2.0, n), 2.0)
    print(f"\nbootstrap CI coverage, exponential(mean 2), n = 30, 400 samples: {cov:.4f}")
    assert 0.87 <= cov <= 0.985


# --------------------------------------------------------------------------- learning speed


def test_train_loss_auc():
    assert S.train_loss_auc([3.0, 2.0, 1.0]) == pytest.approx(2.0)  # ((3+2)/2 + (2+1)/2) / 2
    assert S.train_loss_auc([0.7]) == pytest.approx(0.7)
    assert S.train_loss_auc([0.4] * 6) == pytest.approx(0.4)
    assert S.train_loss_auc([4.0, 0.0]) == pytest.approx(2.0)
    # learning sooner gives a smaller area, same start and end
    assert S.train_loss_auc([3.0, 1.0, 1.0]) < S.train_loss_auc([3.0, 3.0, 1.0])


def test_epochs_to_target():
    assert S.epochs_to_target([0.9, 0.5, 0.3, 0.1], 0.3) == 3  # reaching means <= for lower-is-better
    assert S.epochs_to_target([0.9, 0.5, 0.2, 0.4], 0.3) == 3  # first epoch, not last
    assert S.epochs_to_target([0.2, 0.5], 0.3) == 1
    assert S.epochs_to_target([0.9, 0.5, 0.4], 0.3) == 4  # never: len + 1
    assert S.epochs_to_target([], 0.3) == 1
    assert S.epochs_to_target([0.5, 0.8, 0.95], 0.8, lower_is_better=False) == 2
    assert S.epochs_to_target([0.5, 0.7], 0.8, lower_is_better=False) == 3


# --------------------------------------------------------------------------- verdict, metrics


@pytest.mark.parametrize(
    "diff,p,lower,expected",
    [
        (-0.1, 0.01, True, "better"),
        (0.1, 0.01, True, "worse"),
        (0.1, 0.01, False, "better"),
        (-0.1, 0.01, False, "worse"),
        (-0.1, 0.2, True, "no difference"),
        (0.1, 0.05, False, "no difference"),  # alpha itself is not significant
        (0.0, 0.01, True, "no difference"),
        (None, 0.01, True, "not tested"),
        (-0.1, None, True, "not tested"),
        (0.1, None, False, "not tested"),
    ],
)
def test_verdict(diff, p, lower, expected):
    assert S.verdict(diff, p, lower) == expected


def test_verdict_custom_alpha():
    assert S.verdict(-0.1, 0.03, True, alpha=0.01) == "no difference"
    assert S.verdict(-0.1, 0.03, True, alpha=0.05) == "better"


def test_metrics():
    assert set(S.METRICS) == {
        "test_error",
        "test_loss",
        "best_val_loss",
        "error_quotient",
        "train_loss_auc",
        "epochs_to_target",
    }
    assert all(m.lower_is_better for m in S.METRICS.values())
    assert all(name == m.name for name, m in S.METRICS.items())
    assert S.METRICS["test_error"].classification_only and S.METRICS["test_error"].percent
    assert "test_error" not in S.metrics_for("reconstruction")
    assert "test_loss" in S.metrics_for("reconstruction")
    assert S.metrics_for("classification") == list(S.METRICS)
    assert S.primary_metric("classification") == "test_error"
    assert S.primary_metric("reconstruction") == "test_loss"
    assert S.primary_metric("regression") == "test_loss"
    for objective in ("classification", "reconstruction"):
        assert S.primary_metric(objective) in S.metrics_for(objective)
