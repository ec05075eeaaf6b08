"""Masks for masked-image training, shared by LWI Step 1, MedContext and AnatoMask.

Every mask is a bool tensor ``[B, gx, gy, gz]`` over a grid of patches (True = masked), in the axis
order of the images ``[B, C, X, Y, Z]``. Flattened masks ``[B, L]`` and patch tensors ``[B, L, ...]``
use the same order (z fastest), which is also the token order of MONAI's ViT patch embedding.

* :func:`random_mask`: exactly ``count`` random patches per sample (LWI cubes, AnatoMask's random mask).
* :func:`tube_mask`: MedContext's tubes: one random 2-D pattern repeated along one axis.
* :func:`generate_mask`: AnatoMask's guided mask: the patches a teacher reconstructs worst, plus random ones.
* :func:`replace_tokens`, :func:`mask_voxels`: apply a mask in token space or in image space.
* :func:`patchify`, :func:`normalised_patches`, :func:`patch_errors`, :func:`masked_patch_mse`: the
  per-patch-normalised reconstruction loss of SparK/AnatoMask, computed on masked patches only.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from lwi.errors import LWIError

AXES = {"x": 0, "y": 1, "z": 2}


def uniform(shape: Sequence[int], generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (a CPU generator needs no GPU sync), then moved."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)


def grid_of(spatial_size: Sequence[int], patch: int) -> list:
    """The patch grid of a crop; every size must be a multiple of ``patch``."""
    size = [int(s) for s in spatial_size]
    if int(patch) < 1 or any(s % int(patch) for s in size):
        raise LWIError(
            f"The crop size {tuple(size)} is not divisible into {patch}-voxel patches; choose a crop size "
            "that is a multiple of it."
        )
    return [s // int(patch) for s in size]


def random_mask(
    batch_size: int,
    grid: Sequence[int],
    count: int,
    device: torch.device,
    generator: Optional[torch.Generator] = None,
    per_sample: bool = True,
) -> torch.Tensor:
    """``[B, *grid]`` with exactly ``count`` True patches per sample (one mask for the batch when not per-sample)."""
    total = math.prod(int(g) for g in grid)
    if not 0 <= count <= total:
        raise LWIError(f"Cannot mask {count} of {total} patches.")
    rows = batch_size if per_sample else 1
    chosen = torch.argsort(uniform((rows, total), generator, device), dim=1)[:, :count]
    flat = torch.zeros(rows, total, dtype=torch.bool, device=device)
    flat.scatter_(1, chosen, True)
    return flat.view(rows, *grid).expand(batch_size, *grid).contiguous()


def tube_mask(
    batch_size: int,
    grid: Sequence[int],
    ratio: float,
    axis: int,
    device: torch.device,
    generator: Optional[torch.Generator] = None,
    per_sample: bool = False,
) -> torch.Tensor:
    """MedContext's tube mask (VideoMAE-style): one random 2-D pattern over the two axes other than
    ``axis`` with exactly ``int(ratio * a * b)`` cells, repeated at every index along ``axis``.
    Shared by the batch by default, as in the authors' code."""
    if axis not in (0, 1, 2):
        raise LWIError(f"The tube axis must be 0, 1 or 2, got {axis}.")
    frame_grid = [int(g) for i, g in enumerate(grid) if i != axis]
    frame = random_mask(batch_size, frame_grid, int(ratio * frame_grid[0] * frame_grid[1]), device, generator, per_sample)
    return frame.unsqueeze(axis + 1).expand(batch_size, *[int(g) for g in grid]).contiguous()


def mask_to_voxels(mask: torch.Tensor, cube_size: int) -> torch.Tensor:
    """Expand a patch mask ``[B, gx, gy, gz]`` to a voxel mask ``[B, gx*c, gy*c, gz*c]`` (same dtype)."""
    b, gx, gy, gz = mask.shape
    c = int(cube_size)
    voxels = mask.view(b, gx, 1, gy, 1, gz, 1).expand(b, gx, c, gy, c, gz, c)
    return voxels.reshape(b, gx * c, gy * c, gz * c)


