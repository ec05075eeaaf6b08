"""The preprocessed case cache, and random crops with augmentation on the cache's device.

A user's dataset is small (1 to 50 cases), so every case is preprocessed once per run and kept as
tensors on the training device. Crops, flips, rotations and intensity changes are then plain torch
ops on that device: with CUDA nothing goes back to the CPU and the data loader is never the
bottleneck. Every random choice is drawn from the caller's ``torch.Generator`` in a fixed order, so a
seeded generator gives the same batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from lwi.data.preprocessing import PreprocessConfig, background_value, build_transforms, preprocess
from lwi.errors import LWIError

if TYPE_CHECKING:
    import torch

    from lwi.data.dataset import Case, Dataset
    from lwi.progress import Progress


class CaseCache:
    """Preprocesses every case once and samples augmented crops from them.

    Args:
        cases: a :class:`~lwi.data.dataset.Dataset` or a list of :class:`~lwi.data.dataset.Case`.
        config: the preprocessing settings.
        device: where preprocessing runs and the tensors live.
        progress: reports one step per case (optional).
        with_labels: load the label maps (Step 2, validation); False for images only (Step 1).
        flip_prob: probability of a flip, per axis and per sample.
        rot90_prob: probability of a random 90/180/270-degree rotation in the axial (x, y) plane.
        intensity_prob: probability of each of the intensity scale and shift, per sample.

    Images are ``[C, X, Y, Z]`` float32 tensors, labels ``[1, X, Y, Z]`` uint8 tensors (int16 above 255).
    """

    def __init__(
        self,
        cases: Union[Dataset, Sequence[Case]],
        config: PreprocessConfig,
        device: Union[str, torch.device] = "cpu",
        progress: Optional[Progress] = None,
        with_labels: bool = True,
        flip_prob: float = 0.1,
        rot90_prob: float = 0.1,
        intensity_prob: float = 0.5,
    ):
        import torch

        self.cases: List[Case] = list(getattr(cases, "cases", cases))
        if not self.cases:
            raise LWIError("There are no cases to train on.")
        self.config = config
        self.device = torch.device(device)
        self.with_labels = with_labels
        self.flip_prob, self.rot90_prob, self.intensity_prob = flip_prob, rot90_prob, intensity_prob
        self.images: List[torch.Tensor] = []
        self.labels: List[Optional[torch.Tensor]] = []
        # Flat indices of each label's voxels, on the CPU: centres are drawn there without a GPU sync.
        self._foreground: List[Optional[Dict[int, torch.Tensor]]] = []
        self._pad_values: List[float] = []

        transforms = build_transforms(config, with_label=with_labels)
        total = len(self.cases)
        if progress is not None:
            progress.start("preprocess", total, unit="case")
        for i, case in enumerate(self.cases):
            if with_labels and case.label is None:
                raise LWIError(f"The case {case.name} has no label map.")
            image, label = preprocess(
                case.image, case.label if with_labels else None, config, self.device, transforms=transforms
            )
            image = image.as_tensor().float().contiguous()
            self.images.append(image)
            # Pad crops of small volumes with the background intensity (0 for CT, the minimum for MR).
            self._pad_values.append(background_value(image))
            if with_labels:
                lab = label.as_tensor().round()
                lab = lab.to(torch.uint8 if float(lab.max()) <= 255 else torch.int16).contiguous()
                self.labels.append(lab)
                self._foreground.append(_voxels_per_label(lab))
            else:
                self.labels.append(None)
                self._foreground.append(None)
            if progress is not None:
                progress.update(i + 1, total, case=case.name)
        if progress is not None:
            progress.close()

    def __len__(self) -> int:
        return len(self.cases)

    def label_frequencies(self, n_classes: int) -> List[float]:
        """The share of voxels of each label value ``0 .. n_classes - 1`` over the cached
        (preprocessed) label maps of all cases (from the per-label voxel lists crops are drawn from)."""
        counts = [0] * int(n_classes)
        total = 0
        for label, by_value in zip(self.labels, self._foreground):
            if label is None:
                continue
            total += label.numel()
            for value, voxels in by_value.items():
                if 0 < value < n_classes:
                    counts[value] += voxels.numel()
        if total == 0:
            return [1.0 / int(n_classes)] * int(n_classes)
        counts[0] = total - sum(counts)
        return [c / total for c in counts]

    @property
    def in_channels(self) -> int:
        """Channels of the cached images."""
        return int(self.images[0].shape[0])

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.cases]

    def full_case(self, i: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Case ``i`` whole: ``(image [C, X, Y, Z] float32, label [1, X, Y, Z] float32 or None)``."""
        label = self.labels[i]
        return self.images[i], (label.float() if label is not None else None)

    # -- sampling -------------------------------------------------------------------------------
    def sample(
        self,
        batch_size: int,
        roi: Sequence[int],
        generator: Optional[torch.Generator] = None,
        labelled: bool = True,
        pos_fraction: float = 0.5,
        augment: bool = True,
        flip_axes: Sequence[int] = (0, 1, 2),
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Random crops of size ``roi`` from random cases, augmented on the cache's device.

        Args:
            batch_size: crops per batch.
            roi: crop size (x, y, z) in voxels; volumes smaller than it are padded.
            generator: source of every random choice (a CPU generator avoids GPU syncs).
            labelled: True (Step 2): with probability ``pos_fraction`` a crop is centred on a voxel
                of one label, chosen uniformly among the labels the case has (nnU-Net's per-class
                oversampling: a small structure gets as many centred crops as a large one), else
                anywhere; labels returned. False (Step 1): crops anywhere, no labels.
            pos_fraction: share of crops centred on a label.
            augment: random flips per axis, 90-degree rotations in the axial plane (only when the
                ROI is square in x, y), intensity scale ``x(1+U(-0.1, 0.1))`` and shift
                ``+U(-0.1, 0.1)`` on the image only.
            flip_axes: the spatial axes (0 = x, 1 = y, 2 = z) flips may reverse; Step 1 leaves out
                depth, whose block order it learns.

        Returns:
            ``(images [B, C, *roi] float32, labels [B, 1, *roi] float32 integer-valued or None)``.
        """
        import torch

        roi = tuple(int(r) for r in roi)
        if len(roi) != 3 or min(roi) < 1:
            raise LWIError(f"The crop size must be three positive sizes, got {roi}.")
        if labelled and not self.with_labels:
            raise LWIError("Labelled crops were asked for, but this cache holds images only.")
        gen = generator
        images, labels = [], []
        for _ in range(batch_size):
            i = int(torch.randint(len(self.cases), (1,), generator=gen))
            image, label = self.images[i], (self.labels[i] if labelled else None)
            shape = tuple(image.shape[1:])
            centre = None
            by_label = self._foreground[i] if labelled else None
            if by_label and _uniform(gen) < pos_fraction:
                values = sorted(by_label)
                fg = by_label[values[int(torch.randint(len(values), (1,), generator=gen))]]
                flat = int(fg[int(torch.randint(fg.numel(), (1,), generator=gen))])
                centre = _unravel(flat, shape)
            starts = [_start(s, r, None if centre is None else c, gen) for s, r, c in _zip(shape, roi, centre)]
            window = (slice(None),) + tuple(slice(b, b + min(r, s)) for b, r, s in zip(starts, roi, shape))
            img = _pad_to(image[window], roi, self._pad_values[i])
            lab = _pad_to(label[window], roi, 0) if label is not None else None
            if augment:
                img, lab = self._augment(img, lab, roi, gen, flip_axes)
            images.append(img)
            if lab is not None:
                labels.append(lab)
        batch = torch.stack(images).contiguous()
        return batch, (torch.stack(labels).float() if labelled else None)

    def _augment(self, img: torch.Tensor, lab: Optional[torch.Tensor], roi: Tuple[int, ...], gen, flip_axes):
        import torch

        # One draw per axis whatever flip_axes is, so the random stream does not depend on it.
        flips = [d for d in (1, 2, 3) if _uniform(gen) < self.flip_prob and d - 1 in flip_axes]
        if flips:
            img = torch.flip(img, flips)
            lab = torch.flip(lab, flips) if lab is not None else None
        if roi[0] == roi[1] and _uniform(gen) < self.rot90_prob:
            k = int(torch.randint(1, 4, (1,), generator=gen))
            img = torch.rot90(img, k, (1, 2))
            lab = torch.rot90(lab, k, (1, 2)) if lab is not None else None
        if _uniform(gen) < self.intensity_prob:
            img = img * (1.0 + (_uniform(gen) * 0.2 - 0.1))
        if _uniform(gen) < self.intensity_prob:
            img = img + (_uniform(gen) * 0.2 - 0.1)
        return img.contiguous(), (lab.contiguous() if lab is not None else None)


def _voxels_per_label(label: torch.Tensor) -> Dict[int, torch.Tensor]:
    """``{label value: flat indices of its voxels}`` (CPU int64) for every non-zero value."""
    import torch

    flat = label.reshape(-1).cpu()
    fg = torch.nonzero(flat).reshape(-1)
    values = flat[fg].long()
    return {int(v): fg[values == v] for v in torch.unique(values).tolist()}


def _uniform(gen: Optional[torch.Generator]) -> float:
    import torch

    return float(torch.rand((), generator=gen))


def _zip(shape, roi, centre) -> Any:
    return zip(shape, roi, centre if centre is not None else (None,) * len(shape))


def _unravel(flat: int, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return tuple(reversed(out))


def _start(size: int, roi: int, centre: Optional[int], gen) -> int:
    """First index of a crop of ``roi`` along an axis of ``size``, kept inside the volume.

    With a centre, the crop is placed around it (shifted inward at the borders, so it still holds
    the centre); without one, uniformly anywhere.
    """
    import torch

    room = size - roi
    if room <= 0:
        return 0
    if centre is None:
        return int(torch.randint(room + 1, (1,), generator=gen))
    return min(max(centre - roi // 2, 0), room)


def _pad_to(x: torch.Tensor, roi: Tuple[int, ...], value: float) -> torch.Tensor:
    """Pad ``[C, *spatial]`` symmetrically up to ``roi`` with a constant."""
    import torch.nn.functional as F

    missing = [max(r - s, 0) for r, s in zip(roi, x.shape[1:])]
    if not any(missing):
        return x
    pad: List[int] = []
    for m in reversed(missing):  # F.pad lists the last axis first
        pad += [m // 2, m - m // 2]
    return F.pad(x, pad, mode="constant", value=value)
