"""Significance tests of the leaderboard, on top of :mod:`scipy.stats`.

- Within a dataset: a method against the plain backbone (or the best baseline) over seeds,
  by a paired t-test when both sides have the same two or more seeds (the paper's test),
  else Welch's t-test over all seeds of both sides (a partial overlap never drops seeds);
  effect size (Cohen's d_z when paired, d_av for Welch) and a confidence interval of the
  mean difference. p-values of a family of tests are Holm-corrected (:func:`holm`).
- Across datasets: average ranks, the Friedman test with the Iman-Davenport F, and, only
  after a significant Friedman test, the Nemenyi post-hoc with its critical difference
  (Demsar 2006) and the Wilcoxon signed-rank post-hoc with Holm where the number of
  datasets and pairs lets a Holm-adjusted exact p reach the level at all.

Degenerate inputs (fewer than two seeds, zero variance) give a result with ``reason`` set
and no p-value instead of a guess.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

PAIRED, WELCH = "paired t", "Welch t"
TOO_FEW = "too few seeds"
ZERO_VARIANCE = "zero variance"


@dataclass
class Comparison:
    """Method ``a`` against baseline ``b`` on one dataset (``diff`` = mean a - mean b)."""

    test: str | None
    n: int
    diff: float
    ci: tuple[float, float] | None = None
    effect: float | None = None
    effect_name: str = ""
    statistic: float | None = None
    p: float | None = None
    p_holm: float | None = None
    reason: str | None = None
    note: str = ""

    @property
    def tested(self) -> bool:
        return self.p is not None

    def significant(self, alpha: float) -> bool:
        """Whether the Holm-adjusted (or, before adjustment, raw) p is below ``alpha``."""
        p = self.p_holm if self.p_holm is not None else self.p
        return p is not None and p < alpha


def _spread_is_zero(values: np.ndarray) -> bool:
    # Accuracies are multiples of 100/test-size: a spread at rounding-error scale is zero,
    # and scipy would warn about catastrophic cancellation instead of answering.
    return bool(np.ptp(values) <= 1e-9 * max(1.0, float(np.max(np.abs(values)))))


def compare(a: Mapping[int, float], b: Mapping[int, float], alpha: float = 0.05) -> Comparison:
    """Compare per-seed results ``a`` (method) and ``b`` (baseline), ``{seed: accuracy}``.

    Paired t-test when both sides have the same seeds (at least two); otherwise Welch's
    t-test over every seed of both sides when each has at least two (pairing only the
    shared seeds would drop the others); otherwise no test (``reason`` says why).
    The interval is the ``1 - alpha`` confidence interval of the mean difference."""
    common = sorted(set(a) & set(b))
    diff = float(np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else math.nan
    if set(a) == set(b) and len(common) >= 2:
        return _paired(np.array([a[s] for s in common]), np.array([b[s] for s in common]),
                       alpha)
    if len(a) >= 2 and len(b) >= 2:
        note = (f"seeds pair only partly ({len(common)} shared of {len(a)} vs {len(b)}): "
                "Welch over all seeds" if common else "seeds do not pair")
        return _welch(np.array(list(a.values())), np.array(list(b.values())), alpha, note)
    return Comparison(None, len(common), diff, reason=TOO_FEW,
                      note=f"{len(a)} vs {len(b)} seeds, {len(common)} paired; need 2")


def _paired(x: np.ndarray, y: np.ndarray, alpha: float) -> Comparison:
    d = x - y
    if _spread_is_zero(d):
        return Comparison(PAIRED, len(d), float(d.mean()), reason=ZERO_VARIANCE,
                          note="every seed gives the same difference")
    res = stats.ttest_rel(x, y)
    ci = res.confidence_interval(1 - alpha)
    return Comparison(
        PAIRED, len(d), float(d.mean()), ci=(float(ci.low), float(ci.high)),
        effect=float(d.mean() / d.std(ddof=1)), effect_name="d_z",
        statistic=float(res.statistic), p=float(res.pvalue),
    )


def _welch(x: np.ndarray, y: np.ndarray, alpha: float, note: str) -> Comparison:
    diff = float(x.mean() - y.mean())
    if _spread_is_zero(x) and _spread_is_zero(y):
        return Comparison(WELCH, len(x) + len(y), diff, reason=ZERO_VARIANCE,
                          note="no seed-to-seed variation on either side")
    with warnings.catch_warnings():
        # One constant side (the same accuracy on every seed) is a valid Welch test (the
        # other side carries the variance); scipy still warns of catastrophic cancellation.
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        res = stats.ttest_ind(x, y, equal_var=False)
        ci = res.confidence_interval(1 - alpha)
    # d_av: the difference over the root mean of the two variances (no equal-variance claim).
    sd = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    return Comparison(
        WELCH, len(x) + len(y), diff, ci=(float(ci.low), float(ci.high)),
        effect=diff / sd, effect_name="d_av", statistic=float(res.statistic),
        p=float(res.pvalue), note=note,
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by (m - i) (i from 0), made monotone
    with a running maximum and capped at 1 (scipy has no Holm; statsmodels' multipletests
    is the reference implementation of the same formula)."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = [0.0] * m
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * float(pvalues[idx])))
        adjusted[int(idx)] = running
    return adjusted


def apply_holm(comparisons: Sequence[Comparison]) -> None:
    """Fill ``p_holm`` of the tested comparisons, as one family."""
    tested = [c for c in comparisons if c.tested]
    for c, p in zip(tested, holm([c.p for c in tested]), strict=True):  # type: ignore[misc]
        c.p_holm = p


def mean_ci(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float] | None:
    """The t-based ``1 - alpha`` confidence interval of a mean (None below two values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    half = stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def wilcoxon_min_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon signed-rank test on ``n`` pairs can give
    (all differences of one sign): 2 / 2**n, e.g. 0.0625 for 5 pairs."""
    return 2.0 ** (1 - n)


@dataclass
class Ranking:
    """Rank statistics of k methods (rows) over N datasets (blocks); rank 1 = best."""

    methods: list[str]
    n_blocks: int
    avg_ranks: list[float]
    friedman_stat: float | None = None
    friedman_p: float | None = None
    #: Iman-Davenport's F form of the Friedman statistic (Demsar 2006, eq. 2), its p.
    iman_davenport_f: float | None = None
    iman_davenport_p: float | None = None
    cd: float | None = None
    #: (i, j) -> Nemenyi p-value, and Wilcoxon-Holm p-value where N allows it; both only
    #: after a significant Friedman test.
    nemenyi_p: dict[tuple[int, int], float] = field(default_factory=dict)
    wilcoxon_holm_p: dict[tuple[int, int], float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def friedman_significant(self, alpha: float) -> bool:
        return self.friedman_p is not None and self.friedman_p < alpha


def rank(scores: np.ndarray, methods: Sequence[str], alpha: float = 0.05) -> Ranking:
    """Average ranks, Friedman and post-hoc tests of ``scores`` (k methods x N datasets,
    higher is better). Equal scores share their average rank: round scores to the
    displayed precision first so that ties a reader sees are ties here too."""
    k, n = scores.shape
    ranks = np.vstack([stats.rankdata(-scores[:, j]) for j in range(n)]).T
    out = Ranking(list(methods), n, [float(r) for r in ranks.mean(axis=1)])
    if k < 3 or n < 2:
        out.notes.append(f"Friedman test needs 3+ methods on 2+ datasets (have {k} on {n})")
        return out
    if all(_spread_is_zero(scores[:, j]) for j in range(n)):
        out.notes.append("all methods tie on every dataset: nothing to test")
        return out
    res = stats.friedmanchisquare(*scores)
    out.friedman_stat, out.friedman_p = float(res.statistic), float(res.pvalue)
    out.iman_davenport_f, out.iman_davenport_p = iman_davenport(out.friedman_stat, k, n)
    if n < 10:
        out.notes.append(f"Friedman's chi-square approximation is rough with {n} datasets")
    if not out.friedman_significant(alpha):
        out.notes.append(f"no post-hoc comparisons: the Friedman test is not significant "
                         f"(p = {out.friedman_p:.4g} >= {alpha:g})")
        return out
    _nemenyi(out, k, n, alpha)
    _wilcoxon_holm(out, scores, alpha)
    return out


def iman_davenport(chi2: float, k: int, n: int) -> tuple[float, float]:
    """Iman and Davenport's F_F = (N - 1) chi2 / (N (k - 1) - chi2) with (k - 1) and
    (k - 1)(N - 1) degrees of freedom, and its p (infinite F, p = 0, when every dataset
    ranks the methods the same way)."""
    denom = n * (k - 1) - chi2
    if denom <= 1e-12:
        return math.inf, 0.0
    f = (n - 1) * chi2 / denom
    return float(f), float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def _nemenyi(out: Ranking, k: int, n: int, alpha: float) -> None:
    # Demsar (2006): CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized range
    # quantile over sqrt(2); pairwise p from the same distribution.
    se = math.sqrt(k * (k + 1) / (6 * n))
    out.cd = float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2) * se)
    for i in range(k):
        for j in range(i + 1, k):
            q = abs(out.avg_ranks[i] - out.avg_ranks[j]) / se * math.sqrt(2)
            out.nemenyi_p[(i, j)] = float(stats.studentized_range.sf(q, k, np.inf))


def wilcoxon_holm_can_reach(n: int, pairs: int, alpha: float) -> bool:
    """Whether a Holm-adjusted exact Wilcoxon p over ``pairs`` comparisons on ``n``
    datasets can fall below ``alpha``: the smallest adjusted p is pairs * 2 / 2**n."""
    return pairs * wilcoxon_min_p(n) < alpha


def _wilcoxon_holm(out: Ranking, scores: np.ndarray, alpha: float) -> None:
    k, n = scores.shape
    m = k * (k - 1) // 2
    if not wilcoxon_holm_can_reach(n, m, alpha):
        out.notes.append(
            f"Wilcoxon-Holm post-hoc skipped: with {n} datasets and {m} pairs a "
            f"Holm-adjusted exact Wilcoxon p can never reach {alpha:g} (smallest: "
            f"{m} x 2/2^{n} = {m * wilcoxon_min_p(n):.4g})"
        )
        return
    pairs, pvalues = [], []
    for i in range(k):
        for j in range(i + 1, k):
            d = scores[i] - scores[j]
            # All-zero differences: the test is undefined, the methods are simply equal.
            p = 1.0 if _spread_is_zero(np.append(d, 0.0)) else float(
                stats.wilcoxon(scores[i], scores[j], zero_method="zsplit").pvalue)
            pairs.append((i, j))
            pvalues.append(p)
    out.wilcoxon_holm_p = dict(zip(pairs, holm(pvalues), strict=True))


def cliques(ranking: Ranking) -> list[tuple[int, int]]:
    """Maximal runs of methods (indices into the rank-sorted order) whose average ranks lie
    within the critical difference: the bars of a CD diagram."""
    if ranking.cd is None:
        return []
    order = np.argsort(ranking.avg_ranks, kind="stable")
    r = [ranking.avg_ranks[i] for i in order]
    runs: list[tuple[int, int]] = []
    for start in range(len(r)):
        end = start
        while end + 1 < len(r) and r[end + 1] - r[start] <= ranking.cd:
            end += 1
        if end > start and not any(s <= start and end <= e for s, e in runs):
            runs.append((start, end))
    return runs
