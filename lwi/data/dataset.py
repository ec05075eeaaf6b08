"""Dataset folders: finding a user's cases and checking every pair before any training.

Accepted layouts (docs/contracts.md, "Dataset folders"):

- MSD: ``dataset.json`` with ``labels`` (``{"0": "background", ...}`` or ``{"background": 0, ...}``),
  a ``training`` list of ``{"image": ..., "label": ...}`` paths relative to the folder, optionally
  ``modality`` (or nnU-Net's ``channel_names``) and a ``validation`` list of case names or image paths.
  A ``dataset.json`` without a ``training`` list (nnU-Net v2) is read for its labels and modality and
  the cases are found as in the bare layout.
- Bare: ``imagesTr/`` and ``labelsTr/`` with matching case names; nnU-Net's ``_0000`` channel suffix on
  image names is accepted. Labels are then the sorted values found in the label maps, named
  ``label_<v>``; the modality is "MR" (per-volume z-score), since nothing says otherwise.

Modality: "CT" when the declared modality mentions CT (CT window normalisation), else "MR".

Every problem in every case is collected first, then reported at once as a
:class:`lwi.errors.DatasetError` with one line per case. Nothing is written here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from lwi.data.checks import image_problems
from lwi.errors import DatasetError, LWIError
from lwi.io import dicom_series_ids, read_image, read_image_information

PathLike = Union[str, Path]

# File name endings SimpleITK reads that a dataset folder may hold (compound ones first).
IMAGE_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".hdr",
    ".vtk",
    ".tif",
    ".tiff",
)
CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")

# Geometry tolerance between an image and its label map (relative, with the same absolute floor).
GEOMETRY_TOLERANCE = 1e-4


@dataclass
class Case:
    """One case: its name (file name without extension and ``_0000``), image and label map paths."""

    name: str
    image: Path
    label: Optional[Path] = None


@dataclass
class Dataset:
    """A validated dataset folder."""

    root: Path
    cases: List[Case]
    labels: Dict[int, str]
    modality: str = "MR"
    validation: Optional[List[str]] = None
    name: str = ""
    #: Declared label values that no label map contains (a model would never learn them).
    unused_labels: List[int] = field(default_factory=list)

    def unused_labels_note(self) -> Optional[str]:
        """The warning for :attr:`unused_labels`, or None."""
        if not self.unused_labels:
            return None
        shown = ", ".join(f"{v} ({self.labels.get(v, '?')})" for v in self.unused_labels)
        return (
            f"dataset.json declares label(s) {shown} that no label map of {self.root} contains: the model gets an "
            "output for each but never learns it, and its Dice is reported as n/a."
        )

    def __len__(self) -> int:
        return len(self.cases)

    def split(self) -> Tuple[List[Case], List[Case]]:
        """``(training cases, validation cases)`` following ``validation`` (empty when it is None)."""
        held = set(self.validation or [])
        return [c for c in self.cases if c.name not in held], [c for c in self.cases if c.name in held]


def case_name(path: PathLike) -> str:
    """A case's name from an image or label path: the file name without extension and ``_0000``."""
    name = Path(path).name
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return CHANNEL_SUFFIX.sub("", name)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def is_dicom_folder(path: Path) -> bool:
    """Whether ``path`` is a (visible) folder holding a DICOM series."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    # A folder of image files (or of folders) is no DICOM series: skip GDCM's scan of every file.
    if all(p.name.startswith(".") or p.is_dir() or _is_image_file(p) for p in path.iterdir()):
        return False
    return bool(dicom_series_ids(path))


def list_images(folder: PathLike) -> List[Path]:
    """The images in a folder of unlabelled volumes, sorted: image files and DICOM series sub-folders.

    A dataset folder (one with ``imagesTr/``) lists its ``imagesTr/``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise LWIError(f"The folder {root} does not exist.")
    if (root / "imagesTr").is_dir():
        root = root / "imagesTr"
    images = sorted(p for p in root.iterdir() if _is_image_file(p) or is_dicom_folder(p))
    if not images:
        raise LWIError(f"The folder {root} contains no images.")
    return images


