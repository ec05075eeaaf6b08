"""The training plan: every default of ``lwi train`` derived from the data, the device and a time budget.

One source of defaults for the command line and the LWI Training panel (which asks ``lwi plan`` in a
subprocess). Each rule is stated where it is applied and printed as a reason with the plan; the rules
together, with their sources (nnU-Net, MONAI's tutorials, the paper), are in docs/plan.md:
:func:`target_spacing` (median, nnU-Net's anisotropy rule, the paper's CT spacing), :func:`choose_roi`
(the median cropped volume, the structures' extent, the network's divisors, the device), the network
and learning rate (:data:`ARCH_DEFAULTS`, :data:`LEARNING_RATES`), the budget in iterations
(:data:`GPU_STEP2_ITERATIONS`, :data:`STEP1_SHARE`, or a time budget through a timing probe), the
strategy (:func:`lwi.strategy_choice.resolve_strategy`) and the augmentation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lwi.errors import LWIError
from lwi.names import AUTO_STRATEGY
from lwi.option_types import format_duration
from lwi.strategy_choice import choose_strategy, resolve_strategy
from lwi.training_options import PLANNED

#: Step 1's iterations as a share of Step 2's: the paper's 800 Step-1 and 5000 Step-2 epochs.
STEP1_SHARE = 800 / 5000
#: Step-2 iterations on a GPU without a time budget (MONAI's UNETR BTCV tutorial: max_iterations 25000).
GPU_STEP2_ITERATIONS = 25000
#: Below this many Step-2 iterations the plan warns that the model may be under-trained (auto's
#: choice of strategy has its own, measured threshold: :mod:`lwi.strategy_choice`).
MIN_STEP2_ITERATIONS = 2000
#: The time budget on a CPU when none is given.
CPU_DEFAULT_SECONDS = 30 * 60
#: nnU-Net's anisotropy threshold.
ANISOTROPY = 3.0
#: The paper's CT spacing (mm).
PAPER_CT_SPACING = (1.5, 1.5, 2.0)
#: Largest crop (voxels) per device kind: on a CPU every voxel costs time, on a GPU memory decides.
MAX_ROI_VOXELS = {"cpu": 64 * 64 * 64, "cuda": 160 * 160 * 160}
#: Network per device kind.
ARCH_DEFAULTS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "cpu": ("segresnet", {"init_filters": 8}),
    "cuda": ("segresnet", {"init_filters": 16}),
}
#: AdamW learning rate per network: the paper's 1e-4 for the transformers; 1e-3 for SegResNet, whose
#: small CNN learns far too slowly at 1e-4 on a few cases (docs/results.md: one hippocampus label stayed near 0).
LEARNING_RATES = {"segresnet": 1e-3}
PAPER_LR = 1e-4
BATCH_SIZE = 2  # the paper's Table 5, and nnU-Net's minimum
CUBE_SIZE = 16  # the paper's mask cube
VALIDATIONS = 10  # validations per run (every 2 of the plan's 20 epochs)
PLAN_EPOCHS = 20  # a planned stage is cut into this many epochs (progress lines, checkpoints)
EVENT_SECONDS = 0.3  # a validation's or checkpoint's fixed cost (files, metric), per event
SAFETY = 0.9  # share of the time budget the iterations may use (the ETA of a shared machine varies)
MemoryFn = Callable[[Tuple[int, int, int], int], float]


# -- the rules ----------------------------------------------------------------------------------
def target_spacing(fp: Any) -> Tuple[Tuple[float, float, float], str]:
    """The plan's spacing for a :class:`~lwi.data.fingerprint.Fingerprint` and the reason."""
    spacings = np.asarray(fp.spacings, dtype=float)
    target = np.median(spacings, axis=0)
    shapes = np.asarray(fp.shapes, dtype=float) * spacings / target  # voxels at the target spacing
    size = np.median(shapes, axis=0)
    coarse = int(np.argmax(target))
    others = [i for i in range(3) if i != coarse]
    reason = f"median spacing of the {len(spacings)} cases"
    aniso_spacing = target[coarse] > ANISOTROPY * max(target[i] for i in others)
    aniso_voxels = size[coarse] * ANISOTROPY < min(size[i] for i in others)
    if aniso_spacing and aniso_voxels:
        finer = float(np.percentile(spacings[:, coarse], 10))
        target[coarse] = max(finer, max(target[i] for i in others))
        reason = (
            f"median in-plane spacing; the coarse axis ({'RAS'[coarse]}) at the 10th percentile of its spacings "
            "(nnU-Net's rule for anisotropic data)"
        )
    finer = [i for i in range(3) if target[i] < PAPER_CT_SPACING[i]]
    if str(fp.modality).upper() == "CT" and finer:
        # Per axis, so abdominal CT with fine pixels but thick slices (BTCV: 0.76 x 0.76 x 3 mm) gets the
        # paper's in-plane 1.5 mm and keeps its slices: a crop then covers about the paper's context.
        target = np.maximum(target, np.asarray(PAPER_CT_SPACING, dtype=float))
        reason = (
            f"the paper's CT spacing (1.5 x 1.5 x 2.0 mm) on the axes where the median is finer "
            f"({', '.join('RAS'[i] for i in finer)}); the median elsewhere"
        )
    spacing = (float(target[0]), float(target[1]), float(target[2]))
    return spacing, reason


