"""Training cases: collect them, match their labels by name, export them as a training folder.

Plain Python (SimpleITK and numpy, both shipped with Slicer; the core is imported only to read a
dataset folder). The Slicer side (``LWITraining.py``) writes each scene case (a volume and a
segmentation) to an image file and a label map file whose values stand for the segments, and hands
them here as :class:`CaseSource` objects; cases from a dataset folder come from :func:`folder_cases`.

Matching is by segment *name*, so "Liver" (value 1 in one case) and "liver" (value 3 in another)
are the same label: :func:`match_cases` builds one label table for all cases and, for each case,
the value remapping to it. A case with a problem (a missing or empty segment, an unreadable file, a
label map on another grid...) is kept in the table with its reasons and left out of training, never
silently dropped.

:func:`export_cases` writes the included cases into a folder in the MSD layout the core reads
(``dataset.json``, ``imagesTr/``, ``labelsTr/``), adding to what the folder already holds: this is
also what LWISegmentation's "Add to training set" calls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

#: Where :func:`export_cases` puts images and label maps (MSD layout).
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
DATASET_JSON = "dataset.json"
#: NRRD keeps the full geometry and, compressed, stays small.
EXPORT_EXTENSION = ".nrrd"

SCENE = "scene"
FOLDER = "folder"


def normalize_name(name: str) -> str:
    """The key two segment names are matched by: case, spaces, ``_`` and ``-`` do not matter
    (``"Left Kidney"``, ``"left_kidney"`` and ``" left-kidney "`` are the same label)."""
    return " ".join(re.split(r"[\s_\-]+", str(name).strip().lower())).strip()


@dataclass
class CaseSource:
    """One training case as files.

    Attributes:
        name: the case's name (shown in the table; a file stem when exported).
        image: the image file.
        label: the label map file (on the image's grid), or None when there is none.
        segments: label value in ``label`` -> segment name.
        origin: ``"scene"`` (a volume and a segmentation of the Slicer scene) or ``"folder"``.
        problems: problems already known when it was collected (e.g. a segmentation without a
            volume); :func:`inspect_case` adds what it finds in the files.
        empty: names of segments without any voxel (filled by :func:`inspect_case`).
        modality: "CT" or "MR" as its dataset folder declares it (folder cases: the core's reading of
            ``dataset.json``), None when unknown (scene cases).
        validation: its dataset folder's ``dataset.json`` lists it under ``validation`` (a held-out
            case of ``lwi train --data`` on that folder); :func:`export_cases` keeps it one.
        node: a scene case's volume node (previews show it rather than a copy of ``image``).
    """

    name: str
    image: Optional[str]
    label: Optional[str]
    segments: Dict[int, str] = field(default_factory=dict)
    origin: str = SCENE
    problems: List[str] = field(default_factory=list)
    empty: List[str] = field(default_factory=list)
    modality: Optional[str] = None
    validation: bool = False
    node: Any = field(default=None, compare=False, repr=False)


@dataclass
class CaseRow:
    """One row of the case table: the case, its segments, why it is excluded (``problems``) or
    what the user should know about it (``notes``), and ``remap`` (its label value -> the
    training label value)."""

    source: CaseSource
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    remap: Dict[int, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def included(self) -> bool:
        return not self.problems

    @property
    def segment_names(self) -> List[str]:
        return [self.source.segments[v] for v in sorted(self.source.segments)]

    def status(self) -> str:
        """``"OK"``, ``"OK (note)"`` or ``"Excluded: reason; reason"`` for the table."""
        if self.problems:
            return "Excluded: " + "; ".join(self.problems)
        return "OK" + (" (" + "; ".join(self.notes) + ")" if self.notes else "")


@dataclass
class TrainingSet:
    """The matched cases: one label table (``{value: name}``, 0 = background) for all of them."""

    labels: Dict[int, str]
    rows: List[CaseRow]

    @property
    def included(self) -> List[CaseRow]:
        return [r for r in self.rows if r.included]

    @property
    def excluded(self) -> List[CaseRow]:
        return [r for r in self.rows if not r.included]

    def table(self) -> List[Tuple[str, str, str, str]]:
        """``(case, origin, segments, status)`` rows for the GUI table, in order."""
        return [(r.name, r.source.origin, ", ".join(r.segment_names), r.status()) for r in self.rows]


# -- reading files --------------------------------------------------------------------------------


def voxel_counts(label_path: str) -> Dict[int, int]:
    """How many voxels each value of a label map has (values with none are left out)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(label_path))  # keep a reference: the view below does not own its data
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    array = array.astype(np.int64, copy=False)
    lo = int(array.min()) if array.size else 0
    counts = np.bincount((array.ravel() - lo), minlength=1)
    return {int(v) + lo: int(counts[v]) for v in np.flatnonzero(counts)}


