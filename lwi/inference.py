"""Segmenting a volume with a model bundle, with the result on exactly the input's grid.

Pipeline (every step on the model's device; with CUDA nothing of volume size visits the CPU before the
final label map):

1. Preprocess with the bundle's :class:`~lwi.data.preprocessing.PreprocessConfig` (the same MONAI
   transforms as training: foreground crop, RAS, spacing, intensity), on the device.
2. MONAI ``sliding_window_inference`` with the bundle's ROI and overlap and Gaussian blending, under
   float16 autocast on CUDA (the stitched logits stay float32; never float64).
3. ``argmax`` over channels on the device (output channel ``v`` is label value ``v``).
4. Back to the input grid through the two affines (input voxel -> world -> network voxel), in slabs,
   on the device: each input voxel takes the network label of its neighbourhood, and only voxels whose
   8 surrounding network voxels disagree get their logits interpolated (:func:`resample_argmax`). The
   result equals the argmax of trilinearly resampled logits (what MONAI's ``Invertd`` of the logits
   gives) without resampling every channel everywhere, which is where a tutorial-style pipeline spends
   most of its time (DESIGN.md "Performance").
5. Optionally keep the largest connected piece of each label, then build the ``sitk.Image`` on the
   input's grid (size, spacing, origin, direction copied from the input).

A :class:`Segmenter` loads the bundle once and segments many volumes (the Slicer module keeps one alive
in a worker process). If CUDA runs out of memory it retries with half the window batch, then stitches
the windows on the CPU, then runs entirely on the CPU, saying so through :meth:`Progress.log`.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from lwi.errors import LWIError
from lwi.labels import LabelInfo
from lwi.progress import Progress

PathLike = Union[str, "os.PathLike[str]"]

# Voxels of the input grid mapped per slab in step 4: bounds the temporary index tensors (~70 bytes
# per voxel) while keeping each step large enough to run at full speed.
_SLAB_VOXELS = {"cuda": 1 << 22, "cpu": 1 << 20}


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns.

    Attributes:
        label: the label map (unsigned integers, the bundle's label values) on the input's grid.
        probabilities: with ``return_probabilities``: a float32 vector image on the input's grid, one
            component per output channel (channel ``v`` = label value ``v``, 0 = background).
        device: where the segmentation finally ran ("cuda:0", "cpu", ...).
        sw_batch_size: the window batch finally used (smaller than asked after running out of memory).
        seconds: wall time per step: "preprocess", "network" (sliding window), "invert" (argmax and
            back to the input grid, with probabilities if asked), "postprocess" (largest component,
            image assembly).
    """

    label: sitk.Image
    probabilities: Optional[sitk.Image] = None
    device: str = "cpu"
    sw_batch_size: int = 1
    seconds: Dict[str, float] = field(default_factory=dict)


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not speed up convolutions)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        available = os.cpu_count() or 1
    cores = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            physical = core = None
            for line in f:
                if line.startswith("physical id"):
                    physical = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((physical, core))
                    physical = core = None
            if core is not None:
                cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(available, len(cores)) if cores else available)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _first_output(output: Any) -> torch.Tensor:
    """The segmentation logits of a network output (deep-supervision lists: the first, full-size one)."""
    if isinstance(output, (list, tuple)):
        return output[0]
    if isinstance(output, dict):
        return next(iter(output.values()))
    return output