def roi_rules(arch: str, params: Mapping[str, Any], cube_size: int) -> Tuple[int, int]:
    """``(divisor, minimum depth)``: every ROI axis a multiple of ``divisor`` (the network's down-sampling
    and Step 1's mask cube), and a depth giving Step 1 at least two sub-volumes."""
    from torch import nn

    from lwi.architectures import ARCHITECTURES

    cls = ARCHITECTURES.get(str(arch).lower())
    if cls is None:
        raise LWIError(f"Unknown architecture '{arch}'; choose one of: {', '.join(sorted(ARCHITECTURES))}.")
    shape_only = cls.__new__(cls)  # the divisors need the parameters, not the network
    nn.Module.__init__(shape_only)
    shape_only.params = {**cls.defaults, **dict(params)}
    divisor = math.lcm(int(shape_only.roi_divisor), int(cube_size))
    min_depth = _round_up(2 * int(shape_only.depth_factor), divisor)
    return divisor, min_depth


def _round_up(value: float, step: int) -> int:
    return int(max(step, math.ceil(value / step) * step))


def choose_roi(
    fp: Any,
    spacing: Sequence[float],
    divisor: int,
    min_depth: int,
    max_voxels: int,
    memory: Optional[MemoryFn] = None,
    memory_budget: Optional[float] = None,
    batch_size: int = BATCH_SIZE,
) -> Tuple[Tuple[int, int, int], List[str]]:
    """The crop size (see the module docstring) and the reasons for it.

    ``memory(roi, batch)`` estimates training memory in bytes; the ROI shrinks (largest axis
    relative to the structures first) until it fits ``memory_budget``.
    """
    spacing = np.asarray(spacing, dtype=float)
    image = np.asarray(fp.median_size_mm()) / spacing
    need = np.asarray(fp.structure_extent_mm()) / spacing
    floor = [divisor, divisor, min_depth]
    roi = [max(_round_up(max(image[i], need[i]), divisor), floor[i]) for i in range(3)]
    reasons = [
        f"median volume {_fmt(image)} voxels, structures up to {_fmt(need)} voxels (95th percentile) at this spacing",
        f"each axis a multiple of {divisor} (network down-sampling and the {CUBE_SIZE}^3 mask cube), depth at least {min_depth}",
    ]

    def fits() -> bool:
        if int(np.prod(roi)) > max_voxels:
            return False
        return memory is None or memory_budget is None or memory(tuple(roi), batch_size) <= memory_budget

    shrunk = False
    while not fits():
        # Shrink the axis that most exceeds what the structures need.
        ratios = [roi[i] / max(need[i], 1.0) if roi[i] - divisor >= floor[i] else -1.0 for i in range(3)]
        axis = int(np.argmax(ratios))
        if ratios[axis] < 0:
            raise LWIError(
                f"Even the smallest crop {roi} does not fit this device's memory; use a smaller network "
                "(--init-filters) or the CPU."
            )
        roi[axis] -= divisor
        shrunk = True
    if shrunk:
        reasons.append(f"shrunk to fit the device (at most {max_voxels} voxels" + (", and memory)" if memory_budget else ")"))
    if any(r < n for r, n in zip(roi, need)):
        reasons.append("smaller than the largest structures: crops see them in parts")
    return (roi[0], roi[1], roi[2]), reasons