def _header(path: str):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _same_grid(a, b, tolerance: float = 1e-4) -> Optional[str]:
    """None when two headers describe the same grid, else what differs."""
    import numpy as np

    if tuple(a.GetSize()) != tuple(b.GetSize()):
        return f"label map size {tuple(b.GetSize())} differs from image size {tuple(a.GetSize())}"
    for what in ("Spacing", "Origin", "Direction"):
        va, vb = np.asarray(getattr(a, "Get" + what)()), np.asarray(getattr(b, "Get" + what)())
        if not np.allclose(va, vb, rtol=tolerance, atol=tolerance):
            return f"label map {what.lower()} differs from the image's"
    return None


def inspect_case(source: CaseSource, count_voxels: bool = True) -> CaseSource:
    """Check a case's files and add what is wrong to ``source.problems`` (returns ``source``).

    The image and label map must exist and be readable 3D images on the same grid; with
    ``count_voxels`` the label map is read in full and segments without voxels go to
    ``source.empty``, values that no segment names to ``problems``.
    """
    problems = source.problems
    if not source.image or not os.path.exists(source.image):
        problems.append("no image" if not source.image else f"image file {source.image} does not exist")
        return source
    if not source.label or not os.path.exists(source.label):
        problems.append("no label map" if not source.label else f"label file {source.label} does not exist")
        return source
    try:
        image, label = _header(source.image), _header(source.label)
    except RuntimeError as exc:
        problems.append("cannot read its files (" + str(exc).strip().splitlines()[-1][:200] + ")")
        return source
    if image.GetDimension() != 3 or image.GetNumberOfComponents() != 1:
        problems.append("the image is not a 3D single-component volume")
        return source
    mismatch = _same_grid(image, label)
    if mismatch:
        problems.append(mismatch)
        return source
    if not source.segments:
        problems.append("no segments")
        return source
    if count_voxels:
        counts = voxel_counts(source.label)
        source.empty = [name for value, name in sorted(source.segments.items()) if counts.get(value, 0) == 0]
        unnamed = sorted(v for v in counts if v != 0 and v not in source.segments)
        if unnamed:
            problems.append(f"label values {unnamed} belong to no named segment")
    return source