class Segmenter:
    """Segments volumes with a model bundle; load once, call :meth:`segment` many times.

    Args:
        model_path: the ``.lwi.safetensors`` bundle.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        sw_batch_size: windows per network call (default: the bundle's).
        overlap: sliding-window overlap in [0, 1) (default: the bundle's, 0.5).
        amp: float16 autocast on CUDA (no effect on the CPU).
        roi_size: sliding-window size in voxels (default: the bundle's, the training crop).
        spacing_scale: run on a grid this many times coarser than the model's spacing (e.g. 2 for
            8x fewer voxels on a large CT on the CPU; less accurate, especially for small structures).
        progress: where progress and messages go (silent by default).
        threads: CPU threads for torch on the CPU (default: the physical cores).
        interpolation: how labels go back to the input grid: "linear" (the argmax of trilinearly
            interpolated logits, computed exactly but only near label boundaries) or "nearest"
            (nearest-neighbour lookup of the network's labels: blockier, slightly faster).
    """

    def __init__(
        self,
        model_path: Optional[PathLike] = None,
        device: Union[str, torch.device] = "auto",
        sw_batch_size: Optional[int] = None,
        overlap: Optional[float] = None,
        amp: bool = True,
        roi_size: Optional[Sequence[int]] = None,
        spacing_scale: float = 1.0,
        progress: Optional[Progress] = None,
        threads: Optional[int] = None,
        interpolation: str = "linear",
        _model: Optional[torch.nn.Module] = None,
        _metadata: Optional[Dict[str, Any]] = None,
    ):
        from lwi.bundle import bundle_labels, load_bundle
        from lwi.data.preprocessing import PreprocessConfig
        from lwi.engine import resolve_device

        self.device = resolve_device(device)
        self.progress = progress or Progress("none")
        if self.device.type == "cpu":
            torch.set_num_threads(int(threads) if threads else physical_cores())
        else:
            torch.backends.cudnn.benchmark = True  # fixed window shape: the fastest kernels are found once
        if _model is not None:
            self.model, self.metadata = _model.to(self.device).eval(), dict(_metadata or {})
        else:
            if model_path is None:
                raise LWIError("A model file is needed to segment.")
            self.model, self.metadata = load_bundle(model_path, device=self.device)
        self.model.requires_grad_(False)
        arch = self.metadata.get("architecture", {})
        inference = self.metadata.get("inference", {})
        self.in_channels = int(arch.get("in_channels", 1))
        self.out_channels = int(arch.get("out_channels", 0)) or None
        self.labels: List[LabelInfo] = bundle_labels(self.metadata)
        roi = roi_size if roi_size is not None else inference.get("roi_size", arch.get("roi_size"))
        if roi is None or len(roi) != 3 or min(int(s) for s in roi) < 1:
            raise LWIError(f"The sliding-window size must be three positive integers, got {roi}.")
        self.roi_size = tuple(int(s) for s in roi)
        self.overlap = float(overlap if overlap is not None else inference.get("overlap", 0.5))
        if not 0.0 <= self.overlap < 1.0:
            raise LWIError(f"The overlap must be in [0, 1), got {self.overlap}.")
        self.sw_batch_size = int(sw_batch_size or inference.get("sw_batch_size", 4))
        if self.sw_batch_size < 1:
            raise LWIError(f"The window batch size must be at least 1, got {self.sw_batch_size}.")
        self.amp = bool(amp)
        if not spacing_scale or spacing_scale <= 0:
            raise LWIError(f"The spacing scale must be positive, got {spacing_scale}.")
        self.spacing_scale = float(spacing_scale)
        self.config = PreprocessConfig.from_dict(self.metadata.get("preprocessing", {}))
        if interpolation not in ("linear", "nearest"):
            raise LWIError(f"The interpolation must be linear or nearest, got {interpolation!r}.")
        self.interpolation = interpolation

    @classmethod
    def from_model(cls, model: torch.nn.Module, metadata: Dict[str, Any], **kwargs: Any) -> Segmenter:
        """A segmenter for an in-memory network and bundle-style ``metadata`` (tests, benchmarks)."""
        return cls(None, _model=model, _metadata=metadata, **kwargs)

    # -- public ------------------------------------------------------------------------------
    def segment(
        self, image: sitk.Image, largest_component: bool = False, return_probabilities: bool = False
    ) -> SegmentationResult:
        """Segment one volume; the label map comes back on exactly ``image``'s grid.

        Args:
            image: a 3D SimpleITK image (:func:`lwi.io.read_image`), in the units the model was
                trained on (HU for CT).
            largest_component: keep only the largest connected piece of each label.
            return_probabilities: also return the softmax probabilities on the input grid.

        Raises:
            LWIError: a 2D or multi-component image, or one the model cannot take.
        """
        self._check_image(image)
        attempts = self._attempts()
        for i, (device, batch, stitch) in enumerate(attempts):
            try:
                return self._segment_once(image, device, batch, stitch, largest_component, return_probabilities)
            except Exception as exc:  # only running out of GPU memory is retried
                if not _is_oom(exc) or i == len(attempts) - 1:
                    raise
                torch.cuda.empty_cache()
                nxt_device, nxt_batch, nxt_stitch = attempts[i + 1]
                if nxt_device.type == "cpu":
                    where = "on the CPU (slower)"
                elif nxt_stitch.type == "cpu":
                    where = f"with {nxt_batch} window per batch, stitching the windows on the CPU"
                else:
                    where = f"with {nxt_batch} window(s) per batch"
                self.progress.log(f"The GPU ran out of memory; retrying {where}.")
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- steps -------------------------------------------------------------------------------
    def _check_image(self, image: sitk.Image) -> None:
        if image.GetDimension() != 3:
            raise LWIError(f"The image is {image.GetDimension()}D; a 3D volume is needed.")
        if min(image.GetSize()) < 2:
            raise LWIError(f"The image is a single slice (size {image.GetSize()}); a 3D volume is needed.")
        channels = image.GetNumberOfComponentsPerPixel()
        if channels != self.in_channels:
            raise LWIError(
                f"The model expects {self.in_channels} input channel(s) but the image has {channels}; "
                "use a model trained for this kind of image."
            )

    def _attempts(self) -> List[Tuple[torch.device, int, torch.device]]:
        """(device, window batch, stitching device) to try in order when memory runs out."""
        if self.device.type != "cuda":
            return [(self.device, self.sw_batch_size, self.device)]
        plan, batch = [], self.sw_batch_size
        while True:
            plan.append((self.device, batch, self.device))
            if batch == 1:
                break
            batch = max(1, batch // 2)
        cpu = torch.device("cpu")
        plan.append((self.device, 1, cpu))
        plan.append((cpu, self.sw_batch_size, cpu))
        return plan

    def _preprocess_config(self, image: sitk.Image):
        config = self.config
        if self.spacing_scale != 1.0:
            from dataclasses import replace

            from lwi.data.preprocessing import ras_spacing
            from lwi.io import affine_ras

            base = config.spacing if config.spacing is not None else ras_spacing(affine_ras(image))
            config = replace(config, spacing=tuple(float(s) * self.spacing_scale for s in base))
        return config

    def _segment_once(
        self,
        image: sitk.Image,
        device: torch.device,
        sw_batch_size: int,
        stitch_device: torch.device,
        largest_component: bool,
        return_probabilities: bool,
    ) -> SegmentationResult:
        from monai.inferers import sliding_window_inference

        from lwi.data.preprocessing import preprocess
        from lwi.io import affine_ras, array_to_image

        if device.type == "cpu" and self.device.type != "cpu":
            torch.set_num_threads(physical_cores())
        model = self.model.to(device)
        clock = _StepClock(device)
        with torch.inference_mode():
            x, _ = preprocess(image, None, config=self._preprocess_config(image), device=device)
            clock.lap("preprocess")
            net_affine = np.asarray(torch.as_tensor(x.affine).detach().cpu().double().numpy())
            x = x.as_tensor()[None].float() if hasattr(x, "as_tensor") else x[None].float()
            amp = self.amp and device.type == "cuda"
            total = _window_batches(x.shape[2:], self.roi_size, self.overlap, sw_batch_size)
            self.progress.start("segment", total=total, unit="batch")
            calls = [0]

            def predictor(windows: torch.Tensor) -> torch.Tensor:
                out = _first_output(model(windows))
                calls[0] += 1
                self.progress.update(min(calls[0], total), total)
                return out

            autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
            with autocast:
                logits = sliding_window_inference(
                    x,
                    self.roi_size,
                    sw_batch_size,
                    predictor,
                    overlap=self.overlap,
                    mode="gaussian",
                    sw_device=device,
                    device=stitch_device,
                )
            self.progress.close()
            clock.lap("network")
            del x
            logits = _first_output(logits)
            if hasattr(logits, "as_tensor"):
                logits = logits.as_tensor()
            logits = logits[0].float()  # [C, X, Y, Z] float32 (autocast may hand back float16)
            if self.out_channels is not None and logits.shape[0] != self.out_channels:
                raise LWIError(
                    f"The network produced {logits.shape[0]} channels but the model lists {self.out_channels}."
                )
            # Input voxel (i, j, k) -> world (RAS) -> network voxel.
            to_net = np.linalg.inv(net_affine) @ affine_ras(image)
            size = tuple(int(s) for s in image.GetSize())
            labels_net = logits.argmax(dim=0).to(torch.uint8 if logits.shape[0] <= 256 else torch.int32)
            if self.interpolation == "linear":
                label_xyz = resample_argmax(logits, labels_net, to_net, size)
            else:
                label_xyz = resample_nearest(labels_net, to_net, size)
            probabilities = None
            if return_probabilities:
                probs = torch.softmax(logits, dim=0)
                del logits
                probabilities = _probabilities_image(resample_linear(probs, to_net, size), image)
                del probs
            else:
                del logits
            label_np = label_xyz.cpu().numpy()
            del label_xyz
            clock.lap("invert")
        if largest_component:
            label_np = keep_largest_components(label_np)
        label = array_to_image(label_np, image)
        from lwi.labelmap import label_pixel_type

        top = max([info.value for info in self.labels] + [int(label_np.max()) if label_np.size else 0])
        label = sitk.Cast(label, label_pixel_type(top))
        clock.lap("postprocess")
        return SegmentationResult(label, probabilities, str(device), sw_batch_size, clock.seconds)


class _StepClock:
    """Wall time per step; waits for the GPU at each step so its queued work is counted where it belongs."""

    def __init__(self, device: torch.device):
        import time

        self._time = time.perf_counter
        self._cuda = device.type == "cuda"
        self._last = self._time()
        self.seconds: Dict[str, float] = {}

    def lap(self, step: str) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        now = self._time()
        self.seconds[step] = now - self._last
        self._last = now


def _window_batches(shape: Sequence[int], roi: Sequence[int], overlap: float, batch: int) -> int:
    """Number of network calls MONAI's sliding window makes (its scan rule: windows ``roi*(1-overlap)`` apart)."""
    n = 1
    for size, r in zip(shape, roi):
        size, r = max(int(size), int(r)), int(r)  # MONAI pads a volume smaller than the window
        if size > r:
            n *= math.ceil((size - r) / max(int(r * (1 - overlap)), 1)) + 1
    return max(1, math.ceil(n / batch))


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


def resample_linear(volume: torch.Tensor, to_net: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of a multi-channel ``volume`` [C, X', Y', Z'] onto an input grid of ``size``.

    For probabilities: voxels outside ``volume`` are pure background (channel 0 = 1). Returns float32
    [C, X, Y, Z] on the CPU (the only full-size multi-channel array, and only when asked for).
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
        background = torch.zeros(channels, device=values.device)
        background[0] = 1.0
        values = torch.where(inside[None], values, background[:, None, None, None])
        out[:, :, :, k0:k1] = values.cpu()
    return out


def _probabilities_image(probs: torch.Tensor, reference: sitk.Image) -> sitk.Image:
    """[C, X, Y, Z] probabilities as a vector image on ``reference``'s grid."""
    array = probs.permute(3, 2, 1, 0).contiguous().numpy()  # [Z, Y, X, C]
    image = sitk.GetImageFromArray(array, isVector=True)
    image.CopyInformation(reference)
    return image


def keep_largest_components(label_xyz: np.ndarray) -> np.ndarray:
    """Keep the largest connected piece (26-connectivity, as MONAI's default) of every label value.

    Each label is processed inside its bounding box, so many small organs in a big CT stay cheap.
    """
    from scipy import ndimage

    out = label_xyz.copy()
    top = int(label_xyz.max()) if label_xyz.size else 0
    if top == 0:
        return out
    structure = ndimage.generate_binary_structure(3, 3)
    boxes = ndimage.find_objects(label_xyz.astype(np.int32) if label_xyz.dtype.kind not in "ui" else label_xyz)
    for value, box in enumerate(boxes, start=1):
        if box is None:
            continue
        mask = label_xyz[box] == value
        pieces, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        drop = mask & (pieces != int(sizes.argmax()))
        region = out[box]
        region[drop] = 0
    return out


def segment_file(
    segmenter: Segmenter,
    input_path: PathLike,
    output_path: PathLike,
    largest_component: bool = False,
    probabilities_path: Optional[PathLike] = None,
    compress: bool = True,
) -> SegmentationResult:
    """Read an image (file or DICOM folder), segment it and write the label map (and probabilities).

    Outputs are written atomically, so an error leaves no output file behind.
    """
    from lwi.io import read_image, write_sitk_atomic
    from lwi.labelmap import write_labelmap

    image = read_image(input_path)
    result = segmenter.segment(
        image, largest_component=largest_component, return_probabilities=probabilities_path is not None
    )
    write_labelmap(result.label, output_path, segmenter.labels, compress=compress)
    if probabilities_path is not None and result.probabilities is not None:
        try:
            write_sitk_atomic(result.probabilities, probabilities_path, compress=compress)
        except Exception:
            Path(output_path).unlink(missing_ok=True)  # all or nothing
            raise
    return result
