"""Improving a finished model with the current cases: ``lwi train --from MODEL`` and ``lwi plan --from``.

The correction loop (segment, correct, add the case, train again) should not start over each time.
Improving a model trains the *same* network (architecture, ROI, labels, preprocessing: all from the
parent bundle) from *all* of the parent's weights, output layer included, on the current cases (old
and new), for a shorter budget than a new model gets: :data:`IMPROVE_SHARE` of the plan's Step-2
iterations (measured: docs/correction-loop.md). No Step 1: the parent's weights are the start.

Honest validation: the held-out cases are ones the parent never trained on. The parent's held-out
cases that are still in the dataset are kept held out (a parent that validated on none: no validation);
a ``validation`` list in dataset.json is refused if it names a case the parent trained on. New cases
(those the parent's provenance does not list) are trained on.

The new bundle's provenance names its parent (``parent``) and the whole chain of models it descends
from (``lineage``, oldest first), which ``lwi info`` prints.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lwi.errors import LWIError
from lwi.names import PathLike

#: An improvement's Step-2 iterations as a share of what the plan gives a new model on this machine
#: (its time budget or the GPU's fixed count). Measured on hippocampus-dev, K 5 -> 10 (the cases
#: doubled), 3 draws, CPU (docs/correction-loop.md, benchmarks/improve_benchmark.py): improving a
#: 300-iteration K=5 model gave mean test Dice 0.814 for 30 iterations (share 0.1) and 0.816 for 80
#: (0.25); retraining on the 10 cases 0.805 for the full 300, 0.514 and 0.633 for 30 and 80. 0.1 is
#: the smallest share measured, and was level with or above retraining at the full budget on every draw.
IMPROVE_SHARE = 0.1
#: The options ``--from`` takes from the parent (the network must stay the parent's).
NETWORK_KEYS = ("arch", "arch_params", "roi")


# -- the parent -------------------------------------------------------------------------------
def read_parent(path: PathLike) -> Dict[str, Any]:
    """The metadata of the model bundle ``path`` (refused with one sentence when it is not a model)."""
    from lwi.bundle import read_bundle_metadata

    if not Path(path).is_file():
        raise LWIError(f"--from {path}: no such model file.")
    return read_bundle_metadata(path)


def parent_network(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """The parent's network as training settings: ``arch``, ``arch_params``, ``roi``."""
    spec = meta.get("architecture", {})
    return {
        "arch": str(spec.get("arch")),
        "arch_params": dict(spec.get("params") or {}),
        "roi": tuple(int(v) for v in spec.get("roi_size") or meta.get("inference", {}).get("roi_size")),
    }


def check_options(parent: PathLike, meta: Mapping[str, Any], given: Mapping[str, Any], strategy: str = "auto",
                  unlabeled: bool = False) -> None:
    """Refuse options that would change the parent's network or add a Step 1 (one sentence each)."""
    name = Path(parent).name
    if str(strategy).lower() != "auto":
        raise LWIError(f"--from {name} trains on from that model's weights; leave out --strategy {strategy}.")
    if unlabeled:
        raise LWIError(f"--from {name} has no Step 1, so --unlabeled images would not be used; leave it out.")
    if given.get("pretrain_epochs") or given.get("pretrain_iterations"):
        raise LWIError(f"--from {name} has no Step 1; leave out --pretrain-epochs and --pretrain-iterations.")
    network = parent_network(meta)
    flags = {"arch": "--arch", "arch_params": "the network parameters (--init-filters, --arch-param, ...)", "roi": "--roi"}
    for key in NETWORK_KEYS:
        value = given.get(key)
        if value is None:
            continue
        if key == "arch_params":
            differs = any(network["arch_params"].get(k) != v for k, v in dict(value).items())
        elif key == "roi":
            differs = tuple(int(v) for v in value) != network["roi"]
        else:
            differs = str(value).lower() != network["arch"].lower()
        if differs:
            raise LWIError(
                f"{flags[key]} differs from the network of {name} ({_network_text(network)}); --from keeps the "
                "parent's network, so leave the option out (or train a new model without --from)."
            )
    pre = meta.get("preprocessing") or {}
    spacing, modality = given.get("spacing"), given.get("modality")
    if spacing is not None and [round(float(v), 6) for v in spacing] != [round(float(v), 6) for v in pre.get("spacing") or []]:
        trained = pre.get("spacing") or "the images' own"
        raise LWIError(
            f"--spacing differs from the spacing {name} was trained at ({trained}); "
            "--from keeps the parent's preprocessing, so leave it out."
        )
    if modality is not None and str(modality).upper() != str(pre.get("modality", "")).upper():
        raise LWIError(
            f"--modality {modality} differs from {name}'s ({pre.get('modality')}); --from keeps the parent's "
            "preprocessing, so leave it out."
        )


