"""Back to the input's grid: the kernels that map a network-grid result to the input voxels.

The network ran on the preprocessed grid; the input's voxel ``(i, j, k)`` sits at ``to_net @ (i, j,
k, 1)`` on it (input voxel -> world -> network voxel). Everything runs on the result's device in
slabs of input slices, so no index tensor of the whole volume is ever built:

* :func:`resample_nearest`: the network label of each input voxel's nearest network voxel;
* :func:`resample_argmax`: the argmax of trilinearly interpolated logits, computed only where the
  8 surrounding network voxels disagree (elsewhere it is their common label);
* :func:`resample_linear`: trilinear resampling of every channel (probabilities);
* :func:`probabilities_image`: those as a vector image on the input's grid.

Axis-aligned maps (a permutation, flips and scales) take a separable fast path (``_AxisMap``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch

__all__ = ["probabilities_image", "resample_argmax", "resample_linear", "resample_nearest"]

# Voxels of the input grid mapped per slab: bounds the temporary index tensors (~70 bytes per voxel)
# while keeping each step large enough to run at full speed.
_SLAB_VOXELS = {"cuda": 1 << 22, "cpu": 1 << 20}


def _slab_coordinates(to_net: np.ndarray, size: Sequence[int], k0: int, k1: int, device: torch.device):
    """Network-grid coordinates (float32, each [X, Y, k1-k0]) of input voxels with k in [k0, k1)."""
    m = torch.as_tensor(to_net, dtype=torch.float64)
    i = torch.arange(size[0], dtype=torch.float64)
    j = torch.arange(size[1], dtype=torch.float64)
    k = torch.arange(k0, k1, dtype=torch.float64)
    coords = []
    for row in range(3):
        # An affine map is a sum of three 1D ramps, built on the device in float32.
        ci = (m[row, 0] * i + m[row, 3]).to(device=device, dtype=torch.float32)
        cj = (m[row, 1] * j).to(device=device, dtype=torch.float32)
        ck = (m[row, 2] * k).to(device=device, dtype=torch.float32)
        coords.append(ci[:, None, None] + cj[None, :, None] + ck[None, None, :])
    return coords


def _slabs(size: Sequence[int], device: torch.device):
    per_slice = max(1, int(size[0]) * int(size[1]))
    step = max(1, _SLAB_VOXELS.get(device.type, 1 << 20) // per_slice)
    for k0 in range(0, int(size[2]), step):
        yield k0, min(int(size[2]), k0 + step)


class _AxisMap:
    """The input-to-network map when each network axis follows one input axis (the usual case).

    Reorientation permutes and flips axes and resampling scales them, so the map from the input grid
    to the network grid is a scaled permutation unless the model resamples to another direction. Then
    lookups are 1D index vectors and ``index_select``, far cheaper than per-voxel coordinates.
    """

    def __init__(self, to_net: np.ndarray):
        m = np.asarray(to_net, dtype=np.float64)
        tol = 1e-6 * float(np.abs(m[:3, :3]).max())
        self.axes: List[int] = []  # network axis j follows input axis axes[j]
        for j in range(3):
            nonzero = [i for i in range(3) if abs(m[j, i]) > tol]
            if len(nonzero) != 1 or nonzero[0] in self.axes:
                raise ValueError("not axis-aligned")
            self.axes.append(nonzero[0])
        self.scale = [float(m[j, self.axes[j]]) for j in range(3)]
        self.offset = [float(m[j, 3]) for j in range(3)]
        self.order = [self.axes.index(i) for i in range(3)]  # permute network-axis order -> input order

    @classmethod
    def of(cls, to_net: np.ndarray) -> Optional[_AxisMap]:
        try:
            return cls(to_net)
        except ValueError:
            return None

    def coords(self, size: Sequence[int], k0: int, k1: int, device: torch.device) -> List[torch.Tensor]:
        """Per network axis: the 1D coordinates along the input axis it follows (slab k0:k1 along z)."""
        out = []
        for j in range(3):
            i = self.axes[j]
            ramp = torch.arange(k0, k1) if i == 2 else torch.arange(int(size[i]))
            out.append((ramp.double() * self.scale[j] + self.offset[j]).to(device=device, dtype=torch.float32))
        return out

    def gather(self, volume: torch.Tensor, index: List[torch.Tensor]) -> torch.Tensor:
        """``volume[index[0], index[1], index[2]]`` as an outer product, in input-axis order."""
        # Select along the slab's axis first (its index is the shortest), so intermediates stay small.
        out = volume
        for j in sorted(range(3), key=lambda j: index[j].numel()):
            out = out.index_select(j, index[j])
        return out.permute(self.order)

    def outer(self, masks: List[torch.Tensor]) -> torch.Tensor:
        """The 3D mask of three per-axis 1D masks, in input-axis order."""
        return (masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]).permute(self.order)


def resample_nearest(volume: torch.Tensor, to_net: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour lookup of ``volume`` [X', Y', Z'] at every voxel of an input grid of ``size``.

    ``to_net`` maps input voxel indices to ``volume``'s voxel indices (4x4). Voxels that fall outside
    ``volume`` (e.g. cropped away as background) get 0. Runs on ``volume``'s device, slab by slab.
    """
    out = torch.zeros(tuple(int(s) for s in size), dtype=volume.dtype, device=volume.device)
    dims = [int(n) for n in volume.shape]
    zero = torch.zeros((), dtype=volume.dtype, device=volume.device)
    axis_map = _AxisMap.of(to_net)
    flat = volume.reshape(-1)
    for k0, k1 in _slabs(size, volume.device):
        if axis_map is not None:
            idx = [torch.floor(c + 0.5).to(torch.int64) for c in axis_map.coords(size, k0, k1, volume.device)]
            inside = axis_map.outer([(x >= 0) & (x < n) for x, n in zip(idx, dims)])
            values = axis_map.gather(volume, [x.clamp(0, n - 1) for x, n in zip(idx, dims)])
        else:
            coords = _slab_coordinates(to_net, size, k0, k1, volume.device)
            idx = [torch.floor(c + 0.5).to(torch.int64) for c in coords]
            inside = torch.ones_like(idx[0], dtype=torch.bool)
            for x, n in zip(idx, dims):
                inside &= (x >= 0) & (x < n)
            x, y, z = (x.clamp(0, n - 1) for x, n in zip(idx, dims))
            values = flat[(x * dims[1] + y) * dims[2] + z]
        out[:, :, k0:k1] = torch.where(inside, values, zero)
    return out


