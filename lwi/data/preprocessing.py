"""Preprocessing: ONE code path for training and inference, built from MONAI dictionary transforms.

Order (each step invertible by MONAI, so inference can map label maps back to the input grid):

1. ``CropForegroundd``: crop to the foreground first, so later steps touch fewer voxels. Foreground is
   HU above the lower CT window bound for CT (air and scanner padding are out), non-zero for MR.
2. ``Orientationd``: reorient to RAS (or ``config.orientation``).
3. ``Spacingd``: resample to ``config.spacing`` (bilinear for the image, nearest for the label).
4. Intensity: CT is clipped to ``ct_window`` HU and scaled to [0, 1] (``ScaleIntensityRanged``);
   MR gets a per-volume z-score (``NormalizeIntensityd``).

All transforms run on the device the MetaTensors are on, so with CUDA preprocessing happens on the GPU.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, Optional, Tuple, Union

import numpy as np

from lwi.errors import LWIError
from lwi.names import MODALITIES

if TYPE_CHECKING:
    import SimpleITK as sitk
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose

    from lwi.data.dataset import Case

_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass
class PreprocessConfig:
    """How volumes are prepared for the network; stored in model bundles (``to_dict``/``from_dict``).

    Attributes:
        orientation: axis codes of the network's grid (MONAI ``Orientationd``), "RAS".
        spacing: target voxel spacing in mm along x, y, z of that grid; None keeps each volume's own.
        modality: "CT" (HU window scaled to [0, 1]) or "MR" (per-volume z-score).
        ct_window: the HU range kept for CT, scaled to [0, 1].
        crop_foreground: crop each volume to its foreground bounding box first.
    """

    orientation: str = "RAS"
    spacing: Optional[Tuple[float, float, float]] = None
    modality: str = "CT"
    ct_window: Tuple[float, float] = (-175.0, 250.0)
    crop_foreground: bool = True
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modality = str(self.modality).upper()
        if self.modality not in MODALITIES:
            raise LWIError(f"Unknown modality {self.modality!r}; use CT or MR.")
        if self.spacing is not None:
            spacing = tuple(float(s) for s in self.spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise LWIError(f"The spacing must be three positive numbers in mm, got {self.spacing}.")
            self.spacing = spacing
        low, high = (float(v) for v in self.ct_window)
        if not low < high:
            raise LWIError(f"The CT window must be LOW HIGH with LOW < HIGH, got {self.ct_window}.")
        self.ct_window = (low, high)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-able dict (tuples as lists)."""
        d = asdict(self)
        d["spacing"] = list(self.spacing) if self.spacing is not None else None
        d["ct_window"] = list(self.ct_window)
        if not d["extra"]:
            del d["extra"]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; keys this version does not know are kept in ``extra``."""
        known = {"orientation", "spacing", "modality", "ct_window", "crop_foreground"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = dict(d.get("extra", {}))
        extra.update({k: v for k, v in d.items() if k not in known and k != "extra"})
        return cls(**kwargs, extra=extra)


def median_spacing(cases: Iterable[Union[Case, Any]]) -> Tuple[float, float, float]:
    """The per-axis median spacing of the cases' images, along the axes of the RAS grid.

    Only image headers are read. Each image's spacing is permuted to RAS axis order first, so
    volumes acquired in different orientations (axial, sagittal) are compared axis by axis.
    """
    from lwi.io import affine_ras, read_image, read_image_information

    spacings = []
    for case in cases:
        path = getattr(case, "image", case)
        info = read_image(path) if _is_dir(path) else read_image_information(path)
        affine = affine_ras(info) if info.GetDimension() == 3 else _affine_3d(info)
        spacings.append(ras_spacing(affine))
    if not spacings:
        raise LWIError("No cases to compute a median spacing from.")
    return tuple(float(v) for v in np.median(np.asarray(spacings), axis=0))


def _is_dir(path: Any) -> bool:
    from pathlib import Path

    return Path(path).is_dir()


def _affine_3d(reader) -> np.ndarray:
    """RAS affine of the first three axes of a 4D header (a 3D volume with a singleton 4th axis)."""
    direction = np.asarray(reader.GetDirection()).reshape(4, 4)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(reader.GetSpacing()[:3])
    affine[:3, 3] = reader.GetOrigin()[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def ras_spacing(affine: np.ndarray) -> Tuple[float, float, float]:
    """Voxel spacing along R, A, S of a 4x4 RAS affine (:func:`lwi.io.affine_ras`).

    Each array axis's spacing goes to the world axis it follows, as ``Orientationd`` will order them.
    """
    import nibabel.orientations as nio

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    ornt = nio.io_orientation(affine)  # row i: the world axis that array axis i follows
    out = np.zeros(3)
    for axis, (world, _flip) in enumerate(ornt):
        out[int(world)] = spacing[axis]
    return tuple(out)


_ras_spacing = ras_spacing  # the earlier private name, still imported elsewhere


def _foreground(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Foreground mask for CropForegroundd; all voxels when nothing passes (never an empty crop)."""
    import torch

    mask = x > threshold
    return mask if bool(mask.any()) else torch.ones_like(mask)


