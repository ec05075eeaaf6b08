"""The Python API behind ``lwi pretrain``, ``lwi finetune`` and ``lwi train`` (and the demo):
:func:`pretrain` (Step 1 alone), :func:`finetune` (Step 2 from a Step-1 checkpoint) and
:func:`train` (a whole strategy). Each validates the data first, then reads the run to resume or
refuses to replace earlier results, then trains."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from lwi.errors import LWIError
from lwi.names import (
    ANATOMASK_FORMAT,
    AUTO_STRATEGY,
    DEFAULT_STRATEGY,
    LAST_INFIX,
    STEP1_FORMAT,
    STEP2_STATE_FORMAT,
    derived_path,
)
from lwi.progress import Progress
from lwi.strategies.run import PathLike, Run, check_outputs, public_summary, resumed_settings
from lwi.strategies.step1 import run_step1
from lwi.strategies.step2 import load_step1, run_step2
from lwi.training_options import FINETUNE_INHERITS


def pretrain(
    data: PathLike,
    out: PathLike,
    *,
    unlabeled: Optional[Sequence[PathLike]] = None,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    on_epoch_end: Any = None,
    outputs_checked: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """LWI Step 1 on the images of ``data`` (labels not needed) plus ``unlabeled`` image folders.

    ``options`` are :class:`Settings` fields; ``epochs`` means Step 1's epochs here. Writes the
    resumable Step-1 checkpoint ``out`` (every ``checkpoint_every`` epochs and at the end);
    ``resume=True`` continues it from its last saved iteration with its own settings.
    Returns a summary (iterations, last losses, checkpoint path).
    """
    progress = progress or Progress("none")
    out = Path(out)
    stored = resumed_settings([out], (STEP1_FORMAT,), f"Nothing to resume: {out} does not exist.") if resume else None
    run = Run.from_options(
        data, options, stored, stage_epochs="pretrain_epochs", device=device, progress=progress,
        unlabeled=unlabeled, require_labels=False,
    )
    settings = run.settings
    check_outputs(run, None, [out], overwrite, resume, checked=outputs_checked)
    if run.held_cases:
        progress.log(run.split_message.replace("for validation", "for Step 2's validation (not used in Step 1)"))
    summary = run_step1(
        cache=run.step1_cache(),
        n_images=run.n_step1_images,
        settings=settings,
        device=run.device,
        out=out,
        progress=progress,
        resume=resume,
        metadata=run.pretraining_metadata(),
        on_epoch_end=on_epoch_end,
    )
    return public_summary(summary)


def finetune(
    data: PathLike,
    init: PathLike,
    out: PathLike,
    *,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    on_epoch_end: Any = None,
    outputs_checked: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """LWI Step 2: fine-tune the Step-1 checkpoint ``init`` on the labelled cases of ``data``.

    The network (architecture, parameters, ROI) and preprocessing come from ``init``; every Step-1
    weight except the output layer and the order heads is loaded. ``options`` are :class:`Settings`
    fields (``epochs`` = Step 2's). The best model (mean validation Dice) is written to ``out`` as a
    bundle, the last resumable state to ``derived_path(out, "last")``.
    """
    from lwi.strategies import lwi as lwi_strategy

    progress = progress or Progress("none")
    out = Path(out)
    last = derived_path(out, LAST_INFIX)
    tensors, init_meta = load_step1(init)
    stored = None
    if resume:
        stored = resumed_settings([last], (STEP2_STATE_FORMAT,), f"Nothing to resume: {last} does not exist.")
    if stored is None:
        spec = init_meta.get("architecture", {})
        arch = options.get("arch")
        if arch is not None and str(arch).lower() != spec.get("arch"):
            raise LWIError(f"{init} was pre-trained for {spec.get('arch')}, not {arch}; fine-tune it as {spec.get('arch')}.")
        base = {**init_meta.get("settings", {}), "arch": spec.get("arch"), "arch_params": spec.get("params", {})}
        base = {k: v for k, v in base.items() if k in FINETUNE_INHERITS + ("arch_params",)}
        base.update({k: v for k, v in options.items() if v is not None})
        options = base
    # Validate on exactly the cases Step 1 never saw (older checkpoints without the list: the seed's split).
    held_out = (init_meta.get("data") or {}).get("held_out")
    run = Run.from_options(
        data, options, stored, stored_preprocessing=(stored or init_meta).get("preprocessing"),
        device=device, progress=progress, require_labels=True, held_out=held_out,
    )
    settings = run.settings
    check_outputs(run, out, [last], overwrite, resume, checked=outputs_checked)
    progress.log(run.split_message)
    train_cache = run.train_cache()
    channels = int(train_cache.full_case(0)[0].shape[0])
    pretrained_channels = int(init_meta.get("architecture", {}).get("in_channels", channels))
    if channels != pretrained_channels:
        raise LWIError(
            f"{init} was pre-trained on images with {pretrained_channels} channel(s); these have {channels}."
        )
    summary = run_step2(
        run,
        out,
        last,
        resume=resume,
        init=(tensors, Path(init).name),
        provenance=lwi_strategy.provenance(
            run,
            (init_meta.get("training") or {}).get("epochs", settings.pretrain_epochs),
            (init_meta.get("training") or {}).get("iteration"),
        ),
        on_epoch_end=on_epoch_end,
    )
    return public_summary(summary)


def train(
    data: Any,
    out: Any,
    *,
    strategy: str = DEFAULT_STRATEGY,
    unlabeled: Optional[Sequence[Any]] = None,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    outputs_checked: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Train a segmentation model on ``data`` with ``strategy`` and write its bundle to ``out``.

    ``options`` are :class:`Settings` fields (``pretrain_epochs`` for Step 1, ``epochs`` for Step 2).
    Files: ``out`` (best model), ``out`` with a ``.last`` infix (resumable), and for ``lwi`` the
    Step-1 checkpoint with a ``.step1`` infix. ``resume=True`` continues an interrupted run with its
    stored settings (only the numbers of epochs and reporting intervals may change).
    ``strategy="auto"``: :func:`lwi.strategy_choice.resolve_strategy` on these settings' Step-2
    iterations (``lwi train`` resolves it in its plan and passes the name); resuming, the strategy of
    the interrupted run's files.
    ``outputs_checked``: the caller (``lwi train``) checked and locked the files before any work.
    Returns a summary (paths, iterations, validation Dice per label).
    """
    from lwi.strategies import get_strategy
    from lwi.strategy_choice import resolve_strategy

    progress = progress or Progress("none")
    out = Path(out)
    stored = None
    if resume:  # auto: the interrupted run's strategy, whose files hold the settings
        strategy = resolve_strategy(strategy, out=out, resume=True)[0]
        stored = resumed_settings(
            [p for p in get_strategy(strategy).outputs(out) if p != out],
            (STEP1_FORMAT, STEP2_STATE_FORMAT, ANATOMASK_FORMAT),
            f"Nothing to resume: no checkpoint of a {strategy} run next to {out}.",
        )
    run = Run.from_options(
        data, options, stored, device=device, progress=progress, unlabeled=unlabeled, require_labels=True
    )
    if str(strategy).lower() == AUTO_STRATEGY:  # without a plan (lwi train plans and passes a name)
        strategy = auto_strategy(run, options)
    module = get_strategy(strategy)
    check_outputs(run, out, [p for p in module.outputs(out) if p != out], overwrite, resume, checked=outputs_checked)
    progress.log(run.split_message)
    started = time.monotonic()
    try:
        summary = module.train(run, out, resume=resume)
    finally:
        progress.plan(None)
    summary["strategy"] = module.NAME
    # Equal budgets: every strategy reports its optimiser steps (all stages) and this call's wall time.
    summary["optimizer_steps"] = sum(int(v) for v in summary.get("iterations", {}).values())
    summary["wall_seconds"] = round(time.monotonic() - started, 3)
    return summary


def auto_strategy(run: Run, options: Dict[str, Any]) -> str:
    """``auto`` for a new run without a plan (the Python API): :func:`lwi.strategy_choice.resolve_strategy`
    on the settings' Step-2 iterations, the Step-1 epochs if ``options`` give them, and the unlabelled
    images. Scratch chosen so then trains the Step-2 budget alone, as the plan's scratch does."""
    from lwi.strategies.settings import step2_iterations
    from lwi.strategy_choice import resolve_strategy

    _, i2 = step2_iterations(run.settings, len(run.train_cases))
    given = options.get("pretrain_epochs")
    name, why = resolve_strategy(
        AUTO_STRATEGY, step2_iterations=i2, step1_given=None if given is None else int(given), unlabeled=bool(run.unlabeled)
    )
    if name == "scratch" and given is None:
        run.settings.pretrain_epochs = 0  # as the plan: no Step-1 budget to match, Step 2's is the whole budget
        run.settings.pretrain_iterations = None
    run.progress.log(f"Strategy {name} ({why}).")
    return name