def parse_labels(raw: object) -> Dict[int, str]:
    """Read ``labels`` in either style: ``{"0": "background"}`` or ``{"background": 0}``.

    Raises:
        LWIError: for region-based (nnU-Net) labels, non-integer values or duplicates.
    """
    if not isinstance(raw, dict) or not raw:
        raise LWIError('dataset.json has no "labels" mapping.')
    labels: Dict[int, str] = {}
    if all(_as_int(k) is not None for k in raw):
        pairs = [(_as_int(k), v) for k, v in raw.items()]
    elif all(_as_int(v) is not None for v in raw.values()):
        pairs = [(_as_int(v), k) for k, v in raw.items()]
    elif any(isinstance(v, (list, tuple)) for v in raw.values()):
        raise LWIError("dataset.json uses region-based labels (lists of values), which are not supported.")
    else:
        raise LWIError('dataset.json "labels" must map integer values to names or names to integer values.')
    names: Dict[str, int] = {}
    for value, name in pairs:
        if value < 0:
            raise LWIError(f"dataset.json declares a negative label value {value}.")
        if value in labels:
            raise LWIError(f"dataset.json declares the label value {value} twice.")
        if not isinstance(name, str) or not name.strip():
            raise LWIError(f"dataset.json gives the label value {value} an empty name; name every label.")
        if name.strip().lower() in names:
            # Results are reported and compared by name: two labels of one name would merge there.
            raise LWIError(
                f"dataset.json names the label values {names[name.strip().lower()]} and {value} both "
                f"'{name.strip()}'; give each label its own name."
            )
        names[name.strip().lower()] = value
        labels[value] = str(name)
    labels.setdefault(0, "background")
    return dict(sorted(labels.items()))


def _as_int(value: object) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return None


def modality_from(meta: dict) -> str:
    """ "CT" when ``modality``/``channel_names`` mentions CT, else "MR"."""
    raw = meta.get("modality", meta.get("channel_names"))
    values = list(raw.values()) if isinstance(raw, dict) else [raw] if raw else []
    return "CT" if any(re.search(r"\bct\b", str(v), re.IGNORECASE) for v in values) else "MR"


