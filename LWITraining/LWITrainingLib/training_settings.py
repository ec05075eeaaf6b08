"""The LWITraining settings and the ``lwi train`` / ``lwi preview`` command lines they give (plain Python).

One source of defaults: every setting left at ``auto`` (None here) is not passed to ``lwi train``, so
the core's plan (``lwi plan``: network, ROI, spacing, batch, iterations from the data, the device and
the time budget) decides it, exactly as on the command line. :func:`plan_args` is the ``lwi plan``
command line that shows that plan before training, from the same options as :func:`train_args` (the
GUI process never imports torch: the logic runs it in the background); :func:`plan_text` is what the
panel shows of its ``plan`` event.
Explicit values always win. Mask ratio 0.4 with 16^3 cubes and AdamW at 1e-4 are the paper's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from LWICommon import cli_args
from LWICommon.vocabulary import names, records
from LWICommon.vocabulary import training_options as table

#: The names the panel offers: exactly the core's (lwi/names.py, the registries' keys); "auto" lets the
#: core's plan choose the network, and the strategy (scratch unless Step 1 is asked for).
STRATEGIES: Tuple[str, ...] = names.STRATEGY_CHOICES
STRATEGY_DESCRIPTIONS: Dict[str, str] = names.STRATEGY_DESCRIPTIONS
ARCHITECTURES: Tuple[str, ...] = names.ARCHITECTURE_CHOICES
#: The options an improvement takes from its parent model instead of the panel (``lwi train --from``
#: refuses others than the parent's).
IMPROVE_KEEPS: Tuple[str, ...] = ("arch", "roi", "spacing", "modality", "pretrain_epochs", "mask_ratio", "cube_size")
#: The text a spin box shows for 0 = "the plan decides".
AUTO_TEXT = "auto (plan)"
INTENSITY_PRESETS: Tuple[str, ...] = names.MODALITY_CHOICES
DEVICES: Tuple[str, ...] = names.DEVICE_CHOICES
#: What the Step-1 preview uses for an "auto" network and ROI when no current plan is known (its
#: status then says so, see :func:`preview_note`); spacing "auto" then keeps the image's own.
PREVIEW_STAND_INS: Dict[str, Any] = {"arch": "segresnet", "roi": (64, 64, 64)}


#: The panel's field for each key of the option table (lwi/training_options.py) it sets.
FIELDS: Dict[str, str] = {
    "arch": "architecture", "pretrain_epochs": "pretrain_epochs", "epochs": "epochs", "roi": "roi", "spacing": "spacing",
    "modality": "intensity", "lr": "learning_rate", "batch_size": "batch_size", "mask_ratio": "mask_ratio",
    "cube_size": "cube_size", "seed": "seed", "time": "time_budget",
}
#: The keys whose spin box shows 0 as :data:`AUTO_TEXT`: 0 there leaves the value to the plan.
AUTO_AT_ZERO = ("pretrain_epochs", "epochs", "lr", "batch_size", "cube_size")


@dataclass
class TrainingSettings:
    """What the LWITraining panel sets, with the defaults it starts from."""

    architecture: str = "auto"
    strategy: str = names.DEFAULT_STRATEGY
    pretrain_epochs: Optional[int] = None
    epochs: Optional[int] = None
    roi: Optional[Tuple[int, int, int]] = None
    spacing: Optional[Tuple[float, float, float]] = None
    intensity: str = "auto"
    device: str = "auto"
    model_name: str = "model"
    learning_rate: Optional[float] = None
    mask_ratio: float = 0.4
    cube_size: Optional[int] = None
    batch_size: Optional[int] = None
    seed: int = 0
    time_budget: str = ""  # e.g. "20m": both steps' iterations fit it (lwi train --time)
    from_model: str = ""  # a finished model to improve with the cases (lwi train --from)

    def problems(self) -> List[str]:
        """What keeps these settings from being used (empty when fine), one sentence each: the option
        table's range checks (``lwi/training_options.py``, those of ``lwi train`` and the Python API),
        plus what only the panel asks (a strategy, a model name, a mask cube that divides the ROI)."""
        found = [] if self.strategy in STRATEGIES else [f"Unknown strategy '{self.strategy}'."]
        given = self._given()
        found += table.problems(given)
        cube, roi = given.get("cube_size") or 16, given.get("roi")
        if not found and roi is not None and any(int(r) % int(cube) for r in roi):
            found.append(f"The mask cube size ({cube}) must divide the ROI {list(roi)}.")
        if not self.model_name.strip():
            found.append("Name the model.")
        return found

    def _given(self) -> Dict[str, Any]:
        """The panel's values under the option table's keys, left out where the plan decides ("auto",
        empty, or 0 in a spin box)."""
        given = {}
        for key, name in FIELDS.items():
            value = getattr(self, name)
            value = value.strip() if isinstance(value, str) else value
            if value is None or value in ("auto", "") or (key in AUTO_AT_ZERO and value == 0):
                continue
            given[key] = value
        return given

    def train_options(self) -> Dict[str, Any]:
        """``lwi train`` options (for :func:`LWICommon.cli_args.train_command`), without data, out,
        strategy and device: the given values, checked and parsed by the option table (the time budget
        as typed); improving (``from_model``), without what the parent decides (:data:`IMPROVE_KEEPS`)."""
        given = self._given()
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in table.check_values(given).items()}
        if "time" in given:
            options["time"] = given["time"]
        if self.from_model:  # improving: the parent's network, preprocessing and no Step 1 (lwi.improve)
            for key in IMPROVE_KEEPS:
                options.pop(key, None)
            options["from"] = self.from_model
        return options

    def preview_options(self, plan: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``lwi preview`` options that show what Step 1 will see with these settings: the ``auto``
        network, ROI, cube size and spacing from ``plan`` (the ``settings`` of a ``plan`` event that is
        current for these settings and cases), else :data:`PREVIEW_STAND_INS`."""
        planned = {**PREVIEW_STAND_INS, **dict(plan or {})}
        arch = planned["arch"] if self.architecture == "auto" else self.architecture
        roi = self.roi or tuple(planned["roi"])
        return {
            "arch": arch,
            "roi": [int(r) for r in roi],
            "mask_ratio": float(self.mask_ratio),
            "cube_size": int(self.cube_size or planned.get("cube_size") or 16),
            "spacing": [float(s) for s in self.spacing] if self.spacing else planned.get("spacing"),
            "modality": self.intensity,
            "seed": int(self.seed),
        }

    def to_dict(self) -> Dict[str, Any]:
        return records.to_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingSettings:
        return records.from_dict(cls, values)