def build_transforms(config: PreprocessConfig, with_label: bool) -> Compose:
    """The MONAI ``Compose`` of dictionary transforms on keys "image" (and "label").

    It works on MetaTensors on CPU or CUDA. The spatial steps are invertible: ``Compose.inverse`` on
    ``{"label": ...}`` alone (keys may be missing), or MONAI's ``Invertd(keys="pred", transform=...,
    orig_keys="image", nearest_interp=True)`` for a prediction on the preprocessed image's grid.
    """
    from monai.transforms import (
        Compose,
        CropForegroundd,
        NormalizeIntensityd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"] if with_label else ["image"]
    transforms = []
    if config.crop_foreground:
        threshold = config.ct_window[0] if config.modality == "CT" else 0.0
        transforms.append(
            CropForegroundd(
                keys=keys,
                source_key="image",
                select_fn=functools.partial(_foreground, threshold=threshold),
                allow_smaller=True,
                allow_missing_keys=True,
            )
        )
    # Explicit labels: the same behaviour across MONAI versions (and no deprecation warning).
    transforms.append(
        Orientationd(keys=keys, axcodes=config.orientation, labels=_AXIS_LABELS, allow_missing_keys=True)
    )
    if config.spacing is not None:
        modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
        transforms.append(
            Spacingd(keys=keys, pixdim=config.spacing, mode=modes, dtype=np.float32, allow_missing_keys=True)
        )
    if config.modality == "CT":
        low, high = config.ct_window
        transforms.append(
            ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
        )
    else:
        transforms.append(NormalizeIntensityd(keys="image", channel_wise=True))
    return Compose(transforms)


def preprocess(
    image: Union[str, Any, sitk.Image],
    label: Union[str, Any, sitk.Image, None] = None,
    config: Optional[PreprocessConfig] = None,
    device: Union[str, torch.device] = "cpu",
    transforms: Optional[Compose] = None,
) -> Tuple[MetaTensor, Optional[MetaTensor]]:
    """Read (if given paths) and preprocess one volume, and optionally its label map.

    Args:
        image: a path (file or DICOM folder) or a SimpleITK image.
        label: the label map on the image's grid, or None.
        config: the preprocessing settings.
        device: where the work happens and the results live.
        transforms: a prebuilt :func:`build_transforms` (saves rebuilding it per case).

    Returns:
        ``(image [1, X, Y, Z] float32, label [1, X, Y, Z] float32 integer-valued or None)`` as MetaTensors
        (their ``applied_operations`` let MONAI invert the spatial steps).
    """
    from lwi.io import image_to_metatensor, read_image

    if config is None:
        raise LWIError("preprocess needs a PreprocessConfig.")
    img = image if _is_sitk(image) else read_image(image)
    data = {"image": image_to_metatensor(img).to(device)}
    if label is not None:
        lab = label if _is_sitk(label) else read_image(label)
        if lab.GetSize() != img.GetSize():
            raise LWIError(f"The label map size {lab.GetSize()} differs from the image size {img.GetSize()}.")
        data["label"] = image_to_metatensor(lab).to(device)
    if transforms is None:
        transforms = build_transforms(config, with_label=label is not None)
    out = transforms(data)
    return out["image"], out.get("label")


def background_value(image: Any) -> float:
    """The intensity beyond a preprocessed image's border: its minimum (air in a CT window, the
    background of a z-scored MR). Training crops and sliding windows of volumes smaller than the ROI
    are both padded with it: a network trained on one padding and run on another fails on such volumes
    (MONAI's sliding window pads with 0 by default, the mean intensity of a z-scored MR)."""
    return float(image.min())


def _is_sitk(obj: Any) -> bool:
    return type(obj).__module__.startswith("SimpleITK")