def folder_cases(folder: str) -> List[CaseSource]:
    """The cases of a dataset folder (MSD layout or ``imagesTr/`` + ``labelsTr/``), checked by the
    core's own reader (:func:`lwi.data.dataset.load_dataset`); cases it rejects carry its reasons.

    Raises ValueError when the folder cannot be used at all (missing, no cases, bad dataset.json).
    """
    from lwi.data import dataset as core_dataset
    from lwi.errors import DatasetError, LWIError

    try:
        found = core_dataset.load_dataset(folder, require_labels=True)
        held = set(found.validation or [])
        return [
            CaseSource(c.name, str(c.image), str(c.label), _named(found.labels), FOLDER, modality=found.modality,
                       validation=c.name in held)
            for c in found.cases
        ]
    except DatasetError as exc:
        reasons: Dict[str, List[str]] = {}
        general: List[str] = []
        for line in exc.problems:
            name, sep, reason = line.partition(": ")
            (reasons.setdefault(name, []).append(reason) if sep else general.append(line))
    except LWIError as exc:
        raise ValueError(str(exc)) from None
    # Some cases were rejected: list every case (the core's pairing of images and label maps),
    # each with its reasons, so the good ones can still be used.
    meta = core_dataset.read_dataset_json(folder)
    labels = core_dataset.parse_labels(meta["labels"]) if "labels" in meta else {}
    cases = core_dataset.list_cases(folder, require_labels=True, meta=meta)
    # The held-out cases the list names (an entry naming no case is one of the core's general problems).
    held = set(core_dataset.validation_names(meta["validation"], cases, [])) if meta.get("validation") is not None else set()
    listed = {c.name for c in cases}
    result = [
        CaseSource(c.name, str(c.image), str(c.label) if c.label else None, _named(labels), FOLDER,
                   problems=list(reasons.get(c.name, [])), modality=core_dataset.modality_from(meta),
                   validation=c.name in held)
        for c in cases
    ]
    for name in sorted(set(reasons) - listed):  # an orphan label map, a doubly listed case...
        result.append(CaseSource(name, None, None, {}, FOLDER, problems=list(reasons[name])))
    if general and not result:
        raise ValueError("; ".join(general))
    return result


def _named(labels: Dict[int, str]) -> Dict[int, str]:
    return {int(v): str(n) for v, n in labels.items() if int(v) != 0}


# -- matching -------------------------------------------------------------------------------------


def match_cases(
    sources: Sequence[CaseSource],
    labels: Optional[Sequence[str]] = None,
    inspect: bool = True,
) -> TrainingSet:
    """Match the segments of all cases by name and decide which cases can be trained on.

    Args:
        sources: the cases (scene and folder cases may be mixed).
        labels: the structures to train, by name (matched as :func:`normalize_name` does), in the
            order they get label values 1, 2, ...; None: every name that more than half of the
            cases have (so one case with an extra segment does not exclude all the others).
        inspect: run :func:`inspect_case` on scene cases first (folder cases were checked by the
            core when collected).

    A case is excluded (with the reason) when its files have a problem, when two of its segments
    have the same name, or when a structure to train is missing or empty in it. Segments that are
    not trained are noted; their voxels count as background.
    """
    for source in sources:
        if inspect and source.origin != FOLDER and not source.problems:
            inspect_case(source)

    def keys(source: CaseSource) -> Dict[str, List[int]]:
        found: Dict[str, List[int]] = {}
        for value in sorted(source.segments):
            found.setdefault(normalize_name(source.segments[value]), []).append(value)
        return found

    spelled: Dict[str, str] = {}  # key -> the first spelling seen, for display
    counted: Dict[str, int] = {}
    usable = [s for s in sources if not s.problems]
    for source in usable:
        for key, values in keys(source).items():
            spelled.setdefault(key, source.segments[values[0]].strip())
            counted[key] = counted.get(key, 0) + 1
    if labels is not None:
        wanted = [normalize_name(n) for n in labels]
        for name, key in zip(labels, wanted):
            spelled[key] = str(name).strip()  # the user's spelling names the label
    else:
        wanted = [k for k in spelled if k and counted[k] * 2 > len(usable)]
    table = {i + 1: spelled[key] for i, key in enumerate(wanted)}
    value_of = {key: i + 1 for i, key in enumerate(wanted)}

    rows = []
    for source in sources:
        row = CaseRow(source, problems=list(source.problems))
        if not row.problems:
            found = keys(source)
            empty = {normalize_name(n) for n in source.empty}
            if "" in found:
                row.problems.append("a segment has no name")
            for key, values in found.items():
                if key and len(values) > 1:
                    row.problems.append(f"{len(values)} segments are named '{spelled.get(key, key)}'")
            for key in wanted:
                if key not in found:
                    row.problems.append(f"no segment '{spelled[key]}'")
                elif key in empty:
                    row.problems.append(f"segment '{spelled[key]}' is empty")
            if source.validation:
                row.notes.append("held out for validation, as its dataset.json lists it")
            unused = [source.segments[v[0]] for k, v in found.items() if k and k not in value_of]
            if unused:
                share = ", ".join(f"'{n}'" for n in unused)
                row.notes.append(f"not trained: {share} (counted as background)")
            row.remap = {v[0]: value_of[k] for k, v in found.items() if k in value_of}
        rows.append(row)
    return TrainingSet(labels=table, rows=rows)