def _uniform_cells(labels: torch.Tensor) -> torch.Tensor:
    """Per network voxel: its label if the 2x2x2 cell it starts (towards +x, +y, +z) has one label, else -1.

    Cells at the far edges repeat the last voxel, as the corner indices are clamped there.
    """
    import torch.nn.functional as F

    x = F.pad(labels[None, None].float(), (0, 1, 0, 1, 0, 1), mode="replicate")
    high = F.max_pool3d(x, 2, stride=1)[0, 0]
    low = -F.max_pool3d(-x, 2, stride=1)[0, 0]
    return torch.where(high == low, labels.to(torch.int32), torch.full_like(labels, -1, dtype=torch.int32))


def _corner_rows(flat_cell: torch.Tensor, dims: List[int]) -> torch.Tensor:
    """Flat indices [N, 8] of the 8 corners of the cells starting at ``flat_cell`` (clamped at the far edges)."""
    x = flat_cell // (dims[1] * dims[2])
    y = (flat_cell // dims[2]) % dims[1]
    z = flat_cell % dims[2]
    corners = []
    for corner in range(8):
        cx = (x + (1 if corner & 4 else 0)).clamp(max=dims[0] - 1)
        cy = (y + (1 if corner & 2 else 0)).clamp(max=dims[1] - 1)
        cz = (z + (1 if corner & 1 else 0)).clamp(max=dims[2] - 1)
        corners.append((cx * dims[1] + cy) * dims[2] + cz)
    return torch.stack(corners, dim=1)


class _BoundaryCells:
    """The network cells whose corners disagree on the label, prepared for cheap exact interpolation.

    Most such cells lie between two structures: only two channels can win anywhere inside (every other
    channel is below one of them at all 8 corners, hence everywhere in the cell), and the label at a
    point is the sign of the interpolated difference of those two logits, one 8-value row per cell.
    Cells where more channels can win are interpolated in full.
    """

    _TEST_BYTES = 1 << 27  # bound on the [cells, 8, C, C] booleans of one dominance test

    def __init__(self, cells: torch.Tensor, table: torch.Tensor, dims: List[int]):
        flat = cells.reshape(-1)
        self.cell = (flat < 0).nonzero(as_tuple=True)[0]  # flat index of each boundary cell
        # Mark each boundary cell with its number: code -2 - id (uniform cells keep their label >= 0).
        flat[self.cell] = -2 - torch.arange(self.cell.numel(), dtype=flat.dtype, device=flat.device)
        n = self.cell.numel()
        self.pair = torch.zeros(n, dtype=torch.bool, device=table.device)
        self.first = torch.zeros(n, dtype=torch.int64, device=table.device)
        self.second = torch.zeros(n, dtype=torch.int64, device=table.device)
        self.diff = torch.zeros((n, 8), dtype=torch.float32, device=table.device)
        chunk = max(256, self._TEST_BYTES // (8 * table.shape[1] ** 2))
        for c0 in range(0, n, chunk):
            part = slice(c0, min(n, c0 + chunk))
            corners = table[_corner_rows(self.cell[part], dims)].float()  # [m, 8, C]
            # Channel k cannot win in the cell when some channel a beats it at all 8 corners.
            beaten = (corners[:, :, :, None] > corners[:, :, None, :]).all(dim=1).any(dim=1)  # [m, C]
            candidates = ~beaten
            two = candidates.sum(dim=1) == 2
            order = torch.argsort(candidates.to(torch.int8), dim=1, descending=True, stable=True)
            first, second = order[:, 0], order[:, 1]  # the two candidates, lower channel first
            rows = torch.arange(corners.shape[0], device=table.device)
            self.pair[part] = two
            self.first[part], self.second[part] = first, second
            self.diff[part] = corners[rows, :, first] - corners[rows, :, second]

    def labels(self, code: torch.Tensor, coords: List[torch.Tensor], table: torch.Tensor, dims: List[int]):
        """Exact labels at boundary points (``code`` < 0) with network coordinates ``coords`` (3 x [N])."""
        ids = -2 - code.to(torch.int64)
        frac = [c - torch.floor(c) for c in coords]
        # Trilinear weights of the 8 corners, in the bit order x=4, y=2, z=1 of _corner_rows.
        wx, wy, wz = (torch.stack([1 - f, f], dim=1) for f in frac)
        weights = (wx[:, :, None, None] * wy[:, None, :, None] * wz[:, None, None, :]).reshape(-1, 8)
        out = torch.empty(ids.shape, dtype=torch.int64, device=ids.device)
        pair = self.pair[ids]
        if bool(pair.any()):
            p = ids[pair]
            value = (weights[pair] * self.diff[p]).sum(dim=1)
            out[pair] = torch.where(value >= 0, self.first[p], self.second[p])  # ties go to the lower channel
        if not bool(pair.all()):
            rest = ~pair
            out[rest] = _interpolated_argmax(table, dims, [c[rest] for c in coords])
        return out


def _interpolated_argmax(table: torch.Tensor, dims: List[int], coords: List[torch.Tensor]) -> torch.Tensor:
    """Argmax of the trilinear interpolation of ``table`` [X'*Y'*Z', C] (channels last) at ``coords`` (3 x [N])."""
    floors = [torch.floor(c) for c in coords]
    frac = [c - f for c, f in zip(coords, floors)]
    lo = [f.clamp(0, n - 1).to(torch.int64) for f, n in zip(floors, dims)]
    hi = [(f + 1).clamp(0, n - 1).to(torch.int64) for f, n in zip(floors, dims)]
    mixed = torch.zeros((coords[0].numel(), table.shape[1]), dtype=torch.float32, device=table.device)
    for corner in range(8):
        ix, iy, iz = ((hi if corner & bit else lo)[axis] for axis, bit in enumerate((4, 2, 1)))
        wx, wy, wz = ((f if corner & bit else 1 - f) for f, bit in zip(frac, (4, 2, 1)))
        # One row of C contiguous logits per point: a cache-friendly gather.
        mixed.addcmul_(table[(ix * dims[1] + iy) * dims[2] + iz].float(), (wx * wy * wz)[:, None])
    return mixed.argmax(dim=1)


def resample_argmax(
    logits: torch.Tensor, labels: torch.Tensor, to_net: np.ndarray, size: Sequence[int]
) -> torch.Tensor:
    """``argmax`` of the trilinearly interpolated ``logits`` [C, X', Y', Z'] at every voxel of an input grid.

    The same labels as resampling every channel of the logits onto the input grid and taking the argmax
    there (MONAI's ``Invertd`` of the logits), at about the cost of a nearest-neighbour lookup: where
    the 8 network voxels around an input voxel share one argmax (``labels``, [X', Y', Z']), every
    convex combination of their logits has that argmax too, so only voxels near a label boundary are
    interpolated (see :class:`_BoundaryCells`). Outside the network grid: 0. Runs on ``logits``'
    device, slab by slab.
    """
    dims = [int(n) for n in labels.shape]
    table = logits.permute(1, 2, 3, 0).reshape(-1, logits.shape[0])  # channels last: one row per voxel
    cells = _uniform_cells(labels)
    boundary = _BoundaryCells(cells, table, dims)  # also numbers the boundary cells in ``cells``
    flat_cells = cells.reshape(-1)
    axis_map = _AxisMap.of(to_net)
    out = torch.zeros(tuple(int(s) for s in size), dtype=labels.dtype, device=labels.device)
    for k0, k1 in _slabs(size, labels.device):
        # Points within half a voxel outside the grid take the border value (clamped coordinates).
        if axis_map is not None:
            coords = axis_map.coords(size, k0, k1, labels.device)
            inside = axis_map.outer([(c > -0.5) & (c < n - 0.5) for c, n in zip(coords, dims)])
            coords = [c.clamp(0, n - 1) for c, n in zip(coords, dims)]
            code = axis_map.gather(cells, [torch.floor(c).to(torch.int64) for c in coords])
        else:
            coords = _slab_coordinates(to_net, size, k0, k1, labels.device)
            inside = torch.ones_like(coords[0], dtype=torch.bool)
            for c, n in zip(coords, dims):
                inside &= (c > -0.5) & (c < n - 0.5)
            coords = [c.clamp(0, n - 1) for c, n in zip(coords, dims)]
            x, y, z = (torch.floor(c).to(torch.int64) for c in coords)
            code = flat_cells[(x * dims[1] + y) * dims[2] + z]
        slab = torch.where(inside & (code >= 0), code, torch.zeros_like(code))
        edge = inside & (code < 0)
        if bool(edge.any()):
            if axis_map is not None:
                where = edge.nonzero(as_tuple=True)  # row-major, like boolean-mask indexing below
                points = [coords[j][where[axis_map.axes[j]]] for j in range(3)]
            else:
                points = [c[edge] for c in coords]
            slab[edge] = boundary.labels(code[edge], points, table, dims).to(slab.dtype)
        out[:, :, k0:k1] = slab.to(out.dtype)
    return out


def resample_linear(
    volume: torch.Tensor, to_net: np.ndarray, size: Sequence[int], outside: Optional[Sequence[float]] = None
) -> torch.Tensor:
    """Trilinear resampling of a multi-channel ``volume`` [C, X', Y', Z'] onto an input grid of ``size``.

    Voxels outside ``volume`` take ``outside`` (one value per channel); by default pure background
    (channel 0 = 1, the others 0), as probabilities need. Returns float32 [C, X, Y, Z] on the CPU
    (the only full-size multi-channel array, and only when asked for).
    """
    import torch.nn.functional as F

    channels = volume.shape[0]
    out = torch.zeros((channels,) + tuple(int(s) for s in size), dtype=torch.float32)
    src = volume[None].float()
    dims = volume.shape[1:]
    for k0, k1 in _slabs(size, volume.device):
        coords = _slab_coordinates(to_net, size, k0, k1, volume.device)
        inside = torch.ones_like(coords[0], dtype=torch.bool)
        norm = []
        for c, n in zip(coords, dims):
            inside &= (c > -0.5) & (c < n - 0.5)
            norm.append(2.0 * c / max(n - 1, 1) - 1.0)
        # grid_sample's last grid axis is (W, H, D) = our (Z, Y, X).
        grid = torch.stack([norm[2], norm[1], norm[0]], dim=-1)[None]
        values = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
        if outside is None:
            background = torch.zeros(channels, device=values.device)
            background[0] = 1.0
        else:
            background = torch.tensor([float(v) for v in outside], device=values.device)
        values = torch.where(inside[None], values, background[:, None, None, None])
        out[:, :, :, k0:k1] = values.cpu()
    return out


def probabilities_image(probs: torch.Tensor, reference: sitk.Image) -> sitk.Image:
    """[C, X, Y, Z] probabilities as a vector image on ``reference``'s grid."""
    array = probs.permute(3, 2, 1, 0).contiguous().numpy()  # [Z, Y, X, C]
    image = sitk.GetImageFromArray(array, isVector=True)
    image.CopyInformation(reference)
    return image