def _fmt(values: Sequence[float]) -> str:
    return "x".join(str(int(round(v))) for v in values)


def split_budget(
    seconds: float,
    step1_seconds_per_iteration: float,
    step2_seconds_per_iteration: float,
    overhead_seconds: float,
    with_step1: bool = True,
) -> Tuple[int, int]:
    """``(Step-1, Step-2 iterations)`` that fit ``seconds`` (after ``overhead_seconds``) at the
    measured rates, in the ratio :data:`STEP1_SHARE` (Step 2 only without Step 1)."""
    available = max(0.0, seconds - overhead_seconds) * SAFETY
    share = STEP1_SHARE if with_step1 else 0.0
    per_step2 = step2_seconds_per_iteration + share * step1_seconds_per_iteration
    i2 = max(2, int(available / per_step2)) if per_step2 > 0 else 2
    i1 = max(1, int(round(share * i2))) if with_step1 else 0
    return i1, i2


def budget_settings(
    i1: int, i2: int, given: Mapping[str, Any], n_train: int, batch_size: int
) -> Dict[str, int]:
    """The epoch fields of :class:`~lwi.strategies.settings.Settings` for ``i1`` + ``i2`` iterations,
    respecting what the user gave (``epochs``, ``pretrain_epochs``, ``iterations_per_epoch``,
    ``iterations``, ``pretrain_iterations``).

    A user's ``--epochs`` keeps its documented meaning (an epoch = training cases / batch size
    iterations) unless ``--iterations-per-epoch`` is given; otherwise a stage is cut into
    :data:`PLAN_EPOCHS` epochs.
    """
    ipe = given.get("iterations_per_epoch")
    if ipe is None:
        epoch_based = given.get("epochs") is not None or given.get("pretrain_epochs") is not None
        planned = _first(given.get("iterations"), i2)
        ipe = math.ceil(n_train / batch_size) if epoch_based else max(1, round(planned / PLAN_EPOCHS))
    ipe = int(ipe)
    step1_given = _first(given.get("pretrain_iterations"), _times(given.get("pretrain_epochs"), ipe))
    step2_given = _first(given.get("iterations"), _times(given.get("epochs"), ipe))
    # One step's budget given: the other keeps the paper's ratio to it (not the plan's full count).
    if step2_given is not None:
        i1 = step1_given if step1_given is not None else (0 if i1 <= 0 else max(1, round(STEP1_SHARE * step2_given)))
        i2 = step2_given
    elif step1_given is not None:
        i1, i2 = step1_given, (i2 if i1 <= 0 else max(1, round(step1_given / STEP1_SHARE)))
    epochs = int(given["epochs"]) if given.get("epochs") is not None else max(1, math.ceil(i2 / ipe))
    out = {"iterations_per_epoch": ipe, "epochs": epochs}
    if given.get("pretrain_epochs") is not None:
        out["pretrain_epochs"] = int(given["pretrain_epochs"])
    else:  # Step 1 runs exactly i1 iterations (its last epoch may be partial), not a rounded number of epochs
        out["pretrain_epochs"] = 0 if i1 <= 0 else max(1, math.ceil(i1 / ipe))
        if i1 > 0:
            out["pretrain_iterations"] = int(i1)
    if given.get("val_every") is None:
        out["val_every"] = max(1, math.ceil(epochs / VALIDATIONS))
    return out


