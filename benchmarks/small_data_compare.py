"""The draw-level comparisons of benchmarks/small_data.sh's folders (issue 23, section 5):

* ``validation``: all drawn cases trained (A) vs one in five held out for validation (B), per K;
* ``mirror``: the all-trained models evaluated with mirror test-time augmentation (A) vs without (B).

Per K, per draw the mean over the test cases of A - B (mean Dice of the labels), then across draws
the mean, its t interval and the paired t and sign-flip p (:func:`lwi.statistics.draw_level_comparison`).
Writes benchmarks/results/small-data-<device>.json.

    python benchmarks/small_data_compare.py runs/small-data
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import record


def main() -> int:
    from lwi.experiment_files import read_results
    from lwi.report import case_mean
    from lwi.statistics import draw_level_comparison

    out = Path(sys.argv[1])
    trained = read_results(out / "all-trained" / "results.jsonl")
    held = {(r["strategy"], r["k"], r["seed"]): r for r in read_results(out / "validation-held-out" / "results.jsonl")}
    config = json.loads((out / "all-trained" / "experiment.json").read_text())
    figures: Dict[str, Any] = {
        "data": record.display_path(config["data"]), "test_cases": len(config["test_cases"]),
        "options": config.get("plans") or config.get("options"), "validation": [], "mirror": [],
    }
    for k in sorted({r["k"] for r in trained}):
        runs = sorted((r for r in trained if r["k"] == k), key=lambda r: r["seed"])
        val_draws: List[Any] = []
        mirror_draws: List[Any] = []
        for r in runs:
            plain = {c["case"]: case_mean(c["dice"]) for c in r["cases"]}
            other = held.get((r["strategy"], k, r["seed"]))
            if other is not None:
                b = {c["case"]: case_mean(c["dice"]) for c in other["cases"]}
                names = sorted(set(plain) & set(b))
                val_draws.append(([plain[n] for n in names], [b[n] for n in names]))
            mirror_file = out / "all-trained" / r["model"]
            mirror_file = mirror_file.parent / "evaluation-mirror.json"
            if mirror_file.exists():
                m = {c["case"]: case_mean(c["dice"]) for c in json.loads(mirror_file.read_text())["cases"]}
                names = sorted(set(plain) & set(m))
                mirror_draws.append(([m[n] for n in names], [plain[n] for n in names]))
        for key, draws, what in (
            ("validation", val_draws, "all trained (last weights) - one in five held out (best by validation)"),
            ("mirror", mirror_draws, "mirror TTA on - off (all-trained models)"),
        ):
            if draws:
                figures[key].append({"k": k, "difference": what, **draw_level_comparison(draws)})
                c = figures[key][-1]
                print(f"K={k} {what}: {c['n_draws']} draws, mean {c['mean_a']:.4f} vs {c['mean_b']:.4f}, "
                      f"A - B {c['mean_difference']:+.4f} per draw {[f'{d:+.4f}' for d in c['draw_differences']]}, "
                      f"t p {c['t_p']}, sign-flip p {c['sign_flip_p']}")
    record.write("small-data", "cpu", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
