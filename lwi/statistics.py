"""Statistics of an experiment: summaries over seeds and a paired comparison of two strategies.

A paired comparison takes two equally long lists of per-case scores (the same test cases segmented
by the models of strategies A and B, pooled over seeds) and reports:

* the mean difference A - B with its t confidence interval (the effect in the metric's own units);
* Cohen's d_z (mean difference / SD of the differences) with a confidence interval from the
  noncentral t distribution (the exact interval for normally distributed differences);
* the paired t-test and the Wilcoxon signed-rank test (two-sided, :mod:`scipy.stats`);
* how many cases A scored higher, lower or equal.

Pooling over seeds treats every (seed, case) pair as one observation; cases repeat across seeds, so
the p-values are optimistic when the seeds' models agree closely. The report says so.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Sequence

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
