"""Leaderboard statistics against scipy and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from sgid_bench.leaderboard import stats


def test_paired_t_matches_scipy_and_the_textbook_formulas() -> None:
    a = {0: 76.0, 1: 77.5, 2: 78.0, 3: 76.4}
    b = {0: 75.0, 1: 75.5, 2: 76.5, 3: 76.0}
    c = stats.compare(a, b)
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    ref = sps.ttest_rel(x, y)
    d = x - y
    assert c.test == stats.PAIRED
    assert c.n == 4
    assert c.p == pytest.approx(ref.pvalue)
    assert c.statistic == pytest.approx(d.mean() / (d.std(ddof=1) / 2))
    assert c.diff == pytest.approx(d.mean())
    assert c.effect_name == "d_z"
    assert c.effect == pytest.approx(d.mean() / d.std(ddof=1))
    half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert c.ci == pytest.approx((d.mean() - half, d.mean() + half))


def test_pairs_by_seed_not_by_position() -> None:
    a = {2: 78.0, 0: 76.0, 1: 77.5}
    b = {0: 75.0, 1: 75.5, 2: 76.5}
    c = stats.compare(a, b)
    assert c.p == pytest.approx(sps.ttest_rel([76.0, 77.5, 78.0], [75.0, 75.5, 76.5]).pvalue)


def test_welch_when_seeds_do_not_pair() -> None:
    a = {0: 70.0, 1: 72.0, 2: 71.0}
    b = {10: 66.0, 11: 69.5, 12: 64.0, 13: 67.0}
    c = stats.compare(a, b)
    ref = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert c.test == stats.WELCH
    assert c.p == pytest.approx(ref.pvalue)
    assert c.statistic == pytest.approx(ref.statistic)
    assert c.effect_name == "d_av"
    assert c.ci is not None
    assert c.ci[0] < c.diff < c.ci[1]


def test_partly_paired_seeds_use_every_seed_by_welch() -> None:
    # Pairing the 2 shared seeds would drop 3 of the 7 results.
    a, b = {0: 1.0, 1: 2.5, 2: 3.0, 7: 9.0}, {0: 0.5, 1: 1.0, 9: 2.2}
    c = stats.compare(a, b)
    ref = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert c.test == stats.WELCH
    assert c.n == 7
    assert c.p == pytest.approx(ref.pvalue)
    assert c.statistic == pytest.approx(ref.statistic)
    assert "2 shared" in c.note


@pytest.mark.parametrize(("a", "b"), [
    ({0: 70.0}, {0: 60.0, 1: 61.0}),     # one seed: no paired test, no Welch
    ({0: 70.0, 1: 71.0}, {5: 60.0}),     # nothing pairs, one side has one seed
])
def test_too_few_seeds_gives_no_p_value(a: dict[int, float], b: dict[int, float]) -> None:
    c = stats.compare(a, b)
    assert c.reason == stats.TOO_FEW
    assert c.p is None
    assert not c.tested
    assert not c.significant(0.05)


def test_constant_differences_are_reported_not_guessed() -> None:
    # Would make scipy warn about catastrophic cancellation and answer p ~ 0.
    c = stats.compare({0: 61.1, 1: 62.1, 2: 63.1}, {0: 60.0, 1: 61.0, 2: 62.0})
    assert c.reason == stats.ZERO_VARIANCE
    assert c.p is None
    assert c.diff == pytest.approx(1.1)


def test_holm_on_a_hand_worked_example() -> None:
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max(0.06, 0.04).
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([]) == []


def test_apply_holm_adjusts_only_tested_comparisons() -> None:
    tested = [stats.compare({0: 1.0, 1: 2.0, 2: 3.5}, {0: 0.0, 1: 0.5, 2: 1.0}),
              stats.compare({0: 1.0, 1: 2.2, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.1})]
    untested = stats.compare({0: 1.0}, {0: 2.0})
    stats.apply_holm([tested[0], untested, tested[1]])
    expected = stats.holm([tested[0].p, tested[1].p])  # type: ignore[list-item]
    assert [c.p_holm for c in tested] == pytest.approx(expected)
    assert untested.p_holm is None


def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [60.0, 62.0, 61.0, 63.5]
    low, high = sps.t.interval(0.95, 3, loc=np.mean(values), scale=sps.sem(values))
    assert stats.mean_ci(values) == pytest.approx((low, high))
    assert stats.mean_ci([60.0]) is None


def test_friedman_and_average_ranks_match_scipy() -> None:
    # 4 methods x 5 datasets; higher accuracy = better = rank 1.
    scores = np.array([
        [80.0, 70.0, 60.0, 90.0, 50.0],
        [82.0, 71.0, 61.0, 91.0, 52.0],
        [81.0, 73.0, 59.0, 92.0, 51.0],
        [79.0, 69.0, 62.0, 89.0, 53.0],
    ])
    r = stats.rank(scores, ["a", "b", "c", "d"])
    ref = sps.friedmanchisquare(*scores)
    assert r.friedman_stat == pytest.approx(ref.statistic)
    assert r.friedman_p == pytest.approx(ref.pvalue)
    # Per dataset ranks (1 = best): a 3,3,3,3,4; b 1,2,2,2,2; c 2,1,4,1,3; d 4,4,1,4,1.
    assert r.avg_ranks == pytest.approx([3.2, 1.8, 2.2, 2.8])
    # Iman-Davenport (Demsar 2006, eq. 2) by hand, and its F distribution.
    chi2, k, n = ref.statistic, 4, 5
    f = (n - 1) * chi2 / (n * (k - 1) - chi2)
    assert r.iman_davenport_f == pytest.approx(f)
    assert r.iman_davenport_p == pytest.approx(sps.f.sf(f, k - 1, (k - 1) * (n - 1)))
    # Not significant: no post-hoc at all, and the notes say so.
    assert r.friedman_p > 0.05
    assert r.nemenyi_p == {}
    assert r.cd is None
    assert r.wilcoxon_holm_p == {}
    assert any("no post-hoc" in note for note in r.notes)


def test_ties_share_the_average_rank() -> None:
    r = stats.rank(np.array([[1.0, 2.0], [1.0, 3.0], [0.5, 1.0]]), ["a", "b", "c"])
    assert r.avg_ranks == pytest.approx([(1.5 + 2) / 2, (1.5 + 1) / 2, 3.0])


def test_nemenyi_critical_difference_matches_demsar() -> None:
    # Demsar (2006), section 3.2.2: 4 classifiers on 14 data sets, q_0.05 = 2.569, CD = 1.25.
    rng = np.random.default_rng(0)
    # A clear order, so the Friedman test is significant and the post-hoc runs.
    r = stats.rank(rng.normal(size=(4, 14)) + 2.0 * np.arange(4)[:, None], list("abcd"))
    assert r.friedman_p < 0.05
    assert r.cd == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), abs=1e-3)
    assert r.cd == pytest.approx(1.25, abs=0.01)


def test_nemenyi_p_values_are_consistent_with_the_cd() -> None:
    scores = np.array([[3.0] * 8, [2.0] * 8, [1.0] * 8])
    r = stats.rank(scores, ["a", "b", "c"])
    assert r.cd is not None
    for (i, j), p in r.nemenyi_p.items():
        assert (p < 0.05) == (abs(r.avg_ranks[i] - r.avg_ranks[j]) > r.cd)


def test_wilcoxon_holm_runs_only_where_it_can_reach_alpha() -> None:
    assert stats.wilcoxon_min_p(5) == pytest.approx(0.0625)
    assert stats.wilcoxon_min_p(6) < 0.05
    scores = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                       [0.0, 0.5, 2.0, 3.5, 4.0, 4.5, 5.0],
                       [0.9, 2.2, 2.5, 4.1, 4.9, 6.3, 6.5]])
    r = stats.rank(scores, ["a", "b", "c"])
    raw = [sps.wilcoxon(scores[i], scores[j], zero_method="zsplit").pvalue
           for i, j in [(0, 1), (0, 2), (1, 2)]]
    expected = stats.holm(raw)
    assert [r.wilcoxon_holm_p[k] for k in [(0, 1), (0, 2), (1, 2)]] == pytest.approx(expected)


def test_rank_stats_need_three_methods_and_two_datasets() -> None:
    r = stats.rank(np.array([[1.0, 2.0], [2.0, 1.5]]), ["a", "b"])
    assert r.friedman_p is None
    assert r.cd is None
    assert r.avg_ranks == pytest.approx([1.5, 1.5])
    tied = stats.rank(np.ones((3, 4)), ["a", "b", "c"])
    assert tied.friedman_p is None
    assert "tie" in tied.notes[0]


def test_cliques_join_methods_within_the_critical_difference() -> None:
    r = stats.Ranking(["a", "b", "c", "d"], 10, [1.0, 1.5, 3.0, 3.2], cd=1.0)
    assert stats.cliques(r) == [(0, 1), (2, 3)]
    r.cd = 2.1
    assert stats.cliques(r) == [(0, 2), (1, 3)]


def test_post_hoc_runs_only_after_a_significant_friedman_test() -> None:
    # No consistent order over 6 datasets: Friedman p ~ 0.31, no Nemenyi, no Wilcoxon.
    scores = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                       [2.0, 3.0, 4.0, 5.0, 4.0, 5.0],
                       [1.5, 2.5, 3.5, 4.5, 4.5, 6.5]])
    r = stats.rank(scores, ["a", "b", "c"])
    assert r.friedman_p == pytest.approx(sps.friedmanchisquare(*scores).pvalue)
    assert r.friedman_p > 0.05
    assert r.iman_davenport_f is not None
    assert r.nemenyi_p == {}
    assert r.cd is None
    assert r.wilcoxon_holm_p == {}


def test_iman_davenport_is_infinite_when_every_dataset_agrees() -> None:
    r = stats.rank(np.array([[3.0] * 4, [2.0] * 4, [1.0] * 4]), ["a", "b", "c"])
    assert r.iman_davenport_f == math.inf
    assert r.iman_davenport_p == 0.0


def test_wilcoxon_holm_needs_an_adjusted_p_that_can_reach_alpha() -> None:
    # 7 datasets: one exact test can reach 2/128 = 0.016 < 0.05, but with 4 methods the
    # Holm-adjusted smallest p is 6 x 0.016 = 0.094: the column would be all "no".
    assert stats.wilcoxon_holm_can_reach(7, 3, 0.05)
    assert not stats.wilcoxon_holm_can_reach(7, 6, 0.05)
    scores = np.array([[9.0] * 7, [7.0] * 7, [5.0] * 7, [3.0] * 7]) + np.arange(7) * 0.1
    r = stats.rank(scores, list("abcd"))
    assert r.friedman_p < 0.05
    assert r.nemenyi_p
    assert r.wilcoxon_holm_p == {}
    assert any("Wilcoxon-Holm post-hoc skipped" in n and "6 pairs" in n for n in r.notes)
