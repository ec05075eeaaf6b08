"""Training strategies: named recipes built from Step 1 and Step 2.

* ``lwi``: Step 1 (self-supervised LWI pre-training) then Step 2 (fine-tuning from its weights).
* ``scratch``: Step 2 alone from random initialisation, for the same total number of iterations
  (the paper's baseline).

A strategy is one module with ``NAME``, ``DESCRIPTION``, ``outputs(out) -> [paths]`` and
``train(run, out, resume) -> summary`` whose name is listed in :data:`lwi.names.STRATEGY_NAMES`
(MedContext or AnatoMask would be one more module and name each).

The package, one job per module:

* :mod:`~lwi.strategies.settings`: :class:`Settings`, what a resumed run may change, the schedule;
* :mod:`~lwi.strategies.run`: :class:`Run` (data, split, preprocessing, caches), the Trainer of a
  step, resuming and refusing to overwrite;
* :mod:`~lwi.strategies.step1` / :mod:`~lwi.strategies.step2`: the two steps;
* :mod:`~lwi.strategies.api`: :func:`pretrain`, :func:`finetune`, :func:`train` (re-exported here).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, List

from lwi.errors import LWIError
from lwi.names import AUTO_STRATEGY, STRATEGY_NAMES, derived_path
from lwi.strategies.api import finetune, pretrain, train
from lwi.strategies.run import Run
from lwi.strategies.settings import Settings

# name -> module path; modules are imported on use so adding one cannot slow the others down.
# The names are lwi.names.STRATEGY_NAMES (what the CLI and the GUI offer): one module each.
STRATEGIES: Dict[str, str] = {name: f"lwi.strategies.{name}" for name in STRATEGY_NAMES}


def get_strategy(name: str) -> Any:
    """The strategy module called ``name`` (clear error listing the known ones)."""
    module = STRATEGIES.get(str(name).lower())
    if str(name).lower() == AUTO_STRATEGY:
        raise LWIError(
            "'auto' is not a strategy but the plan's choice of one (lwi/strategy_choice.py); "
            f"name one of: {', '.join(STRATEGIES)}."
        )
    if module is None:
        raise LWIError(f"Unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}.")
    return importlib.import_module(module)


def strategy_outputs(name: str, out: Path) -> List[Path]:
    """The files training with ``name`` may write for the model ``out`` (the model first); for
    ``auto``, those of every strategy it may choose (checked before the plan has chosen)."""
    from lwi.strategy_choice import AUTO_CHOICES

    names = AUTO_CHOICES if str(name).lower() == AUTO_STRATEGY else (name,)
    paths: List[Path] = []
    for each in names:
        paths += [p for p in get_strategy(each).outputs(Path(out)) if p not in paths]
    return paths


__all__ = [
    "STRATEGIES",
    "Run",
    "Settings",
    "derived_path",
    "finetune",
    "get_strategy",
    "pretrain",
    "strategy_outputs",
    "train",
]
