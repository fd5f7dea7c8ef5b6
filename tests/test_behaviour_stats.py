"""Statistics behaviour that a one-line bug could change without another test noticing
(issue 13): two paired seeds take the paired test, the confidence level follows alpha,
Welch's effect size and interval, and the boundaries of the degenerate cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as sps

from sgid_bench.leaderboard import stats


def test_two_paired_seeds_use_the_paired_test() -> None:
    a, b = {0: 76.0, 1: 78.0}, {0: 75.0, 1: 75.5}
    c = stats.compare(a, b)
    ref = sps.ttest_rel([76.0, 78.0], [75.0, 75.5])
    assert (c.test, c.n) == (stats.PAIRED, 2)
    assert c.p == pytest.approx(ref.pvalue)
    assert c.statistic == pytest.approx(ref.statistic)
    assert c.reason is None


def test_one_shared_seed_is_too_few_for_any_test() -> None:
    c = stats.compare({0: 76.0}, {0: 75.0})
    assert (c.test, c.p, c.reason, c.n) == (None, None, stats.TOO_FEW, 1)
    assert c.diff == pytest.approx(1.0)
    assert c.note == "1 vs 1 seeds, 1 paired; need 2"


def test_one_seed_on_one_side_is_too_few_for_welch() -> None:
    c = stats.compare({0: 1.0, 1: 2.0, 2: 4.0}, {5: 1.0})
    assert (c.test, c.reason) == (None, stats.TOO_FEW)
    assert c.diff == pytest.approx(7 / 3 - 1)


def test_paired_interval_follows_alpha() -> None:
    a = {0: 76.0, 1: 77.5, 2: 78.0, 3: 76.4}
    b = {0: 75.0, 1: 75.5, 2: 76.5, 3: 76.0}
    d = np.array([a[s] - b[s] for s in a])
    for alpha in (0.05, 0.2):
        c = stats.compare(a, b, alpha=alpha)
        half = sps.t.ppf(1 - alpha / 2, 3) * d.std(ddof=1) / 2
        assert c.ci == pytest.approx((d.mean() - half, d.mean() + half))


def test_welch_effect_size_and_interval() -> None:
    x, y = np.array([70.0, 72.0, 71.0]), np.array([66.0, 69.5, 64.0, 67.0])
    c = stats.compare(dict(enumerate(x)), {10 + i: v for i, v in enumerate(y)}, alpha=0.1)
    ref = sps.ttest_ind(x, y, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert c.n == 7
    assert c.diff == pytest.approx(x.mean() - y.mean())
    assert c.effect == pytest.approx((x.mean() - y.mean())
                                     / math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2))
    assert c.ci == pytest.approx((ci.low, ci.high))
    assert c.note == "seeds do not pair"


def test_welch_note_counts_the_shared_seeds() -> None:
    c = stats.compare({0: 1.0, 1: 2.5, 2: 3.0}, {0: 0.5, 9: 2.2})
    assert c.note == "seeds pair only partly (1 shared of 3 vs 2): Welch over all seeds"


def test_welch_without_spread_on_either_side_is_not_tested() -> None:
    c = stats.compare({0: 70.0, 1: 70.0}, {5: 60.0, 6: 60.0})
    assert (c.test, c.p, c.reason) == (stats.WELCH, None, stats.ZERO_VARIANCE)
    assert c.diff == pytest.approx(10.0)
    one_sided = stats.compare({0: 70.0, 1: 70.5}, {5: 60.0, 6: 61.0, 7: 61.0})
    assert one_sided.tested


def test_zero_spread_is_judged_relative_to_the_values() -> None:
    # Rounding noise at the 1e-12 level is no spread; a real 0.01-point spread is.
    assert stats._spread_is_zero(np.array([76.0, 76.0 + 1e-12]))
    assert not stats._spread_is_zero(np.array([76.0, 76.01]))
    assert not stats._spread_is_zero(np.array([0.0, 1e-6]))


def test_significance_uses_holm_when_adjusted() -> None:
    c = stats.Comparison(stats.PAIRED, 3, 1.0, p=0.01)
    assert c.significant(0.05)
    assert not c.significant(0.01)  # strictly below alpha
    c.p_holm = 0.06
    assert not c.significant(0.05)
    assert not stats.Comparison(None, 1, 1.0).significant(0.05)


def test_holm_caps_at_one_and_stays_monotone() -> None:
    assert stats.holm([0.4, 0.01, 0.3]) == pytest.approx([0.6, 0.03, 0.6])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_mean_ci_follows_alpha_and_needs_two_values() -> None:
    values = [1.0, 2.0, 4.0]
    for alpha in (0.05, 0.3):
        ref = sps.t.interval(1 - alpha, 2, loc=np.mean(values), scale=sps.sem(values))
        assert stats.mean_ci(values, alpha) == pytest.approx(ref)
    assert stats.mean_ci([1.0]) is None


def test_wilcoxon_min_p_and_reachability() -> None:
    assert stats.wilcoxon_min_p(5) == pytest.approx(0.0625)
    assert stats.wilcoxon_min_p(1) == pytest.approx(1.0)
    # 6 datasets, 1 pair: smallest p 2/64 = 0.03125 < 0.05; 3 pairs: 0.094, no.
    assert stats.wilcoxon_holm_can_reach(6, 1, 0.05)
    assert not stats.wilcoxon_holm_can_reach(6, 3, 0.05)
    assert not stats.wilcoxon_holm_can_reach(5, 1, 0.0625)  # strictly below alpha


def test_iman_davenport_matches_demsar() -> None:
    # Demsar (2006) section 3.2.2: k = 4, N = 14, chi2_F = 9.28 -> F_F = 3.69.
    f, p = stats.iman_davenport(9.28, 4, 14)
    assert f == pytest.approx(13 * 9.28 / (14 * 3 - 9.28))
    assert f == pytest.approx(3.69, abs=0.01)
    assert p == pytest.approx(sps.f.sf(f, 3, 39))


def test_ranking_friedman_significance_is_strict() -> None:
    r = stats.Ranking(["a", "b", "c"], 4, [1.0, 2.0, 3.0], friedman_p=0.05)
    assert not r.friedman_significant(0.05)
    assert r.friedman_significant(0.06)
    assert not stats.Ranking(["a"], 1, [1.0]).friedman_significant(0.5)


def test_cliques_on_a_hand_worked_example() -> None:
    r = stats.Ranking(list("abcd"), 10, [1.0, 1.5, 2.6, 3.9], cd=1.2)
    # Sorted ranks 1.0, 1.5, 2.6, 3.9 within 1.2: {1.0, 1.5}, {1.5, 2.6}, {2.6, 3.9 (1.3 no)}
    assert stats.cliques(r) == [(0, 1), (1, 2)]
    r.cd = 1.6
    assert stats.cliques(r) == [(0, 2), (2, 3)]
    r.cd = None
    assert stats.cliques(r) == []


def test_welch_with_one_constant_side_is_a_test_without_warnings() -> None:
    # Seeds that do not pair, one method at the same accuracy on every seed: the other
    # side carries the variance, so the test exists (the suite turns warnings into errors).
    c = stats.compare({0: 50.0, 1: 50.0, 2: 50.0}, {3: 40.0, 4: 45.0, 5: 47.0, 6: 41.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sps.ttest_ind([50.0] * 3, [40.0, 45.0, 47.0, 41.0], equal_var=False)
    assert c.test == "Welch t"
    assert c.p == pytest.approx(expected.pvalue)
