"""Benchmark: improving a model with new cases (``lwi train --from``) vs retraining on all of them.

The correction loop on ``hippocampus-dev``: a model trained on K=5 cases (``scratch``, the parent),
then 5 more corrected cases arrive (K=10, nested: the first 5 are the parent's). Two ways on, each at
the same iteration budgets (a share of the parent's own budget, ``--shares``):

- improve: ``lwi.improve.improve`` from the parent on the 10 cases (all its weights, Step 2 only);
- retrain: ``scratch`` on the 10 cases from random weights;

plus retraining on the 10 cases for the parent's full budget (what a new model costs) as the reference.
Every model is scored on the same held-out test cases (never trained on; ``lwi experiment``'s fixed
test draw) with :func:`lwi.evaluation.evaluate_dataset`, which also gives each case's uncertainty
score; the Spearman rank correlation between score and Dice over the test cases is recorded per model.

Written to ``benchmarks/results/improve-cpu.json`` (per draw and arm: test Dice, wall seconds,
Spearman rho). Iteration budgets, not time budgets (the CPU is shared). Models are kept in ``--work``
and reused when the script is run again (``--fresh`` retrains).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/improve_benchmark.py --shares 0.1 0.25

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: The network and schedule of the README's hippocampus experiments (lwi experiment, CPU).
SETTINGS: Dict[str, Any] = dict(
    arch="segresnet", arch_params={"init_filters": 8}, spacing=(1.5, 1.5, 1.5), roi=(24, 32, 24),
    batch_size=2, lr=1e-3, iterations_per_epoch=10, val_fraction=0.0, pretrain_epochs=0,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an MSD-layout folder, e.g. Task04_Hippocampus")
    parser.add_argument("--work", default=str(ROOT / "runs" / "improve-benchmark"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, nargs=2, default=[5, 10], metavar=("PARENT", "NOW"))
    parser.add_argument("--test-cases", type=int, default=10)
    parser.add_argument("--parent-iterations", type=int, default=300)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.25])
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite the tables of docs/correction-loop.md")
    args = parser.parse_args()

    import record
    import torch

    from lwi.data.dataset import load_dataset
    from lwi.data.split import draw_training_cases, hold_out
    from lwi.evaluation import evaluate_dataset
    from lwi.experiment import write_subset
    from lwi.improve import improve
    from lwi.inference import Segmenter
    from lwi.progress import Progress
    from lwi.strategies import train

    torch.set_num_threads(1)
    work = Path(args.work)
    dataset = load_dataset(args.data, require_labels=True)
    names = [c.name for c in dataset.cases]
    test_names = hold_out(names, args.test_cases)
    pool = [n for n in names if n not in test_names]
    test = load_dataset(write_subset(work / "test", dataset, test_names, "test"), require_labels=True)
    per_draw: List[Dict[str, Any]] = []

    def score(model: Path) -> Dict[str, Any]:
        results = evaluate_dataset(Segmenter(model, device="cpu", threads=1), test)
        return {
            "mean_dice": results["mean_dice"],
            "dice": results["mean"]["dice"],
            "mean_uncertainty": results["mean_uncertainty"],
            "spearman_uncertainty_dice": results["uncertainty_dice_spearman"],
            "cases": [{"case": c["case"], "dice": c["dice"], "uncertainty": c["uncertainty"]} for c in results["cases"]],
        }

    def fit(out: Path, function: Any, *inputs: Any, **options: Any) -> Dict[str, Any]:
        """``function(*inputs, out, **options)`` (train or improve) unless ``out`` exists, then its score."""
        seconds = None
        if args.fresh or not out.exists():
            started = time.monotonic()
            function(*inputs, out, device="cpu", progress=Progress("none"), overwrite=True, **SETTINGS, **options)
            seconds = round(time.monotonic() - started, 1)
        figures = score(out)
        figures["train_seconds"] = seconds
        print(f"  {out.name}: test Dice {figures['mean_dice']:.4f}, rho {figures['spearman_uncertainty_dice']}", flush=True)
        return figures

    for seed in args.seeds:
        k0, k1 = args.k
        before = draw_training_cases(pool, k0, seed)
        now = draw_training_cases(pool, k1, seed)
        assert set(before) <= set(now)
        d0 = write_subset(work / f"k{k0}-seed{seed}", dataset, before, f"K={k0}")
        d1 = write_subset(work / f"k{k1}-seed{seed}", dataset, now, f"K={k1}")
        folder = work / f"seed{seed}"
        budget = args.parent_iterations
        epochs = budget // SETTINGS["iterations_per_epoch"]
        print(f"draw {seed}: parent on {before}, then {sorted(set(now) - set(before))} added", flush=True)
        arms: Dict[str, Any] = {}
        parent = folder / "parent.lwi.safetensors"
        arms["parent"] = fit(parent, train, d0, strategy="scratch", seed=seed, epochs=epochs)
        arms["retrain-full"] = fit(folder / "retrain-full.lwi.safetensors", train, d1, strategy="scratch", seed=seed, epochs=epochs)
        for share in args.shares:
            e = max(1, round(share * epochs))
            arms[f"improve-{share:g}"] = fit(folder / f"improve-{share:g}.lwi.safetensors", improve, d1, parent, seed=seed, epochs=e)
            arms[f"retrain-{share:g}"] = fit(folder / f"retrain-{share:g}.lwi.safetensors", train, d1, strategy="scratch", seed=seed, epochs=e)
        per_draw.append({"seed": seed, "parent_cases": before, "added_cases": sorted(set(now) - set(before)), "arms": arms})

    summary: Dict[str, Any] = {}
    for arm in per_draw[0]["arms"]:
        values = [d["arms"][arm]["mean_dice"] for d in per_draw]
        rhos = [d["arms"][arm]["spearman_uncertainty_dice"] for d in per_draw]
        rhos = [r for r in rhos if r is not None]
        summary[arm] = {
            "mean_dice": statistics.mean(values),
            "sd_dice": statistics.stdev(values) if len(values) > 1 else 0.0,
            "mean_spearman": statistics.mean(rhos) if rhos else None,
        }
    for share in args.shares:  # improve - retrain at the same budget, per draw
        diffs = [d["arms"][f"improve-{share:g}"]["mean_dice"] - d["arms"][f"retrain-{share:g}"]["mean_dice"] for d in per_draw]
        summary[f"improve-{share:g}"]["minus_retrain_same_budget"] = diffs
        full = [d["arms"][f"improve-{share:g}"]["mean_dice"] - d["arms"]["retrain-full"]["mean_dice"] for d in per_draw]
        summary[f"improve-{share:g}"]["minus_retrain_full_budget"] = full
    figures = {
        "data": str(args.data), "test_cases": test_names, "k": args.k, "seeds": args.seeds,
        "parent_iterations": args.parent_iterations, "shares": args.shares, "settings": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in SETTINGS.items()},
        "threads": 1, "draws": per_draw, "summary": summary,
    }
    path = record.write("improve", "cpu", figures)
    print(f"Written to {path}")
    if not args.no_doc:
        import render_tables

        render_tables.main([])  # docs/correction-loop.md's tables
    for arm, s in summary.items():
        print(f"{arm:>16}: test Dice {s['mean_dice']:.4f} +- {s['sd_dice']:.4f}; Spearman(uncertainty, Dice) "
              f"{s['mean_spearman'] if s['mean_spearman'] is None else round(s['mean_spearman'], 3)}")
    return 0


def tables(figures: Dict[str, Any], file_name: str) -> Dict[str, str]:
    """The markdown of the two tables (``improve``, ``uncertainty``) that benchmarks/render_tables.py puts
    in docs/correction-loop.md."""
    s, draws = figures["summary"], figures["draws"]
    budget = figures["parent_iterations"]
    seeds = ", ".join(str(d["seed"]) for d in draws)
    rows = ["| arm | iterations (cases) | mean test Dice ± SD | per draw | − retrain, same budget | − retrain, full budget |",
            "| --- | --- | --- | --- | --- | --- |"]

    def per_draw(arm: str) -> str:
        return ", ".join(f"{d['arms'][arm]['mean_dice']:.3f}" for d in draws)

    k0, k1 = figures["k"]
    rows.append(f"| parent (scratch, K={k0}) | {budget} ({k0}) | {s['parent']['mean_dice']:.3f} ± {s['parent']['sd_dice']:.3f} "
                f"| {per_draw('parent')} | | |")
    rows.append(f"| retrain (scratch, K={k1}) | {budget} ({k1}) | {s['retrain-full']['mean_dice']:.3f} ± "
                f"{s['retrain-full']['sd_dice']:.3f} | {per_draw('retrain-full')} | | |")
    for share in figures["shares"]:
        iterations = max(1, round(share * budget / 10)) * 10
        for arm, what in ((f"improve-{share:g}", "improve the parent (--from)"), (f"retrain-{share:g}", "retrain (scratch)")):
            same = full = ""
            if arm.startswith("improve"):
                same = ", ".join(f"{v:+.3f}" for v in s[arm]["minus_retrain_same_budget"])
                full = ", ".join(f"{v:+.3f}" for v in s[arm]["minus_retrain_full_budget"])
            rows.append(f"| {what}, K={k1} | {iterations} ({k1}) | {s[arm]['mean_dice']:.3f} ± {s[arm]['sd_dice']:.3f} "
                        f"| {per_draw(arm)} | {same} | {full} |")
    settings = figures["settings"]
    where = (f"<sub>hippocampus-dev, {len(figures['test_cases'])} held-out test cases (lwi experiment's fixed draw), "
             f"draws (seeds) {seeds}, {settings['arch']} {settings['arch_params']}, ROI {settings['roi']}, spacing "
             f"{settings['spacing']} mm, batch {settings['batch_size']}, lr {settings['lr']}, no validation; iteration "
             f"budgets, one thread per run (OMP_NUM_THREADS=1, nice 10) on the shared 2-core CPU "
             f"(`benchmarks/results/{file_name}`).</sub>")
    improve = "\n".join(rows) + "\n\n" + where + "\n"
    urows = ["| model | Spearman ρ (uncertainty score, case mean Dice) per draw | mean ρ |", "| --- | --- | --- |"]
    for arm in s:
        rhos = [d["arms"][arm]["spearman_uncertainty_dice"] for d in draws]
        shown = ", ".join("n/a" if r is None else f"{r:+.2f}" for r in rhos)
        mean = s[arm]["mean_spearman"]
        urows.append(f"| {arm} | {shown} | {'n/a' if mean is None else f'{mean:+.2f}'} |")
    pooled = [(c["uncertainty"], _mean_dice(c)) for d in draws for a in d["arms"].values() for c in a["cases"]]
    uncertainty = "\n".join(urows) + "\n\n" + (
        f"<sub>Each ρ over the {len(figures['test_cases'])} test cases of one model (same runs as above; a negative ρ "
        f"means less certain cases were segmented worse). Pooled over all {len(pooled)} (model, case) pairs: "
        f"ρ = {_spearman(pooled):+.2f}.</sub>\n"
    )
    return {"improve": improve, "uncertainty": uncertainty}


def _mean_dice(case: Dict[str, Any]) -> float:
    values = [v for v in case["dice"].values() if v is not None]
    return sum(values) / len(values) if values else 0.0


def _spearman(pairs: List[Any]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr([u for u, _ in pairs], [d for _, d in pairs])[0])


if __name__ == "__main__":
    raise SystemExit(main())
