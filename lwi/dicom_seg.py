"""DICOM Segmentation (SEG) output: a label map as the DICOM object PACS and viewers take back.

``lwi segment --input DICOM_SERIES --output result.dcm`` (or ``--output-format dicom-seg``) writes one
DICOM SEG instance (highdicom, BINARY segmentation) that references every image of the source series:

* one segment per label of the model, numbered 1..N in label-value order, with the model's name and
  colour (CIELab) and its terminology codes: a label's own ``"terminology"`` entry in the bundle when it
  has one, else the SNOMED CT code of the structure its name names (``liver`` -> SCT 10200004, through
  :func:`lwi.labels.canonical_structure` and pydicom's code dictionary), else the generic "Tissue";
* frames on the source frames' geometry: each source image's own plane, looked up by its Image
  Position (Patient) in the label map's grid (the grid SimpleITK read the series into), so files in
  any order map to the right slice; empty frames are omitted as the standard allows.

highdicom (and pydicom 3) need Python 3.10 or newer; they are the optional ``dicom`` extra
(``pip install 'lwi[dicom]'``), and without them a DICOM SEG request is refused with one sentence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from lwi.errors import LWIError
from lwi.labels import LabelInfo, canonical_structure
from lwi.outputs import write_file

PathLike = Union[str, "os.PathLike[str]"]

#: The output format names ``--output-format`` takes; "auto" follows the output file name.
DICOM_SEG = "dicom-seg"
#: Output file endings that mean DICOM SEG when the format is "auto".
DICOM_SUFFIXES = (".dcm",)
#: Segment Number (0062,0004) is an unsigned 16-bit value: a SEG holds at most this many segments.
MAX_SEGMENTS = 65535
#: Attributes of every source image a SEG needs with a value (references, plane geometry) ...
REQUIRED_VALUES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
)
#: ... and present, possibly empty (the patient and study modules' type 2 attributes the SEG copies).
REQUIRED_PRESENT = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
)

# Canonical structure (lwi.labels) -> keyword of pydicom's SNOMED CT code dictionary.
_SCT_KEYWORDS: Dict[str, str] = {
    "liver": "Liver", "spleen": "Spleen", "kidney": "Kidney", "pancreas": "Pancreas", "stomach": "Stomach",
    "gallbladder": "Gallbladder", "aorta": "Aorta", "inferior vena cava": "InferiorVenaCava",
    "portal vein": "PortalVein", "vein": "Vein", "artery": "Artery", "esophagus": "Esophagus",
    "adrenal gland": "AdrenalGland", "duodenum": "Duodenum", "small bowel": "SmallIntestine", "colon": "Colon",
    "rectum": "Rectum", "bladder": "Bladder", "prostate": "Prostate", "lung": "Lung", "trachea": "Trachea",
    "heart": "Heart", "bone": "Bone", "muscle": "Muscle", "fat": "AdiposeTissue", "skin": "Skin",
    "brain": "Brain", "hippocampus": "Hippocampus", "hippocampus anterior": "Hippocampus",
    "hippocampus posterior": "Hippocampus", "tumor": "Tumor", "cyst": "Cyst", "edema": "Edema",
    "necrosis": "Necrosis",
}
_LESIONS = {"tumor", "cyst", "edema", "necrosis"}

_MISSING_HIGHDICOM = (
    "Writing DICOM SEG (--output-format dicom-seg or a .dcm --output) needs highdicom, which needs Python 3.10 "
    "or newer; install it with pip install 'lwi[dicom]', or write .seg.nrrd instead."
)


def is_dicom_seg(path: PathLike, output_format: str = "auto") -> bool:
    """Whether a label map goes to ``path`` as DICOM SEG: asked for, or "auto" and a ``.dcm`` name."""
    if output_format == DICOM_SEG:
        return True
    return output_format == "auto" and Path(path).name.lower().endswith(DICOM_SUFFIXES)


def _highdicom():
    try:
        import highdicom
        import pydicom
    except ImportError:
        raise LWIError(_MISSING_HIGHDICOM) from None
    return highdicom, pydicom


def check_source(source: PathLike) -> List[str]:
    """The files of the one DICOM series in ``source``; one sentence when it is not a DICOM folder."""
    from lwi.io import dicom_series_ids

    p = Path(source)
    if not p.is_dir() or not dicom_series_ids(p):
        raise LWIError(
            f"DICOM SEG output (--output-format dicom-seg or a .dcm --output) needs a folder holding a DICOM "
            f"series as --input, but {p} is not one; write .seg.nrrd or .nii.gz for other images."
        )
    series = dicom_series_ids(p)
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(p), series[0]))


def _code(hd: Any, entry: Any, where: str):
    """A CodedConcept from ``[value, scheme, meaning]`` or ``{"value", "scheme", "meaning"}``."""
    if isinstance(entry, Mapping):
        entry = [entry.get("value"), entry.get("scheme", entry.get("scheme_designator")), entry.get("meaning")]
    if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(isinstance(v, str) and v for v in entry):
        raise LWIError(f"The model's terminology for {where} must be [code value, scheme, meaning], not {entry!r}.")
    return hd.sr.CodedConcept(value=entry[0], scheme_designator=entry[1], meaning=entry[2])


def segment_codes(hd: Any, info: LabelInfo, terminology: Optional[Mapping[str, Any]] = None):
    """``(category, type)`` codes of one segment: the bundle's, else SNOMED CT by name, else "Tissue"."""
    from pydicom.sr.codedict import codes

    if terminology:
        return (
            _code(hd, terminology.get("category"), f"label {info.value} (category)"),
            _code(hd, terminology.get("type"), f"label {info.value} (type)"),
        )
    key = canonical_structure(info.name)
    keyword = _SCT_KEYWORDS.get(key or "")
    concept = getattr(codes.SCT, keyword, None) if keyword else None
    if concept is None:
        return codes.SCT.Tissue, codes.SCT.Tissue
    category = codes.SCT.MorphologicallyAbnormalStructure if key in _LESIONS else codes.SCT.AnatomicalStructure
    return category, concept