def _network_text(network: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k} {v}" for k, v in network["arch_params"].items())
    roi = "x".join(str(v) for v in network["roi"])
    return f"{network['arch']}" + (f" ({params})" if params else "") + f" at ROI {roi}"


def check_labels(parent: PathLike, meta: Mapping[str, Any], labels: Mapping[int, str]) -> None:
    """Refuse a dataset whose labels (values and names) are not the parent's."""
    from lwi.bundle import bundle_labels

    theirs = {info.value: info.name.lower() for info in bundle_labels(dict(meta))}
    ours = {int(v): str(n).lower() for v, n in labels.items() if int(v) != 0}
    if theirs != ours:
        shown = ", ".join(f"{v} {n}" for v, n in sorted(theirs.items()))
        raise LWIError(
            f"The dataset's labels ({', '.join(f'{v} {n}' for v, n in sorted(ours.items()))}) differ from those of "
            f"{Path(parent).name} ({shown}); improve a model trained for these labels, or train a new one without --from."
        )


def parent_cases(meta: Mapping[str, Any]) -> Tuple[Optional[List[str]], List[str]]:
    """``(cases the parent trained on, cases it held out)`` as its provenance records them; the first
    is None for a model made before LWI recorded the names."""
    prov = meta.get("provenance") or {}
    trained = prov.get("training_cases")
    return (None if trained is None else sorted(str(n) for n in trained)), sorted(str(n) for n in prov.get("held_out") or [])


def improvement_split(dataset: Any, meta: Mapping[str, Any], name: str) -> Tuple[List[Any], List[Any], str]:
    """``(training cases, held-out cases, a sentence)`` for improving the parent ``meta`` (see the
    module docstring): held out only cases the parent never trained on."""
    trained, held = parent_cases(meta)
    known = set(trained or [])
    if dataset.validation:
        clash = sorted(set(dataset.validation) & known)
        if clash:
            raise LWIError(
                f"dataset.json lists {', '.join(clash)} for validation, but {name} trained on them, so its Dice "
                "there would not be honest; list only cases it never trained on (or none)."
            )
        held_names = set(dataset.validation)
    else:
        held_names = set(held) & {c.name for c in dataset.cases}
    train = [c for c in dataset.cases if c.name not in held_names]
    kept = [c for c in dataset.cases if c.name in held_names]
    if not train:
        raise LWIError("Every case is held out for validation; nothing is left to train on.")
    added = added_cases(meta, [c.name for c in train])
    what = f"Improving {name} on {len(train)} case(s)"
    what += f", {len(added)} of them new ({', '.join(added)})" if trained is not None else " (it does not record its training cases)"
    if kept:
        return train, kept, what + f"; validating on the {len(kept)} case(s) it never trained on ({', '.join(sorted(held_names))})."
    return train, [], what + f"; no validation ({name} held out no case that is still here); the result is the last model."


def added_cases(meta: Mapping[str, Any], names: Sequence[str]) -> List[str]:
    """The names among ``names`` that the parent did not train on (all of them when it does not say)."""
    trained, _ = parent_cases(meta)
    return sorted(set(names) - set(trained or []))