# -- export ---------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    """What :func:`export_cases` did: the folder, its label table after the export, and the case
    names the core reads for the exported cases (a name already in the folder gets a ``_2`` suffix)."""

    folder: str
    labels: Dict[int, str]
    written: List[str]
    skipped: List[CaseRow]


def read_training_folder(folder: str) -> Tuple[Dict[int, str], List[Dict[str, Any]], Dict[str, Any]]:
    """``(labels, training entries, the whole dataset.json)`` of a folder written by
    :func:`export_cases` (empty when it has no dataset.json yet)."""
    path = os.path.join(folder, DATASET_JSON)
    if not os.path.isfile(path):
        return {0: "background"}, [], {}
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    from LWICommon.labels import normalize_labels

    labels = normalize_labels(meta.get("labels") or {"0": "background"})
    labels.setdefault(0, "background")
    return labels, list(meta.get("training") or []), meta


def _unique_stem(name: str, taken: Iterable[str]) -> str:
    from LWICommon.files import safe_stem

    stem = safe_stem(name, fallback="case")
    taken = {t.lower() for t in taken}
    if stem.lower() not in taken:
        return stem
    i = 2
    while f"{stem}_{i}".lower() in taken:
        i += 1
    return f"{stem}_{i}"


def write_json_atomic(path: str, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename (never half-written)."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".dataset-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remap_label_file(source_path: str, target_path: str, remap: Dict[int, int]) -> None:
    """Write ``source_path``'s label map to ``target_path`` (same grid) with each value ``v`` replaced
    by ``remap[v]``; values not in ``remap`` become 0 (background)."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(source_path))
    array = sitk.GetArrayViewFromImage(image)
    array = np.rint(array).astype(np.int64) if np.issubdtype(array.dtype, np.floating) else array.astype(np.int64)
    lo, hi = int(array.min()), int(array.max())
    lut = np.zeros(hi - lo + 1, dtype=np.int64)
    for value, target in remap.items():
        if lo <= value <= hi:
            lut[value - lo] = target
    out_values = lut[array - lo]
    dtype = np.uint8 if (max(remap.values(), default=0) < 256) else np.uint16
    out = sitk.GetImageFromArray(out_values.astype(dtype))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(target_path), True)


