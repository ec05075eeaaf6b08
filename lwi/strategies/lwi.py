"""The ``lwi`` strategy (Kunhimon et al.): Step 1 self-supervised pre-training, then Step 2
fine-tuning from its weights (all but the output layer; the order heads are dropped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from lwi.errors import LWIError
from lwi.names import LAST_INFIX, STEP1_INFIX, STRATEGY_DESCRIPTIONS, derived_path
from lwi.strategies.run import Run, pretrain_first, public_summary
from lwi.strategies.settings import step1_iterations
from lwi.strategies.step1 import run_step1
from lwi.strategies.step2 import load_step1, run_step2

NAME = "lwi"
DESCRIPTION = STRATEGY_DESCRIPTIONS[NAME]


def outputs(out: Path) -> List[Path]:
    """Files this strategy writes: the model, its resumable last state, the Step-1 checkpoint."""
    return [out, derived_path(out, LAST_INFIX), derived_path(out, STEP1_INFIX)]


def provenance(run: Run, pretrain_epochs: Any, pretrain_iterations: Any, **extra: Any) -> Dict[str, Any]:
    """The bundle provenance of a model this strategy made: Step 1's length, the cases, the seed
    (also for ``lwi finetune`` of a Step-1 checkpoint made by ``lwi pretrain``)."""
    return {
        "strategy": NAME,
        "pretrain_epochs": pretrain_epochs,
        **run.describe_split(),
        **extra,
        "iterations": {"pretrain": pretrain_iterations},
        "seed": run.settings.seed,
    }


def train(run: Run, out: Path, resume: bool = False) -> Dict[str, Any]:
    """Run both steps; the progress fraction and ETA cover the whole run."""
    s = run.settings
    if step1_iterations(s, run.n_step1_images) < 1:
        raise LWIError("The lwi strategy needs Step 1 (pretrain epochs at least 1); use --strategy scratch without it.")
    step1_path = derived_path(out, STEP1_INFIX)
    last, i1, step2_started = pretrain_first(run, out, step1_path, run_step1, "Step 1", resume)
    tensors, _ = load_step1(step1_path)
    summary = run_step2(
        run,
        out,
        last,
        resume=step2_started,
        init=(tensors, step1_path.name),
        provenance=provenance(run, s.pretrain_epochs, i1, unlabeled_images=len(run.unlabeled)),
        progress_offset=i1,
    )
    summary["step1"] = str(step1_path)
    summary["iterations"] = {"pretrain": i1, "finetune": summary["iterations"]}
    return public_summary(summary)