def preview_note(settings: TrainingSettings, plan: Optional[Mapping[str, Any]] = None) -> str:
    """The preview's status line: where the network, ROI and spacing it shows come from when they
    are "auto" (``plan`` as for :meth:`TrainingSettings.preview_options`); empty when all are given."""
    options = settings.preview_options(plan)
    shown = []
    if settings.architecture == "auto":
        shown.append(f"network {options['arch']}")
    if not settings.roi:
        shown.append("ROI " + "x".join(str(r) for r in options["roi"]))
    if not settings.spacing:
        spacing = options.get("spacing")
        shown.append(f"spacing {format_spacing(spacing)} mm" if spacing else "the image's own spacing")
    if not shown:
        return ""
    if plan is not None:
        return "From the plan shown: " + ", ".join(shown) + "."
    return (
        "No current plan: this preview stands in " + ", ".join(shown) + " for the 'auto' settings, which "
        "Train's plan may set otherwise. Show plan, then preview again, to see what Train will use."
    )


def run_options(settings: TrainingSettings) -> Dict[str, Any]:
    """The options ``lwi train`` and ``lwi plan`` both get for these settings (all but data, output,
    resume and overwrite): one source, so the plan shown is the plan of the run Train starts."""
    strategy = None if settings.strategy == names.AUTO_STRATEGY or settings.from_model else settings.strategy  # auto: the plan's
    return {"strategy": strategy, "device": settings.device, **settings.train_options()}


def plan_args(settings: TrainingSettings, data_dir: str, python: Optional[str] = None, probe: bool = True) -> List[str]:
    """The ``lwi plan ... --progress json`` command line for these settings (what ``lwi train`` would
    do); ``probe=False`` skips the timing probe (no time estimates)."""
    options = {"data": data_dir, **run_options(settings), "no_probe": not probe}
    return cli_args.lwi_command("plan", options=options, python=python)


def plan_text(event: Mapping[str, Any]) -> str:
    """What the panel shows of a ``plan`` event (``lwi plan``, or ``lwi train`` before it trains):
    its summary lines, as the command line prints them (docs/contracts.md)."""
    return "\n".join(str(line) for line in event.get("summary") or [])


def warning_text(event: Mapping[str, Any]) -> str:
    """The line the panel shows for a ``warning`` event (e.g. a label not being learned)."""
    return "Warning: " + str(event.get("message", ""))


def parse_spacing(text: str) -> Optional[Tuple[float, float, float]]:
    """``""``/``"auto"`` -> None (the cases' median); ``"1.5"`` -> isotropic; ``"1.5 1.5 2"`` or
    ``"1.5, 1.5, 2"`` -> that spacing. Raises ValueError for anything else."""
    text = (text or "").strip().lower()
    if text in ("", "auto", "median"):
        return None
    parts = [p for p in re.split(r"[\s,x;]+", text) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"Cannot read the spacing '{text}': give 1 or 3 numbers in mm, or leave it empty.") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise ValueError(f"Cannot read the spacing '{text}': give 1 or 3 positive numbers in mm.")
    return (values[0], values[1], values[2])


def format_spacing(spacing: Optional[Sequence[float]]) -> str:
    return "" if not spacing else " ".join(f"{s:g}" for s in spacing)


def train_args(
    settings: TrainingSettings,
    data_dir: str,
    output_model: str,
    resume: bool = False,
    overwrite: bool = False,
    python: Optional[str] = None,
) -> List[str]:
    """The whole ``lwi train ... --progress json`` command line for these settings.

    ``resume`` continues the interrupted run that wrote ``output_model``'s checkpoints (the core
    keeps that run's settings; only the numbers of epochs may change); ``overwrite`` replaces an
    earlier run's files.
    """
    options = run_options(settings)
    strategy, device = options.pop("strategy"), options.pop("device")
    options["resume"] = bool(resume)
    options["overwrite"] = bool(overwrite) and not resume
    return cli_args.train_command(data_dir, output_model, strategy=strategy, device=device, options=options, python=python)
