"""The report of ``lwi experiment`` from hand-made results files: the main comparison is by draw,
Holm-corrected over the report's family, and says how many draws the data allow to call a difference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lwi.report import write_report
from lwi.statistics import draw_level_comparison, holm, paired_comparison

LABELS = {"1": "anterior", "2": "posterior"}


def _run(strategy: str, k: int, seed: int, scores: np.ndarray) -> dict:
    cases = [
        {"case": f"t{i}", "dice": {"anterior": float(a), "posterior": float(p)},
         "hd95": {"anterior": 2.0, "posterior": 3.0}, "hd95_penalized": []}
        for i, (a, p) in enumerate(scores)
    ]
    return {
        "run": f"k{k}-seed{seed}-{strategy}", "k": k, "seed": seed, "strategy": strategy, "labels": LABELS,
        "cases": cases, "mean_dice": float(scores.mean()), "mean_hd95": 2.5,
        "mean": {"dice": {"anterior": float(scores[:, 0].mean()), "posterior": float(scores[:, 1].mean())},
                 "hd95": {"anterior": 2.0, "posterior": 3.0}},
        "iterations": {"train": 10}, "train_seconds": 1.0,
    }


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    results = []
    for k in (2, 5):
        for seed in (0, 1, 2):
            b = rng.uniform(0.6, 0.9, (8, 2))
            a = b + rng.normal(0.0, 0.03) + rng.normal(0, 0.01, (8, 2))  # the effect varies by draw
            results += [_run("lwi", k, seed, a), _run("scratch", k, seed, b)]
    config = {
        "data": "d", "test": None, "test_cases": [f"t{i}" for i in range(8)], "pool": ["p"] * 10, "options": {},
        "strategies": ["lwi", "scratch"], "k": [2, 5], "seeds": [0, 1, 2],
    }
    (tmp_path / "experiment.json").write_text(json.dumps(config))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    return tmp_path, results


def test_main_comparison_is_by_draw_and_holm_corrected(folder):
    out, results = folder
    rows = write_report(out)["comparisons"]
    assert len(rows) == 2 * 4  # K 2, 5 x (mean Dice, anterior, posterior, HD95)
    by = {(r["strategy"], r["k"], r["seed"]): r for r in results}
    row = next(r for r in rows if r["k"] == 5 and r["primary"])
    draws = []
    for seed in (0, 1, 2):
        a, b = by[("lwi", 5, seed)], by[("scratch", 5, seed)]
        draws.append(([np.mean(list(c["dice"].values())) for c in a["cases"]],
                      [np.mean(list(c["dice"].values())) for c in b["cases"]]))
    expected = draw_level_comparison(draws)
    assert row["n_draws"] == 3 and row["draw_differences"] == pytest.approx(expected["draw_differences"])
    assert row["difference_ci"] == pytest.approx(expected["difference_ci"])
    assert row["pooled"]["n"] == 24
    assert row["pooled"]["t_p"] == pytest.approx(paired_comparison(
        [x for a, _ in draws for x in a], [y for _, b in draws for y in b])["t_p"])
    assert [r["t_p_holm"] for r in rows] == pytest.approx(holm([r["t_p"] for r in rows]))
    assert all(r["family"] == 8 for r in rows)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.index("by draw (main)") < md.index("pooled over draws (secondary)")
    assert "Holm-corrected over this family" in md and "Family: 8 comparisons" in md
    assert "With 3 draw(s) the exact sign-flip test cannot give p below 0.25" in md
    assert "6 draws are needed" in md and "cannot show a difference" in md