def runs_step1(strategy: str, given: Mapping[str, Any]) -> bool:
    """Whether a plan for ``strategy`` gives Step 1 iterations: every strategy but scratch, and scratch
    when a Step-1 budget is given (its single stage then matches lwi's total); never with a Step-1
    budget of 0."""
    if given.get("pretrain_iterations") == 0 or given.get("pretrain_epochs") == 0:
        return False
    return str(strategy).lower() != "scratch" or bool(given.get("pretrain_epochs") or given.get("pretrain_iterations"))


# -- the plan -----------------------------------------------------------------------------------
@dataclass
class Plan:
    """A training plan: the settings it chose, the iterations, the estimates and why."""

    device: str
    strategy: str
    settings: Dict[str, Any]
    step1_iterations: int
    step2_iterations: int
    seconds: Dict[str, Optional[float]] = field(default_factory=dict)
    time_budget: Optional[float] = None
    memory_bytes: Optional[float] = None
    memory_budget: Optional[float] = None
    reasons: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)
    alternative: Optional[str] = None
    cases: Dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def lines(self) -> List[str]:
        """The human summary ``lwi plan`` and ``lwi train`` print."""
        s = self.settings
        params = ", ".join(f"{k} {v}" for k, v in (s.get("arch_params") or {}).items())
        head = f"Plan for {self.cases.get('train', '?')} training case(s)"
        if self.cases.get("validation"):
            head += f" and {self.cases['validation']} validation case(s)"
        lines = [head + f" on {self.device}" + (f", time budget {format_duration(self.time_budget)}" if self.time_budget else "") + ":"]
        rows = [
            ("strategy", self.strategy, "strategy"),
            ("network", f"{s.get('arch')}" + (f" ({params})" if params else ""), "arch"),
            ("spacing", " x ".join(f"{v:g}" for v in s["spacing"]) + " mm" if s.get("spacing") else "median", "spacing"),
            ("ROI", "x".join(str(v) for v in s.get("roi", ())) + f", batch {s.get('batch_size')}", "roi"),
            ("learning rate", f"{s.get('lr'):g} (AdamW, warmup then cosine)", "lr"),
            ("iterations", f"Step 1 {self.step1_iterations}, Step 2 {self.step2_iterations}"
             f" ({s.get('pretrain_epochs')} + {s.get('epochs')} epochs of {s.get('iterations_per_epoch')})", "budget"),
            ("augmentation", self.reasons.get("augmentation", ""), None),
        ]
        for name, value, key in rows:
            why = self.reasons.get(key) if key else None
            lines.append(f"  {name}: {value}" + (f"  [{why}]" if why else ""))
        est = self.seconds
        if est.get("total") is not None:
            lines.append(
                f"  estimated time: Step 1 {format_duration(est.get('step1'))}, Step 2 {format_duration(est.get('step2'))}, "
                f"validation {format_duration(est.get('validation'))}, preprocessing {format_duration(est.get('preprocessing'))}, "
                f"planning and files {format_duration((est.get('plan') or 0) + (est.get('other') or 0))}; "
                f"total {format_duration(est.get('total'))}"
            )
        if self.memory_bytes:
            lines.append(f"  estimated training memory: {self.memory_bytes / 2**30:.1f} GiB")
        for warning in self.warnings:
            lines.append(f"  warning: {warning}")
        if self.alternative:
            lines.append(f"  {self.alternative}")
        return lines


def default_network(device_kind: str) -> Tuple[str, Dict[str, Any]]:
    arch, params = ARCH_DEFAULTS["cuda" if device_kind == "cuda" else "cpu"]
    return arch, dict(params)