def lineage(parent: PathLike, meta: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The chain of models a model improved from ``parent`` descends from, oldest first."""
    prov = meta.get("provenance") or {}
    entry = {
        "model": Path(parent).name,
        "created": prov.get("created"),
        "strategy": prov.get("strategy"),
        "cases": prov.get("cases"),
        "mean_validation_dice": prov.get("mean_validation_dice"),
    }
    return [dict(e) for e in prov.get("lineage") or []] + [{k: v for k, v in entry.items() if v is not None}]


# -- the plan ---------------------------------------------------------------------------------
def plan_improvement(
    data: PathLike,
    parent: PathLike,
    given: Mapping[str, Any],
    *,
    strategy: str = "auto",
    unlabeled: bool = False,
    device: Any = "auto",
    time_budget: Optional[float] = None,
    probe: bool = True,
    started: Optional[float] = None,
) -> Tuple[Dict[str, Any], Any]:
    """``(training options, plan)`` for improving ``parent`` on ``data``: the parent's network and
    preprocessing, Step 2 only, for :data:`IMPROVE_SHARE` of the plan's Step-2 iterations (unless a
    budget or ``--time`` is given: then that). The plan's strategy is ``improve``."""
    from lwi.data.dataset import load_dataset
    from lwi.plan import PLANNED, _budget_given, budget_settings, make_plan

    meta = read_parent(parent)
    name = Path(parent).name
    check_options(parent, meta, given, strategy, unlabeled)
    dataset = load_dataset(data, require_labels=True)
    check_labels(parent, meta, dataset.labels)
    train, held, split = improvement_split(dataset, meta, name)
    pre = meta.get("preprocessing") or {}
    network = parent_network(meta)
    fixed: Dict[str, Any] = dict(network)
    if pre.get("spacing") and given.get("spacing") is None:
        fixed["spacing"] = tuple(float(v) for v in pre["spacing"])
    user = {k: v for k, v in given.items() if v is not None}
    plan = make_plan(
        dataset, {**user, **fixed}, device=device, time_budget=time_budget, strategy="scratch", n_train=len(train),
        n_validation=len(held), probe=probe, started=started,
    )
    full = plan.step2_iterations
    if not _budget_given(user) and time_budget is None:
        i2 = max(1, int(math.ceil(IMPROVE_SHARE * full)))
        epochs = budget_settings(0, i2, user, len(train), int(plan.settings["batch_size"]))
        plan.settings.update({k: user.get(k, v) for k, v in epochs.items()})
        plan.step2_iterations = int(plan.settings["epochs"]) * int(plan.settings["iterations_per_epoch"])
        plan.reasons["budget"] = (
            f"{IMPROVE_SHARE:.0%} of the {full} Step-2 iterations a new model would get here (the parent's weights "
            "are the start; measured in docs/correction-loop.md)"
        )
        if plan.seconds.get("step2") is not None and full:
            plan.seconds["step2"] *= plan.step2_iterations / full
            plan.seconds["total"] = sum(v for k, v in plan.seconds.items() if k != "total" and v is not None)
        plan.warnings = [w for w in plan.warnings if not w.startswith(f"{full} Step-2 iterations")]
    plan.strategy = "improve"
    plan.reasons["strategy"] = f"--from {name}: its network, preprocessing and weights, trained on. {split}"
    plan.reasons["arch"] = plan.reasons["roi"] = f"those of {name}"
    if "spacing" in fixed:
        plan.reasons["spacing"] = f"that of {name}"
    plan.alternative = None
    options = {k: v for k, v in user.items() if k not in ("iterations", "pretrain_iterations")}
    for key in PLANNED:
        if key in plan.settings and options.get(key) is None:
            options[key] = plan.settings[key]
    options.update(fixed, pretrain_epochs=0)
    for key in ("roi", "spacing"):
        if options.get(key) is not None:
            options[key] = tuple(options[key])
    return options, plan


# -- training ---------------------------------------------------------------------------------
def improve(
    data: PathLike,
    parent: PathLike,
    out: PathLike,
    *,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Any = None,
    on_epoch_end: Any = None,
    outputs_checked: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Improve the model bundle ``parent`` on the labelled cases of ``data`` and write the new model to
    ``out`` (and its resumable last state beside it, ``.last`` infix), as :func:`lwi.strategies.train`
    does. ``options`` are :class:`~lwi.strategies.settings.Settings` fields; the network and the
    preprocessing are the parent's (a different ``arch``/``roi``/network parameter is refused), and so
    must the labels be. Returns the training summary."""
    from lwi import checkpoint
    from lwi.names import LAST_INFIX, STEP2_STATE_FORMAT, derived_path
    from lwi.progress import Progress
    from lwi.strategies.run import Run, check_outputs, public_summary, resumed_settings
    from lwi.strategies.step2 import run_step2

    progress = progress or Progress("none")
    out, name = Path(out), Path(parent).name
    last = derived_path(out, LAST_INFIX)
    meta = read_parent(parent)
    check_options(parent, meta, options)
    stored = resumed_settings([last], (STEP2_STATE_FORMAT,), f"Nothing to resume: {last} does not exist.") if resume else None
    settings = {k: v for k, v in options.items() if v is not None}
    settings.update(parent_network(meta), pretrain_epochs=0)

    def split(dataset: Any) -> Tuple[List[Any], List[Any], str]:
        check_labels(parent, meta, dataset.labels)
        return improvement_split(dataset, meta, name)

    run = Run.from_options(
        data, settings, stored, stored_preprocessing=(stored or meta).get("preprocessing"), device=device,
        progress=progress, require_labels=True, split=split,
    )
    check_outputs(run, out, [last], overwrite, resume, checked=outputs_checked)
    progress.log(run.split_message)
    channels = int(run.train_cache().full_case(0)[0].shape[0])
    if channels != int(meta["architecture"].get("in_channels", channels)):
        raise LWIError(f"{name} takes images with {meta['architecture']['in_channels']} channel(s); these have {channels}.")
    tensors, _ = checkpoint.load(parent, device="cpu")
    added = added_cases(meta, [c.name for c in run.train_cases])
    summary = run_step2(
        run,
        out,
        last,
        resume=resume,
        start=(tensors, name),
        provenance={
            "strategy": "improve",
            "parent": name,
            "lineage": lineage(parent, meta),
            "added_cases": added,
            "pretrain_epochs": 0,
            **run.describe_split(),
            "seed": run.settings.seed,
        },
        on_epoch_end=on_epoch_end,
    )
    summary["strategy"] = "improve"
    summary["parent"] = name
    summary["added_cases"] = added
    summary["iterations"] = {"finetune": summary["iterations"]}
    return public_summary(summary)
