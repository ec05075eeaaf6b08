"""One run of ``lwi experiment`` in its own process: ``python -m lwi.experiment_run SPEC``.

SPEC (written by :meth:`lwi.experiment.Experiment.spec_file`) names the draw's dataset folder, the
test set, the model path, the strategy, seed, device and training options. The run trains through
:func:`lwi.strategies.train` (continuing from its checkpoint when an earlier attempt was interrupted;
``train.json`` beside the model marks finished training), segments and scores every test case
(:func:`lwi.evaluation.evaluate_dataset`), and reports JSON lines on stdout: the training and
evaluation events, then one ``result`` (``run``, ``model``, ``train``, ``train_seconds``,
``evaluate_seconds``, ``evaluation``) or ``error``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Union

from lwi.errors import LWIError
from lwi.evaluation import write_json
from lwi.progress import Progress

PathLike = Union[str, Path]


def run_one(spec_path: PathLike) -> int:
    """Train and evaluate one run described by ``spec_path`` (written by :meth:`lwi.experiment.Experiment.spec_file`),
    reporting JSON lines on stdout; the final line holds the training summary and the evaluation."""
    progress = Progress("json")
    try:
        spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
        return _run_one(spec, progress)
    except KeyboardInterrupt:
        progress.error("Interrupted; resume the experiment to continue this run from its last checkpoint.")
        return 130
    except LWIError as exc:
        progress.error(str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001 - the parent shows one line; the traceback goes to log.txt
        import traceback

        traceback.print_exc()
        progress.error(f"{type(exc).__name__}: {exc}")
        return 1


def _run_one(spec: Mapping[str, Any], progress: Progress) -> int:
    import torch

    from lwi import interrupt
    from lwi.data.dataset import load_dataset
    from lwi.evaluation import evaluate_dataset
    from lwi.inference import Segmenter
    from lwi.strategies import get_strategy, train

    model = Path(spec["model"])
    done = model.parent / "train.json"
    with interrupt.handling():  # a stop request ends training at the next iteration, with a checkpoint
        if done.exists():
            summary = json.loads(done.read_text(encoding="utf-8"))
            progress.log(f"Training of {spec['run']} already finished; evaluating.")
        else:
            # Leftovers of an interrupted attempt: continue from its checkpoint; a model file without
            # one (the attempt died before its first checkpoint) is replaced.
            module = get_strategy(spec["strategy"])
            resume = any(p.exists() for p in module.outputs(model) if p != model)
            start = time.monotonic()
            summary = train(
                spec["data"], model, strategy=spec["strategy"], unlabeled=spec.get("unlabeled") or None,
                device=spec["device"], resume=resume, overwrite=not resume, progress=progress,
                **{**spec["options"], "seed": spec["seed"]},
            )
            summary["train_seconds"] = time.monotonic() - start
            write_json(summary, done)
        start = time.monotonic()
        segmenter = Segmenter(model, device=spec["device"], threads=torch.get_num_threads(), progress=progress)
        evaluation = evaluate_dataset(segmenter, load_dataset(spec["test"], require_labels=True), progress)
    progress.result(
        run=spec["run"], model=str(model), train=summary, train_seconds=summary.get("train_seconds"),
        evaluate_seconds=time.monotonic() - start, evaluation=evaluation,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_one(sys.argv[1]))