def make_plan(
    dataset: Any,
    given: Mapping[str, Any],
    *,
    device: Any = "auto",
    time_budget: Optional[float] = None,
    strategy: str = AUTO_STRATEGY,
    n_train: Optional[int] = None,
    n_validation: int = 0,
    fp: Any = None,
    probe: bool = True,
    memory_budget: Optional[float] = None,
    started: Optional[float] = None,
    unlabeled: bool = False,
) -> Plan:
    """The plan for ``dataset`` on ``device``; ``given`` are the options the user set (never changed).

    ``strategy`` ``"auto"`` is resolved here (:func:`lwi.strategy_choice.resolve_strategy`; ``unlabeled``: extra unlabelled
    images are given) and the plan is that of the strategy chosen; :attr:`Plan.strategy` is always a
    strategy's name.

    ``probe`` times a few iterations of the planned networks here (needed for a time budget and the
    estimates); without it the plan has no time estimates, and a CPU plan falls back to the GPU's
    fixed iteration counts unless a budget is given.
    ``started`` (``time.monotonic()`` when the command began): the time budget counts from then, so
    fingerprinting and the probe are paid out of it.
    """
    from lwi import probe as probes
    from lwi.data.fingerprint import fingerprint
    from lwi.devices import resolve_device

    started = time.monotonic() if started is None else started

    dev = resolve_device(device)
    kind = "cuda" if dev.type == "cuda" else "cpu"
    fp = fp if fp is not None else fingerprint(dataset, given.get("modality"))
    n_train = int(n_train if n_train is not None else fp.n_cases)
    given = {k: v for k, v in given.items() if v is not None}
    reasons: Dict[str, str] = {}
    warnings: List[str] = []
    requested = str(strategy).lower()
    # auto: planned (and probed) as lwi first; what the user gives and the budget decide (see choose_strategy).
    with_step1 = runs_step1("lwi" if requested == AUTO_STRATEGY else requested, given)

    arch = str(given.get("arch") or default_network(kind)[0]).lower()
    if "arch" not in given:
        params = {**default_network(kind)[1], **dict(given.get("arch_params") or {})}
        reasons["arch"] = "default for the " + ("GPU" if kind == "cuda" else "CPU") + " (see lwi/plan.py)"
    else:
        params = dict(given.get("arch_params") or {})
        reasons["arch"] = "given"
    cube = int(given.get("cube_size") or CUBE_SIZE)

    if given.get("spacing"):
        spacing = tuple(float(v) for v in given["spacing"])
        reasons["spacing"] = "given"
    else:
        spacing, reasons["spacing"] = target_spacing(fp)
    batch = int(given.get("batch_size") or BATCH_SIZE)

    mem_fn = None
    if kind == "cuda":
        mem_fn = probes.memory_estimator(arch, params, fp.channels, len(fp.labels) + 1, amp=given.get("amp", True) is not False)
        if memory_budget is None:
            memory_budget = probes.device_memory(dev) * 0.85
    if given.get("roi"):
        roi = tuple(int(v) for v in given["roi"])
        reasons["roi"] = "given"
    else:
        divisor, min_depth = roi_rules(arch, params, cube)
        roi, why = choose_roi(fp, spacing, divisor, min_depth, MAX_ROI_VOXELS[kind], mem_fn, memory_budget, batch)
        reasons["roi"] = "; ".join(why)
    memory = mem_fn(roi, batch) if mem_fn is not None else None

    n_val_windows = n_validation * probes.windows_per_case(fp, spacing, roi)
    rates = (
        probes.time_iterations(arch, params, roi, batch, fp.channels, len(fp.labels) + 1, dev, with_step1, cube_size=cube)
        if probe else None
    )

    if time_budget is None and kind == "cpu" and not _budget_given(given) and rates is not None:
        time_budget = float(CPU_DEFAULT_SECONDS)
        reasons["budget"] = f"the CPU default time budget ({format_duration(time_budget)}); set another with --time"
    seconds: Dict[str, Optional[float]] = {"plan": time.monotonic() - started, "preprocessing": fp.seconds * 2 + 1.0}
    if rates is not None:  # building the networks, writing about 10 checkpoints per step
        seconds["other"] = rates.get("build", 0.0) * 3 + 2 * VALIDATIONS * EVENT_SECONDS
    validation_seconds = None
    if rates is not None:
        per_case = n_val_windows * rates["window"] + EVENT_SECONDS
        validation_seconds = (VALIDATIONS + 1) * (n_validation * per_case + EVENT_SECONDS)
    time_limited = time_budget is not None and not _budget_given(given)
    overhead = sum(v for v in seconds.values() if v is not None) + (validation_seconds or 0.0)
    if time_limited:
        if rates is None:
            raise LWIError("A time budget needs the timing probe.")
        reasons.setdefault("budget", f"fits {format_duration(time_budget)} at the measured {rates['step2']:.2f} s per Step-2 iteration")
        if overhead > 0.5 * time_budget:
            warnings.append(
                f"validation and preprocessing take about {format_duration(overhead)} of the {format_duration(time_budget)}"
            )
    else:
        reasons.setdefault("budget", "given" if _budget_given(given) else (
            f"{GPU_STEP2_ITERATIONS} Step-2 iterations whatever the number of cases (MONAI's UNETR tutorial; nnU-Net uses 250,000), "
            f"Step 1 {STEP1_SHARE:.0%} of that (the paper's 800:5000 epochs)"
        ))

    def schedule(step1: bool) -> Tuple[Dict[str, int], int, int]:
        """The epoch settings, Step-1 and Step-2 iterations of the budget, with or without Step 1."""
        if time_limited:
            i1, i2 = split_budget(time_budget, rates.get("step1", 0.0), rates["step2"], overhead, step1)
        else:
            i2 = GPU_STEP2_ITERATIONS
            i1 = int(round(STEP1_SHARE * i2)) if step1 else 0
        epochs = {k: given.get(k, v) for k, v in budget_settings(i1, i2, given, n_train, batch).items()}
        ipe = epochs["iterations_per_epoch"]
        i1 = epochs.get("pretrain_iterations", epochs["pretrain_epochs"] * ipe) if step1 else 0
        return epochs, i1, epochs["epochs"] * ipe

    epochs, i1, i2 = schedule(with_step1)
    step1_given = _first(given.get("pretrain_iterations"), given.get("pretrain_epochs"))
    chosen, reasons["strategy"] = resolve_strategy(
        requested, step2_iterations=i2, step1_given=step1_given, unlabeled=unlabeled
    )
    if runs_step1(chosen, given) != with_step1:  # auto chose scratch: the whole budget to Step 2
        with_step1 = not with_step1
        epochs, i1, i2 = schedule(with_step1)
    settings: Dict[str, Any] = {
        "arch": arch, "arch_params": params, "roi": list(roi), "batch_size": batch, "spacing": list(spacing),
        "cube_size": cube, "lr": LEARNING_RATES.get(arch, PAPER_LR), **epochs,
    }
    reasons["lr"] = "given" if "lr" in given else (
        "SegResNet learns too slowly at the paper's 1e-4 on a few cases" if arch in LEARNING_RATES else "the paper's"
    )
    settings = {k: given.get(k, v) for k, v in settings.items()}
    if chosen == "scratch" and with_step1:
        i2, i1 = i2 + i1, 0  # the baseline runs Step 2 for both budgets
    if rates is not None:
        seconds["step1"] = i1 * rates.get("step1", 0.0)
        seconds["step2"] = i2 * rates["step2"]
        seconds["validation"] = validation_seconds
        seconds["total"] = sum(v for v in seconds.values() if v is not None)
    if i2 < MIN_STEP2_ITERATIONS:
        warnings.append(
            f"{i2} Step-2 iterations is below the {MIN_STEP2_ITERATIONS} recommended; labels may be learned poorly "
            "(give more --time, or use a GPU)"
        )
    reasons["augmentation"] = augmentation_text(roi, i1 > 0, given.get("step1_flips") == "all")
    alternative = None
    if kind == "cpu":
        g_arch, g_params = default_network("cuda")
        g_strategy = (choose_strategy(GPU_STEP2_ITERATIONS, step1_given, unlabeled)[0]
                      if requested == AUTO_STRATEGY else requested)
        g_step1 = int(round(STEP1_SHARE * GPU_STEP2_ITERATIONS)) if runs_step1(g_strategy, given) else 0
        alternative = (
            f"On a CUDA GPU the plan would train {g_arch} ({', '.join(f'{k} {v}' for k, v in g_params.items())}) for "
            + (f"{g_step1} + {GPU_STEP2_ITERATIONS}" if g_step1 else f"{GPU_STEP2_ITERATIONS}")
            + " iterations with a larger ROI when the images need it"
            + (f" (strategy auto: {g_strategy})." if requested == AUTO_STRATEGY else ".")
        )
    return Plan(
        device=str(dev), strategy=chosen, settings=settings, step1_iterations=int(i1), step2_iterations=int(i2),
        seconds=seconds, time_budget=time_budget, memory_bytes=memory, memory_budget=memory_budget, reasons=reasons,
        warnings=warnings, alternative=alternative, cases={"train": n_train, "validation": n_validation},
    )


