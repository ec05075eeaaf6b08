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
   most of its time (the kernels: :mod:`lwi.resampling`; measured in ``benchmarks/``).
5. Optionally keep the largest connected piece of each label, then build the ``sitk.Image`` on the
   input's grid (size, spacing, origin, direction copied from the input).

A :class:`Segmenter` loads the bundle once and segments many volumes (the Slicer module keeps one alive
in a worker process). If CUDA runs out of memory it retries with half the window batch, then stitches
the windows on the CPU, then runs entirely on the CPU, saying so through :meth:`Progress.log`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
import torch

from lwi.devices import physical_cores, resolve_device
from lwi.errors import LWIError
from lwi.labels import LabelInfo
from lwi.progress import Progress
from lwi.resampling import probabilities_image, resample_argmax, resample_linear, resample_nearest

PathLike = Union[str, "os.PathLike[str]"]

@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns.

    Attributes:
        label: the label map (unsigned integers, the bundle's label values) on the input's grid.
        probabilities: with ``return_probabilities``: a float32 vector image on the input's grid, one
            component per output channel (channel ``v`` = label value ``v``, 0 = background).
        uncertainty: with ``return_uncertainty``: the per-voxel uncertainty map (float32, 0 = certain,
            1 = every class equally likely) on the input grid (:func:`uncertainty_map`).
        uncertainty_score: with ``return_uncertainty``: the case's score (:func:`uncertainty_score`),
            higher = less certain; rank a folder's results by it to correct the least certain first.
        device: where the segmentation finally ran ("cuda:0", "cpu", ...).
        sw_batch_size: the window batch finally used (smaller than asked after running out of memory).
        seconds: wall time per step: "preprocess", "network" (sliding window), "invert" (argmax and
            back to the input grid, with probabilities if asked), "postprocess" (largest component,
            image assembly).
    """

    label: sitk.Image
    probabilities: Optional[sitk.Image] = None
    uncertainty: Optional[sitk.Image] = None
    uncertainty_score: Optional[float] = None
    device: str = "cpu"
    sw_batch_size: int = 1
    seconds: Dict[str, float] = field(default_factory=dict)


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


MIRRORS = [axes for n in range(4) for axes in itertools.combinations((2, 3, 4), n)]  # 8 sets of flipped axes


def mirrored(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """The mean of the model's logits over the 8 mirrorings of the windows' three spatial axes, each
    flipped back (nnU-Net's test-time mirroring)."""
    total = None
    for axes in MIRRORS:
        x = torch.flip(windows, axes) if axes else windows
        out = _first_output(model(x)).float()
        out = torch.flip(out, axes) if axes else out
        total = out if total is None else total + out
    return total / len(MIRRORS)


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
        mirror: test-time mirroring (nnU-Net's): every window's logits are averaged over the 8 flips
            of its three axes (8x the network time).
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
        mirror: bool = False,
        _model: Optional[torch.nn.Module] = None,
        _metadata: Optional[Dict[str, Any]] = None,
    ):
        from lwi.bundle import bundle_labels, load_bundle
        from lwi.data.preprocessing import PreprocessConfig
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
        self.sw_batch_size = int(sw_batch_size if sw_batch_size is not None else inference.get("sw_batch_size", 4))
        if self.sw_batch_size < 1:
            raise LWIError(f"The window batch size must be at least 1, got {self.sw_batch_size}.")
        self.amp = bool(amp)
        self.mirror = bool(mirror)
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
        self,
        image: sitk.Image,
        largest_component: bool = False,
        return_probabilities: bool = False,
        name: str = "",
        return_uncertainty: bool = False,
    ) -> SegmentationResult:
        """Segment one volume; the label map comes back on exactly ``image``'s grid.

        Args:
            image: a 3D SimpleITK image (:func:`lwi.io.read_image`), in the units the model was
                trained on (HU for CT).
            largest_component: keep only the largest connected piece of each label.
            return_probabilities: also return the softmax probabilities on the input grid.
            return_uncertainty: also return the uncertainty map on the input grid and its score.
            name: how messages name the image (its file), if at all.

        Raises:
            LWIError: a 2D, multi-component or degenerate image (:mod:`lwi.data.checks`), or one the
                model cannot take. A volume smaller than the window is padded, with a warning.
        """
        self._check_image(image, name)
        attempts = self._attempts()
        for i, (device, batch, stitch) in enumerate(attempts):
            try:
                return self._segment_once(
                    image, device, batch, stitch, largest_component, return_probabilities, name, return_uncertainty
                )
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
    def _check_image(self, image: sitk.Image, name: str) -> None:
        from lwi.data.checks import check_image

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
        check_image(image, f"The image {name}" if name else "The image")  # constant or sliver-shaped: refused as in training (lwi.data.checks)

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
        name: str = "",
        return_uncertainty: bool = False,
    ) -> SegmentationResult:
        from monai.inferers import sliding_window_inference

        from lwi.data.checks import padding_note, smaller_than_roi
        from lwi.data.preprocessing import background_value, preprocess
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
            if smaller_than_roi(x.shape[2:], self.roi_size):
                self.progress.log(padding_note([name or "the image"], self.roi_size))
            amp = self.amp and device.type == "cuda"
            total = _window_batches(x.shape[2:], self.roi_size, self.overlap, sw_batch_size)
            self.progress.start("segment", total=total, unit="batch")
            calls = [0]

            def predictor(windows: torch.Tensor) -> torch.Tensor:
                out = mirrored(model, windows) if self.mirror else _first_output(model(windows))
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
                    cval=background_value(x),  # as the training crops are padded
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
            probabilities = uncertainty = None
            if return_uncertainty:  # on the network grid, then one channel to the input grid
                uncertainty = resample_linear(uncertainty_map(logits)[None], to_net, size, outside=[0.0])[0]
            if return_probabilities:
                probs = torch.softmax(logits, dim=0)
                del logits
                probabilities = probabilities_image(resample_linear(probs, to_net, size), image)
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
        score = None
        if uncertainty is not None:
            score = uncertainty_score(uncertainty.numpy(), label_np)
            uncertainty = array_to_image(uncertainty.numpy(), image)
        clock.lap("postprocess")
        return SegmentationResult(
            label, probabilities, uncertainty, score, str(device), sw_batch_size, clock.seconds
        )


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


