"""Degenerate inputs, decided once and applied alike in ``lwi train``, ``lwi segment`` and ``lwi evaluate``.

* A constant image (every voxel the same value, e.g. all zeros) is refused: it carries no
  information, intensity normalisation divides by its zero spread, and a model trained or run on it
  learns or predicts nothing but the position of the crop.
* An extremely anisotropic voxel (longest side more than :data:`MAX_ANISOTROPY` times the shortest,
  e.g. 0.1 x 0.1 x 50 mm) is refused: resampled to the training spacing it becomes a sliver of a
  few voxels along one axis, or thousands of interpolated copies of one slice.
* A volume smaller than the training crop (ROI) after resampling is accepted with a warning: it is
  padded, which is how small structures (hippocampus crops) are trained, but a user should know.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from lwi.errors import LWIError
from lwi.names import MAX_ANISOTROPY


def image_problems(image: sitk.Image) -> List[str]:
    """The reasons ``image`` cannot be trained on or segmented (empty when it is usable)."""
    problems = []
    spacing = [float(s) for s in image.GetSpacing()]
    if min(spacing) > 0 and max(spacing) / min(spacing) > MAX_ANISOTROPY:
        problems.append(
            f"its voxels are {' x '.join(f'{s:g}' for s in spacing)} mm, more than {MAX_ANISOTROPY:g} times "
            "longer along one axis than another (resampling would turn it into a sliver)"
        )
    array = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(array)), float(np.max(array))
    if low == high:
        problems.append(f"every voxel has the value {low:g} (a constant image holds nothing to segment)")
    return problems


def check_image(image: sitk.Image, what: str) -> None:
    """Refuse a degenerate image (see the module docstring) with one sentence naming ``what``."""
    problems = image_problems(image)
    if problems:
        raise LWIError(f"{what} cannot be used: {'; '.join(problems)}.")


def smaller_than_roi(shape: Sequence[int], roi: Sequence[int]) -> bool:
    """True when a preprocessed volume of ``shape`` is smaller than the crop/window ``roi`` along an axis."""
    return any(int(s) < int(r) for s, r in zip(shape, roi))


def padding_note(names: Sequence[str], roi: Sequence[int]) -> str:
    """The warning for volumes smaller than the ROI (padded with the background value)."""
    shown = ", ".join(list(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{len(names)} volume(s) are smaller than the ROI {list(roi)} after resampling ({shown}); "
        "they are padded with background, which is fine for small structures."
    )