def _check_datasets(datasets: Sequence[Any], source: Path) -> None:
    missing = sorted(
        {a for ds in datasets for a in REQUIRED_VALUES if a not in ds or ds[a].value in (None, "")}
        | {a for ds in datasets for a in REQUIRED_PRESENT if a not in ds}
    )
    if missing:
        raise LWIError(
            f"The DICOM series in {source} lacks {', '.join(missing)}, which a DICOM SEG must copy or reference; "
            "write .seg.nrrd instead, or export the series again with complete headers."
        )
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise LWIError(
            f"The DICOM series in {source} is multi-frame; DICOM SEG output supports one image per file, "
            "write .seg.nrrd instead."
        )


def _frame_slices(datasets: Sequence[Any], label: sitk.Image, source: Path) -> List[int]:
    """The label map's slice (k index) of each source image, from its Image Position (Patient)."""
    slices = []
    for ds in datasets:
        point = [float(v) for v in ds.ImagePositionPatient]
        i, j, k = label.TransformPhysicalPointToContinuousIndex(point)
        if abs(i) > 0.01 or abs(j) > 0.01 or abs(k - round(k)) > 0.01 or not 0 <= round(k) < label.GetSize()[2]:
            raise LWIError(
                f"The image {ds.SOPInstanceUID} of {source} does not lie on a slice of the segmented volume; "
                "the series' geometry is inconsistent, write .seg.nrrd instead."
            )
        if (int(ds.Rows), int(ds.Columns)) != (label.GetSize()[1], label.GetSize()[0]):
            raise LWIError(f"The images of {source} differ in size; DICOM SEG output needs one image size per series.")
        slices.append(int(round(k)))
    return slices