def uncertainty_map(logits: torch.Tensor) -> torch.Tensor:
    """Per-voxel uncertainty of ``logits`` [C, ...]: the entropy of the softmax divided by its maximum
    ``log C``, so 0 means one class is certain and 1 means every class is equally likely (comparable
    between models with different numbers of labels). Float32, on the logits' device."""
    log_p = torch.log_softmax(logits.float(), dim=0)
    entropy = -(log_p.exp() * log_p).sum(dim=0)
    return (entropy / math.log(max(int(logits.shape[0]), 2))).clamp_(0.0, 1.0)


def uncertainty_score(uncertainty: np.ndarray, label: np.ndarray) -> float:
    """A case's uncertainty score: the mean of the ``uncertainty`` map over the voxels of the predicted
    structures (``label`` > 0), both on the input grid. A volume in which nothing was found scores 1
    (the maximum), so it is among the first a user checks."""
    inside = np.asarray(label) > 0
    if not inside.any():
        return 1.0
    return float(np.asarray(uncertainty, dtype=np.float64)[inside].mean())


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
    uncertainty_path: Optional[PathLike] = None,
    output_format: str = "auto",
) -> SegmentationResult:
    """Read an image (file or DICOM folder), segment it and write the label map (and probabilities,
    uncertainty map).

    Outputs are written atomically, so an error leaves no output file behind. ``output_format``:
    "auto" (the output's file name decides; ``.dcm`` is DICOM SEG) or "dicom-seg" (:mod:`lwi.dicom_seg`).
    """
    from lwi.io import read_image

    image = read_image(input_path)
    result = segmenter.segment(
        image, largest_component=largest_component, return_probabilities=probabilities_path is not None,
        name=str(input_path), return_uncertainty=uncertainty_path is not None,
    )
    write_result(
        segmenter, result, output_path, probabilities_path, compress=compress, uncertainty_path=uncertainty_path,
        source=input_path, output_format=output_format,
    )
    return result


def write_result(
    segmenter: Segmenter,
    result: SegmentationResult,
    output_path: PathLike,
    probabilities_path: Optional[PathLike] = None,
    compress: bool = True,
    uncertainty_path: Optional[PathLike] = None,
    source: Optional[PathLike] = None,
    output_format: str = "auto",
) -> None:
    """Write a result's label map (with the model's segment names), probabilities and uncertainty map;
    atomically, all or nothing (:func:`lwi.outputs.together`: when a later file cannot be written, none
    is put in place and earlier versions stay as they were).

    A DICOM SEG output (``output_format`` "dicom-seg", or "auto" and a ``.dcm`` name) references the
    images of ``source``, the DICOM series folder that was segmented.
    """
    from lwi.dicom_seg import is_dicom_seg, label_terminology, write_dicom_seg
    from lwi.io import write_sitk_atomic
    from lwi.labelmap import write_labelmap
    from lwi.outputs import together

    with together():
        if is_dicom_seg(output_path, output_format):
            if source is None:
                raise LWIError(f"The DICOM SEG {output_path} needs the DICOM series that was segmented as its source.")
            arch = segmenter.metadata.get("architecture", {}).get("arch", "")
            write_dicom_seg(
                result.label, source, output_path, segmenter.labels, label_terminology(segmenter.metadata),
                model_name=f"LWI {arch}".strip(),
            )
        else:
            write_labelmap(result.label, output_path, segmenter.labels, compress=compress)
        extra = [(probabilities_path, result.probabilities, "--probabilities"),
                 (uncertainty_path, result.uncertainty, "--uncertainty")]
        for path, image, option in extra:
            if path is not None and image is not None:
                write_sitk_atomic(image, path, compress=compress, option=option)