def mask_voxels(images: torch.Tensor, mask: torch.Tensor, patch: int, value: float = 0.0) -> torch.Tensor:
    """``images [B, C, X, Y, Z]`` with the masked patches set to ``value`` (out of place)."""
    return images.masked_fill(mask_to_voxels(mask, patch).unsqueeze(1), value)


def replace_tokens(tokens: torch.Tensor, mask: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Put ``token [D]`` in place of every masked token; the other tokens are returned unchanged.

    ``tokens`` is ``[B, L, D]`` (a ViT sequence in ``(x y z)`` order, position embedding already added,
    so the mask token carries none) or ``[B, D, gx, gy, gz]`` (a convolutional patch embedding).
    """
    token = token.to(dtype=tokens.dtype)
    if tokens.dim() == 3:
        return torch.where(mask.flatten(1).unsqueeze(-1), token, tokens)
    if tokens.dim() == 5:
        return torch.where(mask.unsqueeze(1), token.view(1, -1, 1, 1, 1), tokens)
    raise LWIError(f"Cannot mask tokens of shape {tuple(tokens.shape)}.")


# -- AnatoMask: guided masks and the per-patch-normalised reconstruction loss ---------------------------
def guided_count(masked: int, final_ratio: float, epoch: int, epochs: int) -> int:
    """How many of the ``masked`` patches the teacher chooses at ``epoch`` (0-based) of ``epochs``: the
    share grows linearly from 0 to ``final_ratio`` (AnatoMask's r_t = r_T (e + 1) / (E - 1))."""
    share = final_ratio * (int(epoch) + 1) / max(int(epochs) - 1, 1)
    return max(0, min(int(masked), int(masked * share)))


def guided_count_at(masked: int, final_ratio: float, iteration: int, iterations: int) -> int:
    """How many of the ``masked`` patches the teacher chooses at ``iteration`` (0-based) of ``iterations``:
    AnatoMask's r_t = r_T t / T indexed by iteration, so the easy-to-hard ramp is smooth at any run
    length (0 at the first iteration, below r_T at the last) instead of a staircase of a few epochs."""
    share = float(final_ratio) * int(iteration) / max(int(iterations), 1)
    return max(0, min(int(masked), int(masked * share)))


def generate_mask(
    errors: torch.Tensor, count: int, guided: int, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """AnatoMask's guided mask ``[B, L]``: the ``guided`` patches with the largest teacher error are
    masked, and ``count - guided`` more are drawn uniformly from the rest, per sample. Ties between equal
    errors are broken at random, so equal errors give a uniformly random mask."""
    b, total = errors.shape
    if not 0 <= guided <= count <= total:
        raise LWIError(f"Cannot choose {guided} guided of {count} masked patches out of {total}.")
    # Random order first, then a stable sort by error: equal errors keep the random order.
    shuffled = torch.argsort(uniform((b, total), generator, errors.device), dim=1)
    by_error = torch.sort(errors.gather(1, shuffled), dim=1, descending=True, stable=True).indices
    hardest = shuffled.gather(1, by_error[:, :guided])
    score = uniform((b, total), generator, errors.device)  # in [0, 1): below the guided patches' 2
    score.scatter_(1, hardest, 2.0)
    chosen = torch.topk(score, count, dim=1).indices
    mask = torch.zeros(b, total, dtype=torch.bool, device=errors.device)
    return mask.scatter_(1, chosen, True)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, X, Y, Z]`` -> ``[B, L, patch^3 * C]``, patches in the masks' ``(x y z)`` order."""
    b, c = x.shape[:2]
    gx, gy, gz = grid_of(x.shape[2:], patch)
    p = int(patch)
    x = x.reshape(b, c, gx, p, gy, p, gz, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, gx * gy * gz, p**3 * c)


def normalised_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each patch standardised by its own mean and sqrt(unbiased variance + eps) (SparK's norm-pix target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / torch.sqrt(var + eps)


def patch_errors(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch: ``[B, L, P]`` x 2 -> ``[B, L]``."""
    return ((prediction - target) ** 2).mean(dim=-1)


def masked_patch_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-patch MSE averaged over the masked patches only (``mask [B, L]``); visible patches do not count."""
    weights = mask.flatten(1).to(prediction.dtype)
    return (patch_errors(prediction, target) * weights).sum() / weights.sum().clamp_min(1.0)