def load_dataset(data_dir: PathLike, require_labels: bool = True) -> Dataset:
    """Find, and check, the cases of a dataset folder (MSD or bare layout).

    Args:
        data_dir: the dataset folder.
        require_labels: when True every case needs a valid label map (training, evaluation); when
            False (Step 1 pre-training) only the images are checked and ``Case.label`` is None.

    Raises:
        LWIError: the folder or its ``dataset.json`` cannot be used at all.
        DatasetError: listing every problem found, one line per case.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise LWIError(f"The dataset folder {root} does not exist.")
    meta = read_dataset_json(root)
    declared = parse_labels(meta["labels"]) if "labels" in meta else None
    problems: List[str] = []
    cases = list_cases(root, require_labels, problems, meta)
    if not cases and not problems:
        raise LWIError(f"The dataset folder {root} contains no cases (expected imagesTr/ and labelsTr/).")

    found_values: Dict[str, List[int]] = {}
    for case in cases:
        case_problems = _check_case(case, require_labels, declared, found_values)
        if case_problems:
            problems.append(f"{case.name}: " + "; ".join(case_problems))

    validation = None
    if meta.get("validation") is not None:
        validation = validation_names(meta["validation"], cases, problems)
    if problems:
        raise DatasetError(problems, header=f"The dataset {root} has problems")

    unused: List[int] = []
    if declared is not None:
        labels = declared
        if require_labels:
            present = {v for vs in found_values.values() for v in vs}
            unused = [v for v in labels if v != 0 and v not in present]
    else:
        values = sorted({v for vs in found_values.values() for v in vs} | {0})
        labels = {v: ("background" if v == 0 else f"label_{v}") for v in values}
    return Dataset(
        root=root,
        cases=cases,
        labels=labels,
        modality=modality_from(meta),
        validation=validation,
        name=str(meta.get("name", root.name)),
        unused_labels=unused,
    )


def read_dataset_json(root: PathLike) -> dict:
    """The folder's ``dataset.json`` as a dict ({} when there is none).

    Raises:
        LWIError: the file is not valid JSON or not an object.
    """
    json_path = Path(root) / "dataset.json"
    if not json_path.is_file():
        return {}
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise LWIError(f"{json_path} is not valid JSON ({exc}).") from None
    except RecursionError:
        raise LWIError(f"{json_path} is nested too deeply to be a dataset description.") from None
    if not isinstance(meta, dict):
        raise LWIError(f"{json_path} must hold a JSON object.")
    return meta


def dataset_files(data_dir: PathLike) -> List[Path]:
    """Every file of a dataset folder LWI reads (``dataset.json``, images, label maps), listed without
    reading them: the inputs no output may be (:func:`lwi.outputs.check_collisions`). A folder that
    cannot be listed yields what was found; :func:`load_dataset` reports its problems."""
    root = Path(data_dir)
    files = [root / "dataset.json"]
    for labelled in (True, False):
        try:
            cases = list_cases(root, labelled, [])
        except (LWIError, OSError):
            continue
        for case in cases:
            files += [case.image] + ([case.label] if case.label is not None else [])
    return list(dict.fromkeys(files))


def list_cases(
    data_dir: PathLike,
    require_labels: bool = True,
    problems: Optional[List[str]] = None,
    meta: Optional[dict] = None,
) -> List[Case]:
    """The cases of a dataset folder as its layout pairs them, before the files are checked: the
    ``dataset.json`` training list, else ``imagesTr/`` (+ ``labelsTr/``) matched by case name.

    Entries that cannot be paired are left out with one line each in ``problems`` (when given);
    ``meta`` is the folder's ``dataset.json`` if already read. :func:`load_dataset` checks the cases.
    """
    root = Path(data_dir)
    meta = read_dataset_json(root) if meta is None else meta
    found = problems if problems is not None else []
    if isinstance(meta.get("training"), list) and meta["training"]:
        return _cases_from_json(root, meta["training"], require_labels, found)
    return _cases_from_folders(root, require_labels, found)


def _cases_from_json(root: Path, entries: list, require_labels: bool, problems: List[str]) -> List[Case]:
    cases = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            problems.append(f"training entry {i}: needs an \"image\" path.")
            continue
        image = (root / entry["image"]).resolve()
        label = entry.get("label")
        if require_labels and not isinstance(label, str):
            problems.append(f"{case_name(image)}: the training entry has no \"label\" path.")
            continue
        label_path = (root / label).resolve() if (require_labels and label) else None
        name = case_name(image)
        if any(c.name == name for c in cases):
            problems.append(f"{name}: listed twice in the training list.")
            continue
        cases.append(Case(name, image, label_path))
    return cases


def _cases_from_folders(root: Path, require_labels: bool, problems: List[str]) -> List[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise LWIError(f"The dataset folder {root} has no dataset.json training list and no imagesTr/ folder.")
    by_name: Dict[str, List[Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if _is_image_file(p) or is_dicom_folder(p):
            by_name.setdefault(case_name(p), []).append(p)
    labels: Dict[str, Path] = {}
    if require_labels:
        if not labels_dir.is_dir():
            raise LWIError(f"The dataset folder {root} has no labelsTr/ folder.")
        for p in sorted(labels_dir.iterdir()):
            if _is_image_file(p) or is_dicom_folder(p):
                labels[case_name(p)] = p
    cases = []
    for name, paths in by_name.items():
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            problems.append(f"{name}: several image files ({listed}); only single-channel cases are supported.")
            continue
        if require_labels and name not in labels:
            problems.append(f"{name}: no label map in labelsTr/ for {paths[0].name}.")
            continue
        cases.append(Case(name, paths[0], labels.get(name)))
    if require_labels:
        for name in sorted(set(labels) - set(by_name)):
            problems.append(f"{name}: label map {labels[name].name} has no image in imagesTr/.")
    return cases


def _geometry(obj) -> Tuple[Tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]:
    return (
        tuple(obj.GetSize()),
        np.asarray(obj.GetSpacing()),
        np.asarray(obj.GetOrigin()),
        np.asarray(obj.GetDirection()),
    )


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, rtol=GEOMETRY_TOLERANCE, atol=GEOMETRY_TOLERANCE))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_case(
    case: Case,
    require_labels: bool,
    declared: Optional[Dict[int, str]],
    found_values: Dict[str, List[int]],
) -> List[str]:
    """All problems of one case (empty when it is fine)."""
    problems: List[str] = []
    image_geom = _image_geometry(case.image, "image", problems)
    if not require_labels:
        return problems
    assert case.label is not None
    try:
        label = read_image(case.label)
    except LWIError as exc:
        problems.append(_lower_first(str(exc)).replace("the image", "the label map").rstrip("."))
        return problems
    if image_geom is not None:
        size, spacing, origin, direction = image_geom
        l_size, l_spacing, l_origin, l_direction = _geometry(label)
        if size != l_size:
            problems.append(f"label size {l_size} differs from image size {size}")
        else:
            if not _close(spacing, l_spacing):
                problems.append(f"label spacing {_fmt(l_spacing)} differs from image spacing {_fmt(spacing)}")
            if not _close(origin, l_origin):
                problems.append(f"label origin {_fmt(l_origin)} differs from image origin {_fmt(origin)}")
            if not _close(direction, l_direction):
                problems.append("label direction differs from image direction")
    array = sitk.GetArrayViewFromImage(label)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.mod(array, 1) == 0):
            problems.append("label map has non-integer values")
            return problems
        array = array.astype(np.int64)
    values = _unique_values(array)
    found_values[case.name] = values
    if any(v < 0 for v in values):
        problems.append(f"label map has negative values {[v for v in values if v < 0]}")
    if declared is not None:
        undeclared = [v for v in values if v not in declared]
        if undeclared:
            problems.append(f"label values {undeclared} are not declared in dataset.json")
    if not any(v != 0 for v in values):
        problems.append("label map is empty (only background)")
    return problems


def _unique_values(array: np.ndarray) -> List[int]:
    """Sorted distinct values of an integer array (bincount: much faster than np.unique on big volumes)."""
    lo, hi = int(array.min()), int(array.max())
    if hi - lo > 1_000_000:
        return [int(v) for v in np.unique(array)]
    counts = np.bincount((array.ravel() - lo).astype(np.int64), minlength=hi - lo + 1)
    return [int(v) + lo for v in np.flatnonzero(counts)]


def _image_geometry(path: Path, what: str, problems: List[str]):
    """Check an image in full: readable, complete, 3D, scalar, finite (:func:`lwi.io.read_image`) and
    not degenerate (:mod:`lwi.data.checks`). Returns its geometry, or None after adding the problem."""
    try:
        image = read_image(path)
    except LWIError as exc:
        problems.append(_header_problem(path, what) or _lower_first(str(exc)).rstrip("."))
        return None
    degenerate = image_problems(image)
    if degenerate:
        problems.append(f"{what} {path.name}: " + "; ".join(degenerate))
        return None
    return _geometry(image)


def _header_problem(path: Path, what: str) -> Optional[str]:
    """Why a file that :func:`read_image` refused is not a 3D scalar volume, from its header."""
    if path.is_dir():
        return None
    try:
        reader = read_image_information(path)
    except LWIError:
        return None
    dim, size = reader.GetDimension(), reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        return f"{what} {path.name} has {reader.GetNumberOfComponents()} components per voxel"
    if (dim != 3 or min(size) < 2) and not (dim == 4 and size[3] == 1 and min(size[:3]) >= 2):
        shown = 2 if dim == 3 else dim  # a single-slice 3D file is a 2D image
        return f"{what} {path.name} is {shown}D (size {' x '.join(map(str, size))}), not 3D"
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def validation_names(raw: object, cases: Sequence[Case], problems: List[str]) -> List[str]:
    """The case names a ``validation`` list (case names or image paths) gives, among ``cases``; an
    entry naming no case of ``cases``, or a list that is no list, adds a line to ``problems``."""
    if not isinstance(raw, list):
        problems.append('dataset.json: "validation" must be a list of case names or image paths.')
        return []
    known = {c.name for c in cases}
    names = []
    for item in raw:
        value = item.get("image") if isinstance(item, dict) else item
        name = case_name(str(value)) if value is not None else None
        if name not in known:
            problems.append(f"dataset.json: validation case {value!r} is not in the training list.")
        else:
            names.append(name)
    return names
