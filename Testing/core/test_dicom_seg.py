"""DICOM SEG output of ``lwi segment``: written from a real DICOM series by a real subprocess, read back
with a second reader (highdicom on pydicom) and compared voxel by voxel with the NRRD label map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import make_phantom
from lwi.errors import LWIError
from lwi.labels import LabelInfo, label_table
from lwi.names import MODEL_SUFFIX

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def model(tmp_path_factory, make_bundle) -> Path:
    # The bias makes the untrained network predict both labels somewhere (a non-trivial label map).
    return make_bundle(tmp_path_factory.mktemp("model") / f"tiny{MODEL_SUFFIX}", bias=[0.0, 0.1, 0.1])


def _phantom(seed: int = 0) -> sitk.Image:
    image, _ = make_phantom(seed, shape=(24, 20, 10), spacing=(3.0, 3.5, 5.0))
    image.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0))  # rows along +x, columns along -y, feet first
    image.SetOrigin((-30.0, 40.0, 120.0))
    return image


def write_ct_series(folder: Path, image: sitk.Image, drop: Sequence[str] = ()) -> List[str]:
    """Write ``image`` as a CT Image Storage series, one file per slice (files named out of slice order),
    with its own study, series and frame-of-reference UIDs; ``drop`` leaves attributes out. Returns the
    SOP Instance UIDs by slice."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    pixels = sitk.GetArrayFromImage(image).astype(np.int16)  # [z, rows, columns]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    uids = []
    for k in range(pixels.shape[0]):
        uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "LWI-TEST", "Phantom^Test", "", "O"
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "20260101", "120000", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 3, k + 1, "test"
        ds.ImagePositionPatient = [float(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [float(v) for v in list(direction[:, 0]) + list(direction[:, 1])]
        ds.PixelSpacing = [image.GetSpacing()[1], image.GetSpacing()[0]]  # row spacing, column spacing
        ds.SliceThickness = image.GetSpacing()[2]
        ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = pixels[k].tobytes()
        for name in drop:
            delattr(ds, name)
        ds.save_as(folder / f"im{(7 * k) % pixels.shape[0]:03d}.dcm", enforce_file_format=True)
        uids.append(uid)
    return uids


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lwi", "segment", *args, "--device", "cpu"],
        capture_output=True, text=True, encoding="utf-8", timeout=240,
    )


def _seg_label_map(path: Path, series: Path) -> np.ndarray:
    """The SEG's label map ([z, rows, columns] on the series' slices, segment numbers) through highdicom,
    placing each source image's frame at its slice by the image's position (independently of lwi)."""
    seg = hd.seg.segread(str(path))
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(series.iterdir())]
    pixels = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in sources], combine_segments=True, assert_missing_frames_are_empty=True
    )
    normal = np.cross(*np.asarray(sources[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
    order = np.argsort([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for ds in sources])
    return np.asarray(pixels)[order]


def _referenced_uids(path: Path) -> set:
    ds = pydicom.dcmread(str(path))
    return {item.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for item in s.ReferencedInstanceSequence}


def test_dicom_seg_matches_the_nrrd_voxel_by_voxel_and_references_the_series(model, tmp_path):
    series = tmp_path / "ct"
    uids = write_ct_series(series, _phantom())
    seg_path, nrrd_path = tmp_path / "out" / "result.dcm", tmp_path / "out" / "result.seg.nrrd"
    for out in (seg_path, nrrd_path):
        proc = _run("--model", str(model), "--input", str(series), "--output", str(out))
        assert proc.returncode == 0, proc.stderr
    seg = pydicom.dcmread(str(seg_path))
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.StudyInstanceUID == pydicom.dcmread(next(series.iterdir())).StudyInstanceUID
    assert _referenced_uids(seg_path) == set(uids)
    # Segments: the model's names, SNOMED CT codes of the named structures, the model's colours.
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert {n: str(s.SegmentLabel) for n, s in segments.items()} == {1: "liver", 2: "left kidney"}
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT liver
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"  # SCT kidney
    table = {info.name: info.color for info in label_table({1: "liver", 2: "left kidney"})}
    for s in segments.values():
        rgb = hd.color.CIELabColor.from_dicom_value(tuple(s.RecommendedDisplayCIELabValue)).to_rgb()
        assert np.allclose(rgb, table[str(s.SegmentLabel)], atol=2)
    # Voxel by voxel: segment n is label value n here (the tiny model's labels are 1 and 2).
    nrrd = sitk.GetArrayFromImage(sitk.ReadImage(str(nrrd_path)))
    from_seg = _seg_label_map(seg_path, series)
    assert set(np.unique(nrrd)) == {0, 1, 2}  # both labels are there: the comparison is not trivial
    np.testing.assert_array_equal(from_seg, nrrd)


def test_folder_mode_writes_one_seg_per_series(model, tmp_path):
    src = tmp_path / "in"
    uids = {name: write_ct_series(src / name, _phantom(seed)) for seed, name in enumerate(["alpha", "beta"])}
    out = tmp_path / "out"
    proc = _run("--model", str(model), "--input", str(src), "--output", str(out), "--output-format", "dicom-seg")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alpha.dcm", "beta.dcm"]
    for name, series_uids in uids.items():
        assert _referenced_uids(out / f"{name}.dcm") == set(series_uids)


def _refusal(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def test_non_dicom_input_with_dicom_seg_output_is_refused_before_any_work(model, tmp_path):
    image = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_phantom(), str(image))
    out = tmp_path / "result.dcm"
    message = _refusal(_run("--model", str(model), "--input", str(image), "--output", str(out)))
    assert "needs a folder holding a DICOM series as --input" in message and str(image) in message
    assert not out.exists()
    message = _refusal(_run("--model", str(model), "--input", str(image), "--output", str(tmp_path / "r"),
                            "--output-format", "dicom-seg"))
    assert "DICOM series" in message


def test_series_without_the_attributes_a_seg_needs_is_refused(model, tmp_path):
    series = tmp_path / "ct"
    write_ct_series(series, _phantom(), drop=("FrameOfReferenceUID", "PatientID"))
    out = tmp_path / "result.dcm"
    message = _refusal(_run("--model", str(model), "--input", str(series), "--output", str(out)))
    assert "lacks FrameOfReferenceUID, PatientID" in message
    assert not out.exists()


def test_more_labels_than_a_seg_holds_are_refused(tmp_path):
    from lwi.dicom_seg import MAX_SEGMENTS, check_request

    series = tmp_path / "ct"
    write_ct_series(series, _phantom())
    labels = [LabelInfo(v, f"structure {v}", (1, 2, 3)) for v in range(1, MAX_SEGMENTS + 2)]
    with pytest.raises(LWIError, match=f"at most {MAX_SEGMENTS} segments"):
        check_request(series, labels)
    assert len(check_request(series, labels[:3])) == 10  # the series' ten headers when the labels fit


def test_terminology_from_the_bundle_wins_and_unknown_names_are_tissue(tmp_path):
    from lwi.dicom_seg import build_dicom_seg, label_terminology
    from lwi.io import read_image

    series = tmp_path / "ct"
    write_ct_series(series, _phantom())
    image = read_image(series)
    label = sitk.Cast(image > 100, sitk.sitkUInt8) * 3  # one label, value 3: segment number 1
    metadata = {"labels": [{"value": 3, "name": "lesion core", "color": [10, 200, 30],
                            "terminology": {"category": ["49755003", "SCT", "Morphologically abnormal structure"],
                                            "type": ["86049000", "SCT", "Malignant neoplasm, primary"]}}]}
    table = [LabelInfo(3, "lesion core", (10, 200, 30))]
    seg = build_dicom_seg(label, series, table, label_terminology(metadata))
    item = seg.SegmentSequence[0]
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "86049000"
    assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    seg = build_dicom_seg(label, series, [LabelInfo(3, "zorblax", (10, 200, 30))])
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    pixels = seg.get_volume(combine_segments=True).array  # value 3 comes back as segment 1
    assert set(np.unique(pixels)) == {0, 1}


def test_without_highdicom_dicom_seg_is_refused_with_the_install_command(model, tmp_path):
    series = tmp_path / "ct"
    write_ct_series(series, _phantom())
    code = (
        "import sys; sys.modules['highdicom'] = None; from lwi.cli import main; "
        f"sys.exit(main(['segment', '--model', {str(model)!r}, '--input', {str(series)!r}, "
        f"'--output', {str(tmp_path / 'r.dcm')!r}, '--device', 'cpu']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=240)
    assert "pip install 'lwi[dicom]'" in _refusal(proc)