def check_request(source: PathLike, labels: Sequence[LabelInfo]) -> List[Any]:
    """Everything a DICOM SEG of ``source`` with ``labels`` needs, checked before any work: highdicom,
    at most :data:`MAX_SEGMENTS` labels, a DICOM series folder whose images carry the attributes a SEG
    copies. Returns the series' headers (pydicom datasets without pixels), in file order."""
    _, pydicom = _highdicom()
    count = sum(1 for info in labels if info.value != 0)
    if count > MAX_SEGMENTS:
        raise LWIError(
            f"The model has {count} labels but a DICOM SEG holds at most {MAX_SEGMENTS} segments; "
            "write .seg.nrrd instead."
        )
    if count == 0:
        raise LWIError("The model lists no labels, so a DICOM SEG would have no segment; write .seg.nrrd instead.")
    files = check_source(source)
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    _check_datasets(datasets, Path(source))
    return datasets


def build_dicom_seg(
    label: sitk.Image,
    source: PathLike,
    labels: Sequence[LabelInfo],
    terminology: Optional[Mapping[int, Mapping[str, Any]]] = None,
    model_name: str = "",
):
    """The highdicom ``Segmentation`` of ``label`` (on the grid read from ``source``'s series).

    Args:
        label: the label map on the source series' grid (what :meth:`Segmenter.segment` returns for it).
        source: the folder holding the DICOM series that was segmented.
        labels: the model's label table (background left out).
        terminology: per label value, ``{"category": [value, scheme, meaning], "type": [...]}``.
        model_name: the model's name, recorded as the algorithm and the manufacturer model name.

    Raises:
        LWIError: highdicom missing, not a DICOM folder, attributes a SEG needs missing, too many labels.
    """
    from lwi import __version__

    hd, _ = _highdicom()
    from pydicom.sr.codedict import codes

    datasets = check_request(source, labels)
    table = sorted((info for info in labels if info.value != 0), key=lambda info: info.value)
    source = Path(source)
    slices = _frame_slices(datasets, label, source)

    # Label values -> segment numbers 1..N (the standard numbers segments from 1 without gaps).
    values = sitk.GetArrayViewFromImage(label)  # [z, rows, columns]
    lookup = np.zeros(max(int(values.max()) if values.size else 0, table[-1].value) + 1, dtype=np.uint16)
    for number, info in enumerate(table, start=1):
        lookup[info.value] = number
    dtype = np.uint8 if len(table) < 256 else np.uint16
    frames = lookup[np.asarray(values)[slices]].astype(dtype)  # one frame per source image, in file order

    algorithm = hd.AlgorithmIdentificationSequence(
        name=(model_name or "LWI")[:64],
        family=codes.DCM.ArtificialIntelligence,
        version=__version__,
    )
    descriptions = []
    for number, info in enumerate(table, start=1):
        category, kind = segment_codes(hd, info, (terminology or {}).get(info.value))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=info.name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                display_color=hd.color.CIELabColor.from_rgb(*info.color),
            )
        )
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="LWI",
        manufacturer_model_name=(model_name or "LWI model")[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"LWI segmentation ({model_name})"[:64] if model_name else "LWI segmentation",
    )


def write_dicom_seg(
    label: sitk.Image,
    source: PathLike,
    path: PathLike,
    labels: Sequence[LabelInfo],
    terminology: Optional[Mapping[int, Mapping[str, Any]]] = None,
    model_name: str = "",
) -> Path:
    """Write :func:`build_dicom_seg` to ``path`` through :func:`lwi.outputs.write_file` (temporary
    folder beside it, rename; never through a symlink; a failure leaves the earlier file)."""
    seg = build_dicom_seg(label, source, labels, terminology, model_name)
    return write_file(path, lambda tmp: seg.save_as(str(tmp)), "--output")


def label_terminology(metadata: Mapping[str, Any]) -> Dict[int, Dict[str, Any]]:
    """Per label value, the ``"terminology"`` entry a bundle's label table may carry (optional)."""
    out: Dict[int, Dict[str, Any]] = {}
    for entry in metadata.get("labels", []) or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("terminology"), Mapping):
            out[int(entry["value"])] = dict(entry["terminology"])
    return out