def _first(*values: Any) -> Optional[int]:
    return next((int(v) for v in values if v is not None), None)


def _times(value: Any, factor: int) -> Optional[int]:
    return None if value is None else int(value) * factor


def _budget_given(given: Mapping[str, Any]) -> bool:
    return any(given.get(k) is not None for k in ("epochs", "pretrain_epochs", "iterations", "pretrain_iterations"))


def augmentation_text(roi: Sequence[int], step1: bool = True, step1_depth: bool = False) -> str:
    rot = "90-degree rotations in the axial plane, " if roi[0] == roi[1] else ""
    flips = "flips on every axis in Step 2" + (
        (" and Step 1 (depth too, as the authors' code)" if step1_depth else " and in-plane only in Step 1") if step1 else ""
    )
    return f"{flips}, {rot}intensity scale and shift"


def plan_options(
    data: Any,
    given: Mapping[str, Any],
    *,
    strategy: str = AUTO_STRATEGY,
    device: Any = "auto",
    time_budget: Optional[float] = None,
    probe: bool = True,
    started: Optional[float] = None,
    unlabeled: bool = False,
) -> Tuple[Dict[str, Any], Plan]:
    """``(training options, plan)``: the user's ``given`` options (Settings fields, plus ``iterations``
    and ``pretrain_iterations``) completed by the plan for the dataset folder ``data``."""
    from lwi.data.dataset import load_dataset
    from lwi.data.split import split_cases

    dataset = load_dataset(data, require_labels=True)
    seed = int(given.get("seed") or 0)
    val_fraction = given.get("val_fraction")
    train, held, _ = split_cases(dataset, seed, None if val_fraction is None else float(val_fraction))
    plan = make_plan(
        dataset, given, device=device, time_budget=time_budget, strategy=strategy, n_train=len(train),
        n_validation=len(held), probe=probe, started=started, unlabeled=unlabeled,
    )
    options = {k: v for k, v in given.items() if v is not None and k not in ("iterations", "pretrain_iterations")}
    for key in PLANNED + ("arch_params",):
        if key in plan.settings and options.get(key) is None:
            options[key] = plan.settings[key]
    for key in ("roi", "spacing"):
        if options.get(key) is not None:
            options[key] = tuple(options[key])
    return options, plan


def report_plan(progress: Any, plan: Plan) -> None:
    """Print the plan's summary and emit it as one ``plan`` event (JSON progress)."""
    for line in plan.lines():
        progress.log(line)
    progress.emit("plan", **plan.to_dict(), summary=plan.lines())
