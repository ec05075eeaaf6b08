"""The Transformation Module of LWI Step 1 (paper section 3.2): shuffle depth sub-volumes, mask cubes.

A batch ``x [B, C, X, Y, Z]`` is split along the axial (last) axis into ``N`` equal sub-volumes, which
are shuffled by a random permutation; then random cubes of edge ``cube_size`` are set to ``mask_value``.
Convention (shared with the order heads): ``shuffled[..., slot j] = x[..., block permutation[j]]``, so the
order-prediction target of slot j is ``permutation[j]`` and :func:`unshuffle` applies ``argsort``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from lwi.errors import LWIError
from lwi.masking import mask_to_voxels, random_mask, uniform

__all__ = ["TransformationModule", "Transformed", "mask_to_voxels", "shuffle", "unshuffle"]


class Transformed(NamedTuple):
    """Output of :class:`TransformationModule`."""

    masked: torch.Tensor  # [B, C, X, Y, Z] shuffled, then masked: what the network sees
    target: torch.Tensor  # [B, C, X, Y, Z] shuffled, unmasked: the reconstruction target
    permutation: torch.Tensor  # [B, N] long: slot j holds original block permutation[:, j]
    mask: torch.Tensor  # [B, gx, gy, gz] bool: True for masked cubes


def _check_5d(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise LWIError(f"Expected a batch of volumes [B, C, X, Y, Z], got a tensor of shape {tuple(x.shape)}.")


def shuffle(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Reorder the N depth blocks of ``x [B, C, X, Y, Z]``: slot j of sample b gets block ``permutation[b, j]``."""
    _check_5d(x)
    b, c, sx, sy, sz = x.shape
    if permutation.dim() != 2 or permutation.shape[0] != b:
        raise LWIError(f"The permutation must have shape [B, N] with B = {b}, got {tuple(permutation.shape)}.")
    n = permutation.shape[1]
    if sz % n != 0:
        raise LWIError(f"The depth {sz} is not divisible into {n} equal sub-volumes.")
    blocks = x.reshape(b, c, sx, sy, n, sz // n)
    index = permutation.to(device=x.device, dtype=torch.long).view(b, 1, 1, 1, n, 1).expand_as(blocks)
    return torch.gather(blocks, 4, index).reshape(b, c, sx, sy, sz)


def unshuffle(x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Undo :func:`shuffle`: restore the original depth order of a shuffled batch."""
    return shuffle(x, torch.argsort(permutation.to(torch.long), dim=1))


class TransformationModule(nn.Module):
    """Shuffle N axial sub-volumes, then mask random cubes (LWI Step 1 input transformation).

    Args:
        num_subvolumes: N, the network's bottleneck grid size along depth.
        mask_ratio: fraction of cubes masked; exactly ``int(L * mask_ratio)`` of the L cubes per sample.
        cube_size: edge of the masking cubes in voxels; every spatial size must be divisible by it.
        mask_value: value written into masked cubes.
        per_sample: draw a permutation and a mask per sample (default), else one shared by the batch.
    """

    def __init__(
        self,
        num_subvolumes: int,
        mask_ratio: float = 0.4,
        cube_size: int = 16,
        mask_value: float = 0.0,
        per_sample: bool = True,
    ):
        super().__init__()
        if int(num_subvolumes) < 1:
            raise LWIError(f"The number of sub-volumes must be at least 1, got {num_subvolumes}.")
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise LWIError(f"The mask ratio must be in [0, 1), got {mask_ratio}.")
        if int(cube_size) < 1:
            raise LWIError(f"The mask cube size must be at least 1 voxel, got {cube_size}.")
        self.num_subvolumes = int(num_subvolumes)
        self.mask_ratio = float(mask_ratio)
        self.cube_size = int(cube_size)
        self.mask_value = float(mask_value)
        self.per_sample = bool(per_sample)

    def extra_repr(self) -> str:
        return (
            f"num_subvolumes={self.num_subvolumes}, mask_ratio={self.mask_ratio}, cube_size={self.cube_size}, "
            f"mask_value={self.mask_value}, per_sample={self.per_sample}"
        )

    def check_shape(self, spatial_size: Sequence[int]) -> None:
        """Raise :class:`LWIError` unless a crop of ``spatial_size`` (X, Y, Z) can be transformed."""
        size = [int(s) for s in spatial_size]
        if size[-1] % self.num_subvolumes != 0:
            raise LWIError(
                f"The crop depth {size[-1]} cannot be split into {self.num_subvolumes} equal sub-volumes; "
                f"choose a depth divisible by {self.num_subvolumes}."
            )
        if any(s % self.cube_size for s in size):
            raise LWIError(
                f"The crop size {tuple(size)} is not divisible by the mask cube size {self.cube_size}; "
                "choose a crop size that is a multiple of it."
            )

    def random_permutation(
        self, batch_size: int, device: torch.device, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Uniform random permutations ``[B, N]`` (one repeated B times when not per-sample)."""
        rows = batch_size if self.per_sample else 1
        perm = torch.argsort(uniform((rows, self.num_subvolumes), generator, device), dim=1)
        return perm.expand(batch_size, -1).contiguous()

    def random_mask(
        self, batch_size: int, grid: Sequence[int], device: torch.device, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Cube masks ``[B, gx, gy, gz]`` with exactly ``int(L * mask_ratio)`` True cubes per sample."""
        count = int(int(grid[0]) * int(grid[1]) * int(grid[2]) * self.mask_ratio)
        return random_mask(batch_size, grid, count, device, generator, per_sample=self.per_sample)

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> Transformed:
        """Transform a batch ``x [B, C, X, Y, Z]``; ``x`` itself is left untouched."""
        _check_5d(x)
        self.check_shape(x.shape[2:])
        b = x.shape[0]
        permutation = self.random_permutation(b, x.device, generator)
        target = shuffle(x, permutation)  # gather returns a new tensor: x is never aliased
        grid = [s // self.cube_size for s in x.shape[2:]]
        mask = self.random_mask(b, grid, x.device, generator)
        voxels = mask_to_voxels(mask, self.cube_size).unsqueeze(1)
        masked = target.masked_fill(voxels, self.mask_value)  # out of place: target keeps its values
        return Transformed(masked=masked, target=target, permutation=permutation, mask=mask)
