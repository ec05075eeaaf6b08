"""Preview of LWI Step 1: what the network sees when it learns its initial weights.

The image is preprocessed exactly as in training (:func:`lwi.data.preprocessing.preprocess`), then
Step 1's :class:`~lwi.transformation.TransformationModule` is applied to the WHOLE preprocessed volume:
its depth (the last, superior axis of the RAS grid) is split into N sub-volumes that are shuffled, and
random cubes are masked to 0. The views are returned on the preprocessed grid with its true physical
geometry, so they overlay the original image in Slicer or ITK-SNAP.

Sizes that N or the cube edge do not divide: the depth is padded (edge-replicated, at the superior
end) to a multiple of N before shuffling and cropped back afterwards; the cube grid covers the volume
with ``ceil(size / cube)`` cubes per axis and is cropped to the volume. ``info["padding"]`` records
the padding so the shuffle can be reproduced exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

import SimpleITK as sitk

from lwi.errors import LWIError

if TYPE_CHECKING:
    from lwi.data.preprocessing import PreprocessConfig

# Files written by write_preview, in this order (the Slicer module loads them by these names).
FILES = {
    "preprocessed": "preprocessed.nii.gz",
    "shuffled": "shuffled.nii.gz",
    "shuffled_masked": "shuffled_masked.nii.gz",
    "subvolumes": "subvolumes.nii.gz",
    "mask": "mask.nii.gz",
}
INFO_FILE = "preview.json"


def guess_modality(image: sitk.Image) -> str:
    """"CT" when the image holds air-like values (HU below -500), else "MR"."""
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return "CT" if stats.GetMinimum() <= -500.0 else "MR"


def subvolumes_for(arch: str, roi_size: Sequence[int], params: Optional[Dict[str, Any]] = None) -> int:
    """N for an architecture and training ROI: the depth of its bottleneck grid (UNETR at 96^3: 6)."""
    import torch

    from lwi.architectures import build

    try:
        with torch.device("meta"):  # no weights are allocated: only the geometry is needed
            return int(build(arch, 1, 2, roi_size, params=params).num_subvolumes)
    except (RuntimeError, NotImplementedError):  # some MONAI constructors need real tensors
        return int(build(arch, 1, 2, roi_size, params=params).num_subvolumes)


def make_preview(
    image: sitk.Image,
    config: PreprocessConfig,
    num_subvolumes: int,
    mask_ratio: float = 0.4,
    cube_size: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> Dict[str, Any]:
    """Build the Step-1 views of ``image``.

    Args:
        image: the input volume (SimpleITK, any geometry).
        config: the preprocessing used in training.
        num_subvolumes: N, the number of axial sub-volumes.
        mask_ratio: fraction of cubes masked.
        cube_size: mask cube edge in voxels (of the preprocessed grid).
        seed: seeds the permutation and the mask.
        device: where preprocessing and the transformation run.

    Returns:
        ``{"images": {name: sitk.Image on the preprocessed grid}, "info": {...}}`` with images
        ``preprocessed``, ``shuffled``, ``shuffled_masked``, ``subvolumes`` (uint8: 1 + the original
        sub-volume shown at each voxel of the shuffled view) and ``mask`` (uint8: 1 where masked);
        ``info`` holds the permutation (slot j shows original sub-volume ``permutation[j]``), N, the
        mask ratio, the cube size, the boolean cube grid ``mask_grid[gx][gy][gz]``, the padding and
        the preprocessing.
    """
    import torch
    import torch.nn.functional as F

    from lwi.data.preprocessing import preprocess
    from lwi.io import metatensor_to_image
    from lwi.transformation import TransformationModule, mask_to_voxels, shuffle

    n = int(num_subvolumes)
    module = TransformationModule(n, mask_ratio=mask_ratio, cube_size=cube_size, mask_value=0.0)
    pre, _ = preprocess(image, None, config, device=device)
    affine = pre.affine.detach().cpu().double().numpy()
    x = pre.as_tensor().float()[None]  # [1, C, X, Y, Z]
    size = list(x.shape[2:])
    if size[2] < n:
        raise LWIError(
            f"The preprocessed image has {size[2]} axial slices, fewer than the {n} sub-volumes requested; "
            "use fewer sub-volumes or a finer spacing."
        )

    generator = torch.Generator().manual_seed(int(seed))
    # Same draws in the same order as TransformationModule.forward: permutation, then mask.
    permutation = module.random_permutation(1, x.device, generator)
    pad_z = (-size[2]) % n
    padded = F.pad(x, (0, pad_z, 0, 0, 0, 0), mode="replicate") if pad_z else x
    shuffled = shuffle(padded, permutation)[..., : size[2]]
    grid = [math.ceil(s / module.cube_size) for s in size]
    mask = module.random_mask(1, grid, x.device, generator)
    voxels = mask_to_voxels(mask, module.cube_size)[:, : size[0], : size[1], : size[2]]
    masked = shuffled.masked_fill(voxels[:, None], module.mask_value)

    # Which original sub-volume each voxel of the shuffled view comes from.
    depth = (size[2] + pad_z) // n
    slot_of_slice = torch.arange(size[2]) // depth
    block = permutation[0].cpu()[slot_of_slice]
    layout = (block + 1).to(torch.uint8).view(1, 1, -1).expand(size[0], size[1], -1)

    def to_image(t: torch.Tensor) -> sitk.Image:
        return metatensor_to_image(t.detach().cpu(), affine)

    images = {
        "preprocessed": to_image(x[0, :1]),
        "shuffled": to_image(shuffled[0, :1]),
        "shuffled_masked": to_image(masked[0, :1]),
        "subvolumes": to_image(layout),
        "mask": to_image(voxels[0].to(torch.uint8)),
    }
    info = {
        "permutation": [int(p) for p in permutation[0].tolist()],
        "permutation_convention": "slot j of the shuffled view holds original sub-volume permutation[j]",
        "num_subvolumes": n,
        "subvolume_depth": depth,
        "axis": "last axis of the preprocessed grid (superior in RAS)",
        "mask_ratio": module.mask_ratio,
        "cube_size": module.cube_size,
        "mask_grid_shape": grid,
        "mask_grid": mask[0].cpu().tolist(),
        "masked_cubes": int(mask.sum()),
        "padding": [[0, 0], [0, 0], [0, pad_z]],
        "preprocessed_shape": size,
        "seed": int(seed),
        "preprocessing": config.to_dict(),
    }
    return {"images": images, "info": info}


def write_preview(preview: Dict[str, Any], out_dir: Union[str, Path]) -> Dict[str, Any]:
    """Write the views of :func:`make_preview` and ``preview.json`` into ``out_dir``; return the info."""
    from lwi.io import write_sitk_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, filename in FILES.items():
        write_sitk_atomic(preview["images"][name], out / filename, option="--out-dir")
        files[name] = filename
    info = dict(preview["info"], files=files)
    from lwi.outputs import write_text

    write_text(out / INFO_FILE, json.dumps(info, indent=1), "--out-dir")
    return info

