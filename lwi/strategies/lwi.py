"""The ``lwi`` strategy (Kunhimon et al.): Step 1 self-supervised pre-training, then Step 2
fine-tuning from its weights (all but the output layer; the order heads are dropped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from lwi.errors import LWIError
from lwi.names import LAST_INFIX, STEP1_INFIX, STRATEGY_DESCRIPTIONS, derived_path
from lwi.strategies.run import Run, public_summary
from lwi.strategies.settings import step1_iterations, step2_iterations
from lwi.strategies.step1 import run_step1
from lwi.strategies.step2 import load_step1

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
    from lwi import checkpoint

    s = run.settings
    if s.pretrain_epochs < 1:
        raise LWIError("The lwi strategy needs Step 1 (pretrain epochs at least 1); use --strategy scratch without it.")
    step1_path = derived_path(out, STEP1_INFIX)
    last = derived_path(out, LAST_INFIX)
    i1 = step1_iterations(s, run.n_step1_images)
    _, i2 = step2_iterations(s, len(run.train_cases))
    # Preprocess everything first: errors surface before hours of Step 1, and the whole-run
    # fraction then only counts iterations.
    step1_cache, _, validation = run.step1_cache(), run.train_cache(), run.validation_pairs()
    run.progress.plan(i1 + i2)

    step2_started = resume and last.exists()
    step1_done = False
    if resume and step1_path.exists():
        training = checkpoint.read_metadata(step1_path).get("training", {})
        step1_done = bool(training.get("complete")) and int(training.get("iteration", 0)) >= i1
    if step2_started or step1_done:
        run.progress.log(f"Step 1 already done ({step1_path}).")
    else:
        run_step1(
            cache=step1_cache,
            n_images=run.n_step1_images,
            settings=s,
            device=run.device,
            out=step1_path,
            progress=run.progress,
            resume=resume and step1_path.exists(),
            metadata={
                "preprocessing": run.config.to_dict(),
                "data": {**run.describe_split(), "unlabeled": len(run.unlabeled)},
            },
        )
    tensors, _ = load_step1(step1_path)
    summary = run.step2(
        out,
        last,
        validation_cases=validation,
        resume=step2_started,
        init=(tensors, step1_path.name),
        provenance=provenance(run, s.pretrain_epochs, i1, unlabeled_images=len(run.unlabeled)),
        progress_offset=i1,
    )
    summary["step1"] = str(step1_path)
    summary["iterations"] = {"pretrain": i1, "finetune": summary["iterations"]}
    return public_summary(summary)
