"""The statistics of ``lwi experiment`` on fixed numbers: by hand and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lwi.statistics import (
    draw_level_comparison,
    draws_needed,
    hierarchical_bootstrap_ci,
    holm,
    noncentral_t_interval,
    paired_comparison,
    sign_flip_p,
    summary,
)

# Differences A - B = 0.10, 0.20, 0.05, 0.03, 0.04: all positive and distinct (exact Wilcoxon).
A = [0.80, 0.70, 0.90, 0.60, 0.75]
B = [0.70, 0.50, 0.85, 0.57, 0.71]


def test_summary_by_hand():
    s = summary([0.5, None, 0.7, float("nan"), 0.9])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.7)
    assert s["sd"] == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    assert summary([0.4]) == {"n": 1, "mean": pytest.approx(0.4), "sd": None}
    assert summary([None]) == {"n": 0, "mean": None, "sd": None}


def test_paired_comparison_by_hand():
    c = paired_comparison(A, B)
    # mean 0.42 / 5; squared deviations 0.000256 + 0.013456 + 0.001156 + 0.002916 + 0.001936 = 0.01972
    sd = math.sqrt(0.01972 / 4)
    assert c["n"] == 5 and c["df"] == 4
    assert c["mean_a"] == pytest.approx(0.75) and c["mean_b"] == pytest.approx(0.666)
    assert c["mean_difference"] == pytest.approx(0.084)
    assert c["sd_difference"] == pytest.approx(sd) == pytest.approx(0.070214, abs=1e-6)
    assert c["cohens_dz"] == pytest.approx(0.084 / sd) == pytest.approx(1.19634, abs=1e-5)
    assert c["t"] == pytest.approx(0.084 / (sd / math.sqrt(5)))
    half = 2.776445 * sd / math.sqrt(5)  # t(0.975, 4) from a table
    assert c["difference_ci"] == pytest.approx([0.084 - half, 0.084 + half], abs=1e-6)
    assert c["difference_ci"] == pytest.approx([-0.003183, 0.171183], abs=1e-5)
    # Wilcoxon: all five differences positive, so W- = 0 and the exact two-sided p is 2 / 2^5.
    assert c["wilcoxon_statistic"] == 0.0
    assert c["wilcoxon_p"] == pytest.approx(0.0625)
    assert (c["a_better"], c["b_better"], c["ties"]) == (5, 0, 0)


def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 0.9, 30)
    b = a - rng.normal(0.02, 0.05, 30)
    c = paired_comparison(list(a), list(b))
    t = stats.ttest_rel(a, b)
    assert c["t"] == pytest.approx(t.statistic) and c["t_p"] == pytest.approx(t.pvalue)
    w = stats.wilcoxon(a, b)
    assert c["wilcoxon_statistic"] == pytest.approx(w.statistic) and c["wilcoxon_p"] == pytest.approx(w.pvalue)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert c["difference_ci"] == pytest.approx([ci.low, ci.high])


def test_effect_size_interval_inverts_the_noncentral_t():
    c = paired_comparison(A, B)
    n, df = 5, 4
    lo, hi = (v * math.sqrt(n) for v in c["dz_ci"])
    # The interval's ends are the noncentrality parameters that put the observed t at 97.5% / 2.5%.
    assert stats.nct.cdf(c["t"], df, lo) == pytest.approx(0.975, abs=1e-6)
    assert stats.nct.cdf(c["t"], df, hi) == pytest.approx(0.025, abs=1e-6)
    assert c["dz_ci"][0] < c["cohens_dz"] < c["dz_ci"][1]
    # t = 0 gives an interval symmetric about 0.
    lo0, hi0 = noncentral_t_interval(0.0, 9)
    assert lo0 == pytest.approx(-hi0, abs=1e-6) and hi0 > 0


def test_effect_size_interval_close_to_the_normal_approximation_for_many_pairs():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, 400)
    c = paired_comparison(list(d), [0.0] * 400)
    dz, n = c["cohens_dz"], 400
    se = math.sqrt(1 / n + dz**2 / (2 * n))  # the usual large-sample standard error of d_z
    assert c["dz_ci"] == pytest.approx([dz - 1.959964 * se, dz + 1.959964 * se], abs=0.01)


def test_extreme_t_does_not_break_the_interval():
    c = paired_comparison([0.9, 0.91, 0.92, 0.905], [0.1, 0.1, 0.11, 0.1])
    assert c["dz_ci"] is not None and c["dz_ci"][0] > 1 and all(math.isfinite(v) for v in c["dz_ci"])


def test_missing_values_and_degenerate_cases():
    c = paired_comparison([0.5, None, 0.7, 0.9], [0.4, 0.3, None, 0.8])
    assert c["n"] == 2 and c["mean_difference"] == pytest.approx(0.1)
    assert c["sd_difference"] == pytest.approx(0.0, abs=1e-12)
    assert c["t"] is None and c["cohens_dz"] is None  # no spread: no t statistic or standardised effect
    ties = paired_comparison([0.5, 0.6], [0.5, 0.6])
    assert ties["wilcoxon_p"] is None and ties["ties"] == 2
    one = paired_comparison([0.5], [0.4])
    assert one["n"] == 1 and one["difference_ci"] is None and one["a_better"] == 1
    with pytest.raises(ValueError):
        paired_comparison([0.1, 0.2], [0.1])


# -- the draw as the unit ------------------------------------------------------------------------
def _draws(seed: int, n_draws: int, n_cases: int, draw_sd: float, case_sd: float, effect: float = 0.0):
    """Per-case scores of A and B on ``n_draws`` draws: the effect varies by draw (``draw_sd``)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_draws):
        b = rng.uniform(0.6, 0.9, n_cases)
        a = b + effect + rng.normal(0, draw_sd) + rng.normal(0, case_sd, n_cases)
        out.append((list(a), list(b)))
    return out


