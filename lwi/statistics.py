"""Statistics of an experiment: summaries over seeds and paired comparisons of two strategies.

The unit of an experiment is the draw (K training cases, one trained model per strategy): the
question "does A beat B on a random K-case training set?" varies by draw, and a test case appears
once per draw. :func:`draw_level_comparison` is therefore the main comparison: per draw the mean over
test cases of the paired difference A - B, then across draws the mean with a t interval, the paired
t-test and the exact sign-flip test over draws, and a hierarchical bootstrap interval (draws, then
cases within each draw). With n draws the sign-flip test cannot give p below 2 / 2^n
(:func:`draws_needed`); :func:`holm` corrects a family of p-values.

A pooled paired comparison (secondary) takes two equally long lists of per-case scores (the same test cases segmented
by the models of strategies A and B, pooled over seeds) and reports:

* the mean difference A - B with its t confidence interval (the effect in the metric's own units);
* Cohen's d_z (mean difference / SD of the differences) with a confidence interval from the
  noncentral t distribution (the exact interval for normally distributed differences);
* the paired t-test and the Wilcoxon signed-rank test (two-sided, :mod:`scipy.stats`);
* how many cases A scored higher, lower or equal.

Pooling over seeds treats every (seed, case) pair as one observation; cases repeat across seeds, so
the p-values are optimistic when the seeds' models agree closely. The report labels it secondary.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def summary(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """``{"n", "mean", "sd"}`` of the defined values (``None``/NaN skipped); SD with n - 1 (None below 2)."""
    good = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    n = int(good.size)
    return {
        "n": n,
        "mean": float(good.mean()) if n else None,
        "sd": float(good.std(ddof=1)) if n > 1 else None,
    }


def noncentral_t_interval(t: float, df: int, confidence: float = 0.95) -> tuple:
    """The interval of noncentrality parameters whose noncentral t distribution puts the observed
    ``t`` at its upper and lower ``(1 - confidence) / 2`` tails (Steiger & Fouladi's inversion)."""
    from scipy.optimize import brentq
    from scipy.stats import nct

    alpha = (1.0 - confidence) / 2.0

    def cdf(nc: float) -> float:
        value = float(nct.cdf(t, df, nc))
        if math.isnan(value):  # scipy's far tails: the cdf is 0 for nc far above t, 1 far below
            value = 0.0 if nc > t else 1.0
        return value

    def solve(target: float) -> float:
        # cdf falls as nc grows: bracket the root around t, widening until it holds.
        width = 10.0 + abs(t)
        lo, hi = t - width, t + width
        while cdf(lo) < target:
            lo -= width
        while cdf(hi) > target:
            hi += width
        return float(brentq(lambda nc: cdf(nc) - target, lo, hi, xtol=1e-10))

    return solve(1.0 - alpha), solve(alpha)


def paired_comparison(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> Dict[str, Any]:
    """Compare paired scores ``a[i]`` and ``b[i]`` (pairs with a missing value are dropped).

    Returns ``n``, ``mean_a``, ``mean_b``, ``mean_difference`` (A - B), ``sd_difference``,
    ``difference_ci`` (t interval of the mean difference), ``cohens_dz`` and ``dz_ci`` (noncentral
    t), ``t``, ``df``, ``t_p`` (paired t-test), ``wilcoxon_statistic``, ``wilcoxon_p``, ``a_better``,
    ``b_better``, ``ties``. Values that need more pairs or any spread are None.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    from scipy import stats

    pairs = [
        (float(x), float(y))
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]
    n = len(pairs)
    result: Dict[str, Any] = {
        "n": n, "confidence": confidence, "mean_a": None, "mean_b": None, "mean_difference": None,
        "sd_difference": None, "difference_ci": None, "cohens_dz": None, "dz_ci": None, "t": None, "df": None,
        "t_p": None, "wilcoxon_statistic": None, "wilcoxon_p": None, "a_better": 0, "b_better": 0, "ties": 0,
    }
    if n == 0:
        return result
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    d = x - y
    result.update(
        mean_a=float(x.mean()), mean_b=float(y.mean()), mean_difference=float(d.mean()),
        a_better=int((d > 0).sum()), b_better=int((d < 0).sum()), ties=int((d == 0).sum()),
    )
    if n < 2:
        return result
    sd = float(d.std(ddof=1))
    df = n - 1
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * sd / math.sqrt(n)
    result.update(sd_difference=sd, df=df, difference_ci=[float(d.mean()) - half, float(d.mean()) + half])
    if sd > 1e-12 * max(1.0, abs(float(d.mean()))):  # rounding noise is no spread
        t = float(d.mean()) / (sd / math.sqrt(n))
        result.update(t=t, t_p=float(2.0 * stats.t.sf(abs(t), df)), cohens_dz=float(d.mean()) / sd)
        lo, hi = noncentral_t_interval(t, df, confidence)
        result["dz_ci"] = [lo / math.sqrt(n), hi / math.sqrt(n)]
    if np.any(d != 0):
        with warnings.catch_warnings():  # scipy warns about ties/small n and switches method itself
            warnings.simplefilter("ignore")
            w = stats.wilcoxon(x, y, alternative="two-sided")
        result.update(wilcoxon_statistic=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return result


def _defined_pairs(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> List[Tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in zip(a, b)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))
    ]


def sign_flip_p(differences: Sequence[float], *, exact_up_to: int = 16, resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided p of the sign-flip (paired permutation) test of mean(differences) = 0.

    Exact (all 2^n sign patterns) for n <= ``exact_up_to``, Monte Carlo with ``resamples`` patterns
    (seeded) above. The smallest possible exact p is 2 / 2^n (all differences of one sign).
    """
    d = np.asarray(differences, dtype=float)
    n = d.size
    if n == 0:
        raise ValueError("the sign-flip test needs at least one difference")
    observed = abs(float(d.mean()))
    tol = 1e-12 * max(1.0, observed)  # equal means up to rounding count as "as extreme"
    if n <= exact_up_to:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1)
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(resamples, n))
    means = np.abs(signs @ d) / n
    return float((1 + np.sum(means >= observed - tol)) / (resamples + 1))


