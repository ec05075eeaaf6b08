"""The ``scratch`` baseline: the same network trained by Step 2 alone from random initialisation,
for the same total number of iterations as an ``lwi`` run (Step 1 + Step 2) with these settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from lwi.names import LAST_INFIX, STRATEGY_DESCRIPTIONS, derived_path
from lwi.strategies.run import Run, public_summary
from lwi.strategies.settings import matched_iterations
from lwi.strategies.step2 import Step2Recipe, run_step2

NAME = "scratch"
DESCRIPTION = STRATEGY_DESCRIPTIONS[NAME]


def outputs(out: Path) -> List[Path]:
    """Files this strategy writes: the model and its resumable last state."""
    return [out, derived_path(out, LAST_INFIX)]


def train(run: Run, out: Path, resume: bool = False) -> Dict[str, Any]:
    return train_matched(run, out, resume, {"strategy": NAME})


def train_matched(
    run: Run, out: Path, resume: bool, strategy: Dict[str, Any], recipe: Step2Recipe = Step2Recipe()
) -> Dict[str, Any]:
    """One Step-2 stage for as many iterations as ``lwi`` would take in total (Step 1 + Step 2),
    shared by the strategies that train a single stage (``medcontext`` passes its model and step
    in ``recipe``); ``strategy`` opens the provenance (name, strategy settings)."""
    s = run.settings
    last = derived_path(out, LAST_INFIX)
    i1, i2, epochs = matched_iterations(s, run.n_step1_images, len(run.train_cases))
    total = i1 + i2
    run.train_cache(), run.validation_pairs()  # preprocessed before the progress starts
    run.progress.plan(total)
    summary = run_step2(
        run,
        out,
        last,
        resume=resume and last.exists(),
        recipe=recipe,
        epochs=epochs,
        max_iterations=total,
        stage="train",
        provenance={
            **strategy,
            "pretrain_epochs": 0,
            **run.describe_split(),
            "seed": s.seed,
            "matched_iterations": {"pretrain": i1, "finetune": i2},
        },
    )
    summary["iterations"] = {"train": summary["iterations"]}
    return public_summary(summary)