def test_draw_level_comparison_is_the_paired_t_test_on_draw_means():
    draws = _draws(1, 5, 12, draw_sd=0.02, case_sd=0.03, effect=0.01)
    c = draw_level_comparison(draws)
    a_means = [np.mean(a) for a, _ in draws]
    b_means = [np.mean(b) for _, b in draws]
    t = stats.ttest_rel(a_means, b_means)
    assert c["n_draws"] == 5 and c["df"] == 4 and c["cases"] == 60
    assert c["draw_differences"] == pytest.approx(list(np.subtract(a_means, b_means)))
    assert c["t"] == pytest.approx(t.statistic) and c["t_p"] == pytest.approx(t.pvalue)
    ci = t.confidence_interval(0.95)
    assert c["difference_ci"] == pytest.approx([ci.low, ci.high])
    exact = stats.permutation_test(
        (np.subtract(a_means, b_means),), lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples", n_resamples=np.inf, alternative="two-sided",
    )
    assert c["sign_flip_p"] == pytest.approx(exact.pvalue)
    assert c["min_p"] == pytest.approx(2 / 2**5)


def test_pooled_cases_overstate_what_few_draws_show():
    """The review's demo: the effect varies by draw; pooled (draw, case) pairs give a small p that the
    draws do not support."""
    draws = _draws(7, 3, 10, draw_sd=0.03, case_sd=0.005, effect=0.01)
    pooled = paired_comparison([x for a, _ in draws for x in a], [y for _, b in draws for y in b])
    drawn = draw_level_comparison(draws)
    assert pooled["t_p"] < 0.01
    assert drawn["t_p"] > 0.05 and drawn["sign_flip_p"] >= 0.25
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(drawn["difference_ci"]) > 3 * width(pooled["difference_ci"])


def test_sign_flip_p_by_hand_and_its_floor():
    # All four of one sign: only the all-plus and all-minus patterns are as extreme: 2 / 16.
    assert sign_flip_p([0.1, 0.2, 0.05, 0.3]) == pytest.approx(2 / 16)
    # 0.1, -0.1: |mean| 0 observed, every pattern at least as extreme.
    assert sign_flip_p([0.1, -0.1]) == pytest.approx(1.0)
    assert draws_needed(0.05) == 6  # 2/2^5 = 0.0625 > 0.05, 2/2^6 = 0.031
    assert draws_needed(0.05, tests=12) == 9  # 0.05/12 = 0.0042: 2/2^9 = 0.0039
    big = sign_flip_p(list(np.linspace(0.01, 0.2, 20)))  # Monte Carlo above 16 draws
    assert 0 < big < 1e-4


def test_holm_against_the_definition():
    p = [0.01, 0.04, 0.03, None, 0.005]
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_hierarchical_bootstrap_interval():
    # Without spread inside a draw it is the bootstrap of the draw means: compare with scipy's.
    means = [0.01, -0.02, 0.03, 0.015, 0.0, 0.025, -0.005, 0.02]
    ours = hierarchical_bootstrap_ci([[m] * 6 for m in means], resamples=40_000, seed=3)
    theirs = stats.bootstrap((np.array(means),), np.mean, method="percentile", n_resamples=40_000, random_state=3)
    assert ours == pytest.approx([theirs.confidence_interval.low, theirs.confidence_interval.high], abs=2e-3)
    # Spread inside draws widens it; it is reproducible for a seed; one draw gives no interval.
    noisy = hierarchical_bootstrap_ci([list(m + np.linspace(-0.05, 0.05, 6)) for m in means], seed=3)
    assert noisy[1] - noisy[0] > ours[1] - ours[0]
    assert hierarchical_bootstrap_ci([[0.1, 0.2], [0.0, 0.1]], seed=5) == hierarchical_bootstrap_ci([[0.1, 0.2], [0.0, 0.1]], seed=5)
    assert hierarchical_bootstrap_ci([[0.1, 0.2]]) is None


def test_draw_level_comparison_degenerate():
    one = draw_level_comparison([([0.5, 0.6], [0.4, 0.5])])
    assert one["n_draws"] == 1 and one["mean_difference"] == pytest.approx(0.1)
    assert one["difference_ci"] is None and one["t_p"] is None and one["sign_flip_p"] == pytest.approx(1.0)
    missing = draw_level_comparison([([None, 0.6], [0.4, 0.5]), ([0.3], [None])])
    assert missing["n_draws"] == 1 and missing["cases"] == 1
    assert draw_level_comparison([])["mean_difference"] is None
