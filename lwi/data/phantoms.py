"""Synthetic abdominal CT phantoms for tests and ``lwi demo``.

Each phantom is an axial CT-like volume in Hounsfield units: air outside an elliptical body, a
subcutaneous fat ring, soft tissue, and organ-like structures (liver, spleen, kidneys, a vertebra)
with distinct CT-like intensities. Shapes, sizes and positions vary smoothly with the seed, and
Gaussian noise plus a slight blur (partial volume) make the task non-trivial yet learnable by a tiny
network in a few hundred iterations.

Structures are defined in coordinates normalised to the field of view, so any ``shape`` gives the
same anatomy (at 32^3 the kidneys are still a few voxels across). Geometry is plausible LPS: identity
direction (x to the patient's left, y posterior, z superior), the body centred on the x/y origin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

PHANTOM_LABELS: Dict[int, str] = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney",
    4: "vertebra",
}

# Mean HU per structure. Values follow portal-venous contrast CT, spread apart (spleen brighter than
# liver, kidneys brighter still) so a tiny network can tell them apart even under random flips.
_HU_AIR = -1000.0
_HU_FAT = -100.0
_HU_SOFT = 30.0
_HU = {1: 60.0, 2: 110.0, 3: 180.0, 4: 700.0}
_NOISE_HU = 10.0

# Ellipsoids in normalised coordinates u in [-1, 1] per axis (x: right->left, y: anterior->posterior,
# z: inferior->superior): label -> (centre, semi-axes). Painted in this order, later ones on top.
_ORGANS = [
    (1, (-0.35, -0.05, 0.30), (0.36, 0.34, 0.38)),  # liver: patient's right, upper abdomen
    (2, (0.48, 0.22, 0.35), (0.15, 0.20, 0.25)),  # spleen: left, posterior, upper
    (3, (-0.30, 0.35, -0.15), (0.12, 0.15, 0.26)),  # right kidney
    (3, (0.30, 0.35, -0.10), (0.12, 0.15, 0.26)),  # left kidney
]


def _grid(shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised voxel-centre coordinates, arrays indexed [x, y, z]."""
    axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def _smooth_warp(rng: np.random.Generator, u, v, w, amplitude: float):
    """A smooth random displacement: a few low-frequency sinusoids per axis."""
    out = []
    for base in (u, v, w):
        d = np.zeros_like(base)
        for _ in range(3):
            k = rng.uniform(0.5, 1.5, size=3) * np.pi
            phase = rng.uniform(0, 2 * np.pi)
            d += np.sin(k[0] * u + k[1] * v + k[2] * w + phase)
        out.append(base + amplitude / 3.0 * d)
    return out


def make_phantom(
    seed: int,
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (3.0, 3.0, 4.0),
) -> Tuple[sitk.Image, sitk.Image]:
    """Build one synthetic abdominal CT and its label map.

    Args:
        seed: the phantom's seed; different seeds give different shapes, positions and noise.
        shape: size in voxels along x, y, z (SimpleITK order).
        spacing: voxel spacing in mm along x, y, z.

    Returns:
        ``(image, label)``: an int16 SimpleITK image in HU and a uint8 label map on the same grid,
        with values from :data:`PHANTOM_LABELS`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"phantom shape must be 3 sizes of at least 4 voxels, got {shape}")
    rng = np.random.default_rng(seed)
    u, v, w = _grid(shape)
    # Warp the coordinates once: every structure deforms smoothly and coherently.
    u, v, w = _smooth_warp(rng, u, v, w, amplitude=0.05)

    hu = np.full(shape, _HU_AIR, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    # Body: an elliptic cylinder, slightly varying in size; fat ring, then soft tissue inside.
    bx, by = 0.86 * rng.uniform(0.93, 1.05), 0.66 * rng.uniform(0.93, 1.05)
    by_centre = 0.05
    r_body = (u / bx) ** 2 + ((v - by_centre) / by) ** 2
    hu[r_body <= 1.0] = _HU_FAT
    fat = rng.uniform(0.84, 0.90)  # thickness of the fat ring varies between patients
    hu[r_body <= fat**2] = _HU_SOFT

    for value, centre, semi in _ORGANS:
        c = np.asarray(centre) + rng.uniform(-0.05, 0.05, size=3)
        s = np.asarray(semi) * rng.uniform(0.85, 1.15, size=3)
        angle = rng.uniform(-0.3, 0.3)  # in-plane rotation
        ca, sa = np.cos(angle), np.sin(angle)
        du, dv = u - c[0], v - c[1]
        ru, rv = ca * du + sa * dv, -sa * du + ca * dv
        inside = (ru / s[0]) ** 2 + (rv / s[1]) ** 2 + ((w - c[2]) / s[2]) ** 2 <= 1.0
        inside &= r_body <= fat**2
        hu[inside] = _HU[value] + rng.uniform(-5.0, 5.0)
        label[inside] = value

    # Vertebra: a posterior midline column through the whole scan.
    vc = (rng.uniform(-0.03, 0.03), 0.47 + rng.uniform(-0.03, 0.03))
    vr = 0.10 * rng.uniform(0.9, 1.1)
    bone = ((u - vc[0]) ** 2 + (v - vc[1]) ** 2 <= vr**2) & (r_body <= fat**2)
    hu[bone] = _HU[4] + rng.uniform(-50.0, 50.0)
    label[bone] = 4

    # Partial-volume blur, then scanner noise.
    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    hu += rng.normal(0.0, _NOISE_HU, size=shape).astype(np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    image = sitk.GetImageFromArray(np.ascontiguousarray(hu.transpose(2, 1, 0)))
    seg = sitk.GetImageFromArray(np.ascontiguousarray(label.transpose(2, 1, 0)))
    spacing = tuple(float(s) for s in spacing)
    # Body centred on x/y = 0, table position (z) somewhere around the abdomen.
    origin = (
        -(shape[0] - 1) * spacing[0] / 2.0,
        -(shape[1] - 1) * spacing[1] / 2.0,
        -300.0 - (shape[2] - 1) * spacing[2] / 2.0,
    )
    for img in (image, seg):
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image, seg


def write_phantom_dataset(
    out_dir: Union[str, Path],
    n_cases: int,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] = (3.0, 3.0, 4.0),
) -> Path:
    """Write ``n_cases`` phantoms as an MSD-layout dataset folder and return its path.

    Case ``i`` is ``make_phantom(seed + i)``, so ``make_phantom(seed + n_cases)`` is a phantom the
    dataset does not contain. The folder holds ``dataset.json`` (modality CT, labels, training list),
    ``imagesTr/phantom_XXX.nii.gz`` and ``labelsTr/phantom_XXX.nii.gz``.
    """
    from lwi.io import write_sitk_atomic
    from lwi.outputs import write_text

    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n_cases):
        image, label = make_phantom(seed + i, shape=shape, spacing=spacing)
        name = f"phantom_{i:03d}.nii.gz"
        write_sitk_atomic(image, out / "imagesTr" / name)
        write_sitk_atomic(label, out / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "LWI phantoms",
        "description": "Synthetic abdominal CT phantoms (lwi.data.phantoms)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    write_text(out / "dataset.json", json.dumps(meta, indent=2) + "\n")
    return out
