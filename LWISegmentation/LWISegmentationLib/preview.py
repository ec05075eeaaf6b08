"""The Step-1 shuffle/mask preview of LWISegmentation (plain Python, no Slicer).

``lwi preview`` (lwi/preview.py) writes, for one volume, the preprocessed view, the shuffled view,
the shuffled-and-masked view, a ``subvolumes`` map (1 + the original sub-volume shown at each voxel)
and a cube ``mask``, all on the preprocessed grid with its true physical geometry, plus
``preview.json``. Here: the command's options (checked before a process starts), reading its
output, and the geometry the module shows (where each sub-volume lies, a one-line summary).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

INFO_FILE = "preview.json"
#: The views the module loads, in the order they are added to the scene.
VIEWS = ("shuffled", "shuffled_masked", "subvolumes")


def preview_options(
    num_subvolumes: Optional[int] = None,
    mask_ratio: float = 0.4,
    cube_size: int = 16,
    seed: Optional[int] = None,
    model: Optional[str] = None,
    device: str = "auto",
) -> Dict[str, Any]:
    """The ``lwi preview`` options (for :func:`LWICommon.cli_args.preview_command`), checked.

    ``num_subvolumes`` None: N follows the model (``model``) or the default UNETR at 96^3 (N = 6).
    ``seed`` None: a new random draw. Raises ValueError with one clear sentence for bad values.
    """
    if num_subvolumes is not None and int(num_subvolumes) < 1:
        raise ValueError(f"The number of sub-volumes must be at least 1, got {num_subvolumes}.")
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise ValueError(f"The mask ratio must be in [0, 1), got {mask_ratio}.")
    if int(cube_size) < 1:
        raise ValueError(f"The cube size must be at least 1 voxel, got {cube_size}.")
    options: Dict[str, Any] = {
        "subvolumes": int(num_subvolumes) if num_subvolumes is not None else None,
        "mask_ratio": float(mask_ratio),
        "cube_size": int(cube_size),
        "seed": int(seed) if seed is not None else new_seed(),
        "device": device,
    }
    if model:
        options["model"] = str(model)
    return options


def new_seed(rng: Optional[random.Random] = None) -> int:
    """A seed for a new random draw of the permutation and the mask."""
    return (rng or random.SystemRandom()).randrange(0, 2**31 - 1)


def read_preview(out_dir: str) -> Dict[str, Any]:
    """``preview.json`` of an ``lwi preview`` output folder, with ``paths``: view -> absolute file.

    Raises ValueError when the folder holds no complete preview.
    """
    path = os.path.join(out_dir, INFO_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"No preview was written to {out_dir}.")
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    paths = {name: os.path.join(out_dir, filename) for name, filename in (info.get("files") or {}).items()}
    missing = [v for v in VIEWS if v not in paths or not os.path.isfile(paths[v])]
    if missing:
        raise ValueError(f"The preview in {out_dir} lacks the view(s) {', '.join(missing)}.")
    info["paths"] = paths
    return info


@dataclass(frozen=True)
class SubvolumeSlot:
    """One slot of the shuffled view: axial slices ``first``..``last`` (inclusive, preprocessed grid)
    show the original sub-volume ``block`` (0-based), whose voxels the ``subvolumes`` map marks ``block + 1``."""

    slot: int
    block: int
    first: int
    last: int


def subvolume_slots(info: Dict[str, Any]) -> List[SubvolumeSlot]:
    """Where each sub-volume lies in the shuffled view, from ``preview.json``.

    Sub-volumes are ``subvolume_depth`` slices thick along the last axis; the last one is cut short
    where the depth was padded to a multiple of N.
    """
    depth = int(info["subvolume_depth"])
    slices = int(info["preprocessed_shape"][2])
    slots = []
    for slot, block in enumerate(info["permutation"]):
        first = slot * depth
        if first >= slices:
            break
        slots.append(SubvolumeSlot(slot, int(block), first, min(slices, first + depth) - 1))
    return slots


def boundary_slices(info: Dict[str, Any]) -> List[int]:
    """The axial slices (preprocessed grid) where one sub-volume ends and the next begins: the first
    slice of every slot after the first."""
    return [s.first for s in subvolume_slots(info)[1:]]


def summary(info: Dict[str, Any]) -> str:
    """One line for the module's status: N, the order, and how much is masked."""
    grid = info.get("mask_grid_shape") or []
    total = 1
    for g in grid:
        total *= int(g)
    order = " ".join(str(int(b) + 1) for b in info["permutation"])
    masked = int(info.get("masked_cubes", 0))
    share = f" ({100.0 * masked / total:.0f}%)" if total else ""
    return (
        f"{info['num_subvolumes']} sub-volumes of {info['subvolume_depth']} slices, shown in the order {order}; "
        f"{masked} of {total} cubes of {info['cube_size']} voxels masked{share}; seed {info.get('seed')}."
    )
