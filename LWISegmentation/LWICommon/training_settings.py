"""The LWITraining settings and the ``lwi train`` / ``lwi preview`` command lines they give (plain Python).

Defaults are meant for a few cases on one GPU: UNETR (the paper's network) at a 96^3 ROI, LWI
initialisation, 100 Step-1 and 300 Step-2 epochs, AdamW at 1e-4, mask ratio 0.4 with 16^3 cubes.
The spacing is the cases' median unless given; the intensity preset picks the CT window or the MR
z-score (``auto``: from the dataset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from LWICommon import cli_args
from LWICommon.vocabulary import names, records

#: The names the panel offers: exactly the core's (lwi/names.py, the registries' keys).
STRATEGIES: Tuple[str, ...] = names.STRATEGY_NAMES
STRATEGY_DESCRIPTIONS: Dict[str, str] = names.STRATEGY_DESCRIPTIONS
ARCHITECTURES: Tuple[str, ...] = names.ARCHITECTURE_NAMES
INTENSITY_PRESETS: Tuple[str, ...] = names.MODALITY_CHOICES
DEVICES: Tuple[str, ...] = names.DEVICE_CHOICES


@dataclass
class TrainingSettings:
    """What the LWITraining panel sets, with the defaults it starts from."""

    architecture: str = names.DEFAULT_ARCHITECTURE
    strategy: str = names.DEFAULT_STRATEGY
    pretrain_epochs: int = 100
    epochs: int = 300
    roi: Tuple[int, int, int] = (96, 96, 96)
    spacing: Optional[Tuple[float, float, float]] = None
    intensity: str = "auto"
    device: str = "auto"
    model_name: str = "model"
    learning_rate: float = 1e-4
    mask_ratio: float = 0.4
    cube_size: int = 16
    batch_size: int = 2
    seed: int = 0

    def problems(self) -> List[str]:
        """What keeps these settings from being used (empty when fine), one sentence each."""
        found = []
        if self.architecture not in ARCHITECTURES:
            found.append(f"Unknown network '{self.architecture}'.")
        if self.strategy not in STRATEGIES:
            found.append(f"Unknown strategy '{self.strategy}'.")
        if len(self.roi) != 3 or min(self.roi) < 16:
            found.append("The ROI needs three sizes of at least 16 voxels.")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            found.append("The target spacing needs three positive values (mm).")
        if self.intensity not in INTENSITY_PRESETS:
            found.append(f"Unknown intensity preset '{self.intensity}'.")
        if self.pretrain_epochs < 1 or self.epochs < 1:
            found.append("Both steps need at least one epoch.")
        if not 0.0 <= self.mask_ratio < 1.0:
            found.append("The mask ratio must be at least 0 and below 1.")
        if self.cube_size < 1 or any(r % self.cube_size for r in self.roi):
            found.append(f"The mask cube size ({self.cube_size}) must divide the ROI {list(self.roi)}.")
        if self.learning_rate <= 0 or self.batch_size < 1:
            found.append("The learning rate must be positive and the batch size at least 1.")
        if not self.model_name.strip():
            found.append("Name the model.")
        return found

    def train_options(self) -> Dict[str, Any]:
        """``lwi train`` options (for :func:`LWICommon.cli_args.train_command`), without data, out,
        strategy and device."""
        options: Dict[str, Any] = {
            "arch": self.architecture,
            "pretrain_epochs": int(self.pretrain_epochs),
            "epochs": int(self.epochs),
            "roi": [int(r) for r in self.roi],
            "spacing": [float(s) for s in self.spacing] if self.spacing else None,
            "modality": None if self.intensity == "auto" else self.intensity,
            "lr": float(self.learning_rate),
            "batch_size": int(self.batch_size),
            "mask_ratio": float(self.mask_ratio),
            "cube_size": int(self.cube_size),
            "seed": int(self.seed),
        }
        return options

    def preview_options(self) -> Dict[str, Any]:
        """``lwi preview`` options that show what Step 1 will see with these settings."""
        return {
            "arch": self.architecture,
            "roi": [int(r) for r in self.roi],
            "mask_ratio": float(self.mask_ratio),
            "cube_size": int(self.cube_size),
            "spacing": [float(s) for s in self.spacing] if self.spacing else None,
            "modality": self.intensity,
            "seed": int(self.seed),
        }

    def to_dict(self) -> Dict[str, Any]:
        return records.to_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingSettings:
        return records.from_dict(cls, values)


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
    options = settings.train_options()
    options["resume"] = bool(resume)
    options["overwrite"] = bool(overwrite) and not resume
    return cli_args.train_command(
        data_dir, output_model, strategy=settings.strategy, device=settings.device, options=options, python=python
    )
