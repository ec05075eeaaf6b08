"""Training strategies: named recipes built from Step 1 and Step 2 (:mod:`lwi.strategies.steps`).

* ``lwi``: Step 1 (self-supervised LWI pre-training) then Step 2 (fine-tuning from its weights).
* ``scratch``: Step 2 alone from random initialisation, for the same total number of iterations
  (the paper's baseline).

A strategy is one module with ``NAME``, ``DESCRIPTION``, ``outputs(out) -> [paths]`` and
``train(run, out, resume) -> summary`` whose name is listed in :data:`lwi.names.STRATEGY_NAMES`
(MedContext or AnatoMask would be one more module and name each). The Python API used by the commands and the demo:
:func:`pretrain`, :func:`finetune`, :func:`train`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from lwi.errors import LWIError
from lwi.names import STRATEGY_NAMES
from lwi.progress import Progress
from lwi.strategies.steps import (
    STEP1_FORMAT,
    STEP2_STATE_FORMAT,
    Run,
    Settings,
    derived_path,
    finetune,
    pretrain,
)

# name -> module path; modules are imported on use so adding one cannot slow the others down.
# The names are lwi.names.STRATEGY_NAMES (what the CLI and the GUI offer): one module each.
STRATEGIES: Dict[str, str] = {name: f"lwi.strategies.{name}" for name in STRATEGY_NAMES}


def get_strategy(name: str) -> Any:
    """The strategy module called ``name`` (clear error listing the known ones)."""
    module = STRATEGIES.get(str(name).lower())
    if module is None:
        raise LWIError(f"Unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}.")
    return importlib.import_module(module)


def train(
    data: Any,
    out: Any,
    *,
    strategy: str = "lwi",
    unlabeled: Optional[Sequence[Any]] = None,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Train a segmentation model on ``data`` with ``strategy`` and write its bundle to ``out``.

    ``options`` are :class:`Settings` fields (``pretrain_epochs`` for Step 1, ``epochs`` for Step 2).
    Files: ``out`` (best model), ``out`` with a ``.last`` infix (resumable), and for ``lwi`` the
    Step-1 checkpoint with a ``.step1`` infix. ``resume=True`` continues an interrupted run with its
    stored settings (only the numbers of epochs and reporting intervals may change).
    Returns a summary (paths, iterations, validation Dice per label).
    """
    progress = progress or Progress("none")
    module = get_strategy(strategy)
    out = Path(out)
    stored = None
    if resume:
        for path in module.outputs(out):
            if path.exists() and path != out:
                from lwi.strategies.steps import _stored_settings

                stored = _stored_settings(path, (STEP1_FORMAT, STEP2_STATE_FORMAT))
                break
        if stored is None:
            raise LWIError(f"Nothing to resume: no checkpoint of a {module.NAME} run next to {out}.")
    run = Run.from_options(
        data, options, stored, device=device, progress=progress, unlabeled=unlabeled, require_labels=True
    )
    if not resume:
        from lwi.strategies.steps import check_outputs

        check_outputs(module.outputs(out), overwrite)
    progress.log(run.split_message)
    try:
        summary = module.train(run, out, resume=resume)
    finally:
        progress.plan(None)
    summary["strategy"] = module.NAME
    return summary


__all__ = [
    "STRATEGIES",
    "Run",
    "Settings",
    "derived_path",
    "finetune",
    "get_strategy",
    "pretrain",
    "train",
]