def draws_needed(alpha: float = 0.05, tests: int = 1) -> int:
    """The fewest draws with which the exact sign-flip test can reach ``p <= alpha / tests`` (the
    strictest Holm threshold of a family of ``tests``): the smallest n with 2 / 2^n <= alpha / tests."""
    n = 1
    while 2.0 / 2**n > alpha / max(1, tests):
        n += 1
    return n


def holm(pvalues: Sequence[Optional[float]]) -> List[Optional[float]]:
    """Holm-Bonferroni adjusted p-values (family = the defined values; ``None`` stays ``None``).

    Sorted ascending p_(1..m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j)).
    Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha.
    """
    defined = [(i, float(p)) for i, p in enumerate(pvalues) if p is not None and math.isfinite(float(p))]
    m = len(defined)
    out: List[Optional[float]] = [None] * len(pvalues)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(defined, key=lambda item: item[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def hierarchical_bootstrap_ci(
    groups: Sequence[Sequence[float]], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Optional[List[float]]:
    """Percentile interval of the mean of group means, resampling groups (draws) with replacement and
    then the values (cases' differences) within each chosen group with replacement. ``None`` below two
    groups. Seeded, so a report is reproducible."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    n = len(groups)
    picks = rng.integers(0, n, size=(resamples, n))
    # Per group, the means of its case-level resamples for every time it is picked.
    sums = np.zeros((resamples, n))
    for g, values in enumerate(groups):
        chosen = picks == g
        count = int(chosen.sum())
        if count:
            idx = rng.integers(0, values.size, size=(count, values.size))
            sums[chosen] = values[idx].mean(axis=1)
    stats_ = sums.mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return [float(np.quantile(stats_, alpha)), float(np.quantile(stats_, 1.0 - alpha))]


def draw_level_comparison(
    draws: Sequence[Tuple[Sequence[Optional[float]], Sequence[Optional[float]]]],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> Dict[str, Any]:
    """Compare strategies A and B with the draw as the unit.

    ``draws``: per draw, the per-case scores ``(a, b)`` of the two strategies' models on the same test
    cases (pairs with a missing value are dropped; a draw without pairs is left out).

    Returns ``n_draws``, ``draw_differences`` (per draw, mean over cases of A - B), ``mean_a`` /
    ``mean_b`` (means over draws of the per-draw means), ``mean_difference``, ``sd_difference``,
    ``difference_ci`` (t interval over draws), ``t``, ``df``, ``t_p`` (paired t-test over draws),
    ``sign_flip_p`` (exact), ``min_p`` (the smallest p the sign-flip test can give with this many
    draws), ``bootstrap_ci`` (hierarchical: draws, then cases), ``a_better_draws``,
    ``b_better_draws``, ``cases`` (pairs in all).
    """
    from scipy import stats

    per_draw = []
    for a, b in draws:
        if len(a) != len(b):
            raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
        pairs = _defined_pairs(a, b)
        if pairs:
            per_draw.append(np.array(pairs))
    n = len(per_draw)
    result: Dict[str, Any] = {
        "n_draws": n, "confidence": confidence, "cases": int(sum(len(p) for p in per_draw)),
        "draw_differences": [float((p[:, 0] - p[:, 1]).mean()) for p in per_draw],
        "mean_a": None, "mean_b": None, "mean_difference": None, "sd_difference": None, "difference_ci": None,
        "t": None, "df": None, "t_p": None, "sign_flip_p": None, "min_p": None, "bootstrap_ci": None,
        "a_better_draws": 0, "b_better_draws": 0,
    }
    if n == 0:
        return result
    d = np.array(result["draw_differences"])
    result.update(
        mean_a=float(np.mean([p[:, 0].mean() for p in per_draw])),
        mean_b=float(np.mean([p[:, 1].mean() for p in per_draw])),
        mean_difference=float(d.mean()), a_better_draws=int((d > 0).sum()), b_better_draws=int((d < 0).sum()),
        sign_flip_p=sign_flip_p(d), min_p=2.0 / 2**n,
    )
    if n < 2:
        return result
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * sd / math.sqrt(n)
    result.update(sd_difference=sd, df=n - 1, difference_ci=[float(d.mean()) - half, float(d.mean()) + half])
    if sd > 1e-12 * max(1.0, abs(float(d.mean()))):
        t = float(d.mean()) / (sd / math.sqrt(n))
        result.update(t=t, t_p=float(2.0 * stats.t.sf(abs(t), n - 1)))
    result["bootstrap_ci"] = hierarchical_bootstrap_ci(
        [p[:, 0] - p[:, 1] for p in per_draw], confidence, resamples, seed
    )
    return result