def export_cases(
    training_set: TrainingSet,
    folder: str,
    modality: Optional[str] = None,
    copy_images: bool = True,
    name: Optional[str] = None,
) -> ExportResult:
    """Write the included cases of ``training_set`` into ``folder`` as an MSD training folder.

    The folder is created if needed; what it already holds is kept: its label table is extended by
    name (a structure it already has keeps its value, a new one gets the next value), case names
    already used get a suffix, and ``dataset.json`` is rewritten atomically at the end. Label maps
    are always written, remapped to the folder's values. Images are copied (``copy_images``) or,
    for a run folder that should not duplicate large files, referenced by their absolute path (an
    image whose file name is a case name already in the folder is copied under its new name).
    ``modality`` ("CT"/"MR") is stored when given (or kept from the folder).

    Validation: a case its dataset folder lists under ``validation`` (``CaseSource.validation``)
    is added to the folder's ``validation`` list, so the core holds it out as ``lwi train --data``
    on its own folder does; every other case is a training case. No list is written when no
    exported case is listed (the core then splits by itself). docs/slicer-modules.md gives the rule.

    This is the function behind LWISegmentation's "Add to training set"::

        from LWICommon import cases
        case = cases.CaseSource("patient7", "/tmp/p7.nrrd", "/tmp/p7-label.nrrd", {1: "liver", 2: "spleen"})
        cases.export_cases(cases.match_cases([case]), os.path.expanduser("~/LWI/training/abdomen"))
    """
    import SimpleITK as sitk

    os.makedirs(os.path.join(folder, IMAGES_DIR), exist_ok=True)
    os.makedirs(os.path.join(folder, LABELS_DIR), exist_ok=True)
    labels, entries, meta = read_training_folder(folder)
    by_key = {normalize_name(n): v for v, n in labels.items() if v != 0}
    # The training set's values -> the folder's values (by name).
    to_folder: Dict[int, int] = {}
    for value, label_name in sorted(training_set.labels.items()):
        key = normalize_name(label_name)
        if key not in by_key:
            by_key[key] = max(labels) + 1
            labels[by_key[key]] = label_name
        to_folder[value] = by_key[key]

    # Names in use: the core's case names (from the image paths) and the label files' names.
    taken = [name for e in entries for name in (_entry_name(e), _entry_name(e, "label"))]
    validation = list(meta.get("validation") or [])
    written: List[str] = []
    for row in training_set.included:
        stem = _unique_stem(row.name, taken)
        source = row.source
        # A referenced image keeps its file's case name: one already in use (another folder's
        # "case_001") would make the core refuse the folder, so that image is copied under the stem.
        if copy_images or _entry_name({"image": str(source.image)}).lower() in {t.lower() for t in taken}:
            image_rel = f"./{IMAGES_DIR}/{stem}{EXPORT_EXTENSION}"
            image_abs = os.path.join(folder, IMAGES_DIR, stem + EXPORT_EXTENSION)
            if str(source.image).lower().endswith(EXPORT_EXTENSION):
                shutil.copyfile(str(source.image), image_abs)
            else:  # another format (or a header + data pair): SimpleITK writes one NRRD file
                sitk.WriteImage(sitk.ReadImage(str(source.image)), image_abs, True)
        else:
            image_rel = os.path.abspath(str(source.image))
        label_rel = f"./{LABELS_DIR}/{stem}{EXPORT_EXTENSION}"
        remap = {v: to_folder[t] for v, t in row.remap.items()}
        remap_label_file(str(source.label), os.path.join(folder, LABELS_DIR, stem + EXPORT_EXTENSION), remap)
        entries.append({"image": image_rel, "label": label_rel})
        taken += [stem, _entry_name(entries[-1])]
        written.append(_entry_name(entries[-1]))
        if source.validation:  # the core holds out the cases the list names (lwi.data.dataset)
            validation.append(_entry_name(entries[-1]))

    meta = dict(meta)
    meta.setdefault("name", name or os.path.basename(os.path.abspath(folder)))
    if name:
        meta["name"] = name
    meta.setdefault("description", "Training cases exported by the LWI Slicer extension.")
    if modality:
        meta["modality"] = {"0": str(modality).upper()}
    meta["labels"] = {str(v): n for v, n in sorted(labels.items())}
    meta["training"] = entries
    meta["numTraining"] = len(entries)
    if validation:
        meta["validation"] = validation
    write_json_atomic(os.path.join(folder, DATASET_JSON), meta)
    return ExportResult(os.path.abspath(folder), dict(sorted(labels.items())), written, training_set.excluded)


def _entry_name(entry: Any, key: str = "image") -> str:
    """The core's case name of a training entry (from its image path), or its ``label`` file's name."""
    from lwi.data.dataset import case_name

    return case_name((entry.get(key) or "") if isinstance(entry, dict) else str(entry))
