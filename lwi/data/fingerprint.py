"""A dataset's fingerprint, the facts a training plan is derived from (as nnU-Net's planning does).

Per case: the voxel spacing and the size after cropping to the foreground (both along the RAS axes
the network sees), and per label the physical extent of the structure's bounding box and its share of
the cropped volume. Over all cases: the intensity statistics of the labelled foreground (mean, SD,
0.5 and 99.5 percentiles), the modality and the number of image channels. Only images and label maps
are read; nothing is resampled, so fingerprinting costs about one read of the dataset.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lwi.errors import LWIError

# Foreground for the crop, as the preprocessing crops: above the CT window's lower bound, non-zero for MR.
CT_FOREGROUND_HU = -175.0
# At most this many labelled voxels per case enter the intensity statistics (a fixed-stride subsample).
_INTENSITY_SAMPLES = 20000


@dataclass
class Fingerprint:
    """What :func:`fingerprint` measured; JSON round trip with :meth:`to_dict` / :meth:`from_dict`.

    ``spacings`` and ``shapes`` are per case along R, A, S (mm; voxels after the foreground crop);
    ``extents`` maps a label name to its bounding-box size in mm (R, A, S) in each case that has it;
    ``shares`` maps a label name to its median share of the cropped volume's voxels.
    """

    modality: str
    channels: int
    labels: Dict[int, str]
    spacings: List[Tuple[float, float, float]]
    shapes: List[Tuple[int, int, int]]
    extents: Dict[str, List[Tuple[float, float, float]]] = field(default_factory=dict)
    shares: Dict[str, float] = field(default_factory=dict)
    intensity: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # how long reading the dataset took (an estimate of preprocessing's cost)

    @property
    def n_cases(self) -> int:
        return len(self.shapes)

    def median_spacing(self) -> Tuple[float, float, float]:
        return _triple(np.median(np.asarray(self.spacings, dtype=float), axis=0))

    def median_size_mm(self) -> Tuple[float, float, float]:
        """Median physical size of the cropped volumes (mm)."""
        sizes = np.asarray(self.shapes, dtype=float) * np.asarray(self.spacings, dtype=float)
        return _triple(np.median(sizes, axis=0))

    def structure_extent_mm(self, percentile: float = 95.0) -> Tuple[float, float, float]:
        """The ``percentile`` of every label's bounding-box size, the largest label per axis (mm)."""
        per_label = [np.percentile(np.asarray(v, dtype=float), percentile, axis=0) for v in self.extents.values() if v]
        if not per_label:
            return (0.0, 0.0, 0.0)
        return _triple(np.max(np.stack(per_label), axis=0))

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["labels"] = {str(k): v for k, v in self.labels.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fingerprint:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        values["labels"] = {int(k): str(v) for k, v in dict(d.get("labels", {})).items()}
        values["spacings"] = [_triple(s) for s in d.get("spacings", [])]
        values["shapes"] = [tuple(int(v) for v in s) for s in d.get("shapes", [])]
        values["extents"] = {k: [_triple(e) for e in v] for k, v in dict(d.get("extents", {})).items()}
        return cls(**values)


def _triple(values: Sequence[float]) -> Tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def fingerprint(dataset: Any, modality: Optional[str] = None) -> Fingerprint:
    """Fingerprint a :class:`lwi.data.dataset.Dataset` (cases with or without label maps)."""
    import nibabel.orientations as nio
    import SimpleITK as sitk

    from lwi.io import affine_ras, read_image

    modality = (modality or dataset.modality or "MR").upper()
    if not dataset.cases:
        raise LWIError("There are no cases to plan for.")
    start = time.monotonic()
    labels = {int(k): str(v) for k, v in dataset.labels.items() if int(k) != 0}
    spacings, shapes, channels = [], [], 1
    extents: Dict[str, List[Tuple[float, float, float]]] = {name: [] for name in labels.values()}
    share_lists: Dict[str, List[float]] = {name: [] for name in labels.values()}
    samples: List[np.ndarray] = []
    for case in dataset.cases:
        image = read_image(case.image)
        channels = max(channels, int(image.GetNumberOfComponentsPerPixel()))
        array = sitk.GetArrayFromImage(image)
        if array.ndim == 4:  # vector pixels: the first channel decides the foreground
            array = array[..., 0]
        array = np.asarray(array).transpose(2, 1, 0)  # ITK index order i, j, k
        affine = affine_ras(image)
        ornt = nio.io_orientation(affine)  # row: the RAS axis that array axis i follows
        order = [int(w) for w, _ in ornt]
        spacing_ijk = np.linalg.norm(affine[:3, :3], axis=0)
        threshold = CT_FOREGROUND_HU if modality == "CT" else 0.0
        box = _bounding_box(array > threshold)
        if box is None:
            box = tuple(slice(0, s) for s in array.shape)
        cropped_shape = [box[i].stop - box[i].start for i in range(3)]
        spacings.append(_to_ras(spacing_ijk, order))
        shapes.append(tuple(int(v) for v in _to_ras(cropped_shape, order)))
        if case.label is None:
            continue
        label = sitk.GetArrayFromImage(read_image(case.label)).transpose(2, 1, 0)[box]
        image_crop = array[box]
        fg = label > 0
        if fg.any():
            values = image_crop[fg].astype(np.float64)
            samples.append(values[:: max(1, values.size // _INTENSITY_SAMPLES)])
        for value, name in labels.items():
            mask = label == value
            inner = _bounding_box(mask)
            if inner is None:
                continue
            size = np.asarray([inner[i].stop - inner[i].start for i in range(3)], dtype=float) * spacing_ijk
            extents[name].append(_to_ras(size, order))
            share_lists[name].append(float(mask.sum()) / mask.size)
    intensity: Dict[str, float] = {}
    if samples:
        pooled = np.concatenate(samples)
        intensity = {
            "mean": float(pooled.mean()),
            "sd": float(pooled.std()),
            "p00_5": float(np.percentile(pooled, 0.5)),
            "p99_5": float(np.percentile(pooled, 99.5)),
        }
    return Fingerprint(
        modality=modality,
        channels=channels,
        labels=labels,
        spacings=spacings,
        shapes=shapes,
        extents=extents,
        shares={k: float(np.median(v)) for k, v in share_lists.items() if v},
        intensity=intensity,
        seconds=time.monotonic() - start,
    )


def _to_ras(values: Sequence[float], order: Sequence[int]) -> Tuple[float, float, float]:
    out = [0.0, 0.0, 0.0]
    for axis, world in enumerate(order):
        out[world] = float(values[axis])
    return _triple(out)


def _bounding_box(mask: np.ndarray) -> Optional[Tuple[slice, slice, slice]]:
    """The smallest box holding every True voxel, or None when there is none."""
    if not mask.any():
        return None
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return (box[0], box[1], box[2])
