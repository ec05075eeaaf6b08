"""``--strategy auto``, resolved in one place: what a run trains when the user leaves the strategy to
LWI (:func:`resolve_strategy`). A named strategy is kept; a resumed run keeps the strategy of its
files (:func:`resumed_strategy`); a new run gets :func:`choose_strategy`'s choice between
:data:`AUTO_CHOICES` from its Step-2 budget, which the plan (:mod:`lwi.plan`) or, without a plan, the
Python API's ``train()`` computes."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from lwi.errors import LWIError
from lwi.names import AUTO_STRATEGY, LAST_INFIX, STEP1_INFIX, derived_path

#: From this many Step-2 iterations (next to Step 1) ``--strategy auto`` would train lwi; None: at no budget.
#: LWI trains where it is shown ahead of scratch at the level of the draw, and no budget measured so far
#: shows it (docs/evidence.md): behind at the 20-minute CPU plan on 3 of 3 draws of unseen hippocampus
#: cases, and no lwi - scratch difference established by draw at 300 to 1200 iterations on the
#: development set. A measurement that shows it ahead from some budget on sets this number.
LWI_MIN_STEP2_ITERATIONS: Optional[int] = None
#: The strategies ``--strategy auto`` chooses between.
AUTO_CHOICES = ("lwi", "scratch")
#: Why auto trains scratch when the budget decides (said by the plan and the panel).
NOT_SHOWN_AHEAD = (
    "LWI has not been shown ahead of training from scratch at this budget (docs/evidence.md); "
    "--strategy lwi trains it, and lwi experiment compares both on your data"
)


def choose_strategy(
    step2_iterations: int, step1_given: Optional[int] = None, unlabeled: bool = False
) -> Tuple[str, str]:
    """What ``--strategy auto`` trains for a new run (one of :data:`AUTO_CHOICES`), and why.

    ``step2_iterations``: the Step-2 budget the plan gives ``lwi``; ``step1_given``: the user's Step-1
    budget in iterations or epochs (None: not given); ``unlabeled``: extra unlabelled images given.
    A Step-1 budget or unlabelled images the user gives ask for Step 1 and are never dropped; otherwise
    lwi only from :data:`LWI_MIN_STEP2_ITERATIONS` Step-2 iterations (None: never), scratch below.
    """
    if step1_given is not None and int(step1_given) == 0:
        return "scratch", "no Step 1 asked for (a Step-1 budget of 0)"
    if step1_given:
        return "lwi", "a Step-1 budget was given"
    if unlabeled:
        return "lwi", "unlabelled images were given, and only Step 1 uses them"
    if LWI_MIN_STEP2_ITERATIONS is None or step2_iterations < LWI_MIN_STEP2_ITERATIONS:
        return "scratch", NOT_SHOWN_AHEAD
    return "lwi", (
        f"a Step-2 budget of {step2_iterations} iterations (next to Step 1), at least {LWI_MIN_STEP2_ITERATIONS}: "
        "from there LWI was shown ahead of scratch (docs/evidence.md)"
    )


def resolve_strategy(
    strategy: str,
    *,
    out: Optional[Any] = None,
    resume: bool = False,
    step2_iterations: int = 0,
    step1_given: Optional[int] = None,
    unlabeled: bool = False,
) -> Tuple[str, str]:
    """The strategy a run trains and why: the one home of ``auto``. A named strategy is kept; ``auto``
    resuming is the interrupted run's (:func:`resumed_strategy`, from the files next to ``out``), and
    for a new run :func:`choose_strategy` on the budget (the other arguments)."""
    name = str(strategy).lower()
    if name != AUTO_STRATEGY:
        return name, "given"
    if resume:
        return resumed_strategy(out), "the interrupted run's"
    return choose_strategy(step2_iterations, step1_given, unlabeled)


def resumed_strategy(out: Any) -> str:
    """The strategy of the interrupted run that wrote ``out``'s checkpoints: the one its last
    fine-tuning state records, else ``lwi`` when only its Step-1 checkpoint is there."""
    from lwi import checkpoint

    last, step1 = derived_path(out, LAST_INFIX), derived_path(out, STEP1_INFIX)
    if last.exists():
        name = (checkpoint.read_metadata(last).get("provenance") or {}).get("strategy")
        if name:
            return str(name)
        raise LWIError(f"{last} does not say which strategy made it; resume with --strategy NAME.")
    if step1.exists():
        return "lwi"
    raise LWIError(f"Nothing to resume: no checkpoint of a training run next to {out}.")
