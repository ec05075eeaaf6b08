"""The Slicer side on real MRML nodes (slicer-core): what a user sees after a volume goes to the core
and its label map comes back, after a case is exported for training, and in the training plot.

The "core" here is the core's own file code (``lwi.io``: SimpleITK read, label map written on the
reference's grid with ``CopyInformation``), so the geometry crosses the same file boundary as in a
real run; the full subprocess runs are in test_console_api.py.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytest.importorskip("slicer")

import slicer  # noqa: E402
import vtk  # noqa: E402
from LWICommon import labels, mrml  # noqa: E402

SHAPE = (12, 14, 16)  # k, j, i: slicer.util arrays are indexed [k, j, i]


def _matrix(array) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r][c]))
    return m


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


GEOMETRIES = {
    # axis-aligned RAS, anisotropic spacing
    "ras": np.array([[0.8, 0, 0, -5.0], [0, 1.2, 0, 7.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]]),
    # LPS-like: i runs to the left, j to the back (what DICOM CTs look like in Slicer)
    "non-ras": np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 60.0], [0, 0, 3.0, -200.0], [0, 0, 0, 1]]),
    # oblique: rotated 20 degrees about S and 10 about R, permuted spacing
    "oblique": None,
}


def _oblique() -> np.ndarray:
    a, b = np.radians(20.0), np.radians(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag([1.5, 0.9, 2.0])
    m[:3, 3] = [12.0, -30.0, 4.0]
    return m


GEOMETRIES["oblique"] = _oblique()


def _image() -> np.ndarray:
    k, j, i = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1], 0 : SHAPE[2]]
    image = np.full(SHAPE, -100, dtype=np.int16)
    image[(i - 5) ** 2 + (j - 6) ** 2 + (k - 5) ** 2 < 12] = 200  # organ 1, off-centre
    image[(k >= 7) & (k < 10) & (j >= 2) & (j < 5) & (i >= 10) & (i < 14)] = 400  # organ 2, a box
    return image


def _core_labels(input_path: str, output_path: str) -> np.ndarray:
    """What the core does with a volume file: read it (SimpleITK), label it, write the label map on the
    input's grid (lwi.io.write_image, CopyInformation). Returns the label array, [k, j, i]."""
    from lwi import io

    image = io.read_image(input_path)
    array_zyx = __import__("SimpleITK").GetArrayFromImage(image)
    label_zyx = np.zeros(array_zyx.shape, dtype=np.uint8)
    label_zyx[array_zyx == 200] = 1
    label_zyx[array_zyx == 400] = 2
    io.write_image(label_zyx.transpose(2, 1, 0), image, output_path)  # write_image takes [x, y, z]
    return label_zyx


SPECS = [
    {"value": 1, "name": "liver", "color": [221, 130, 101]},
    {"value": 2, "name": "kidney_left", "color": [185, 102, 83]},
]


def _round_trip(slicer_app, tmp_path, volume, output=None):
    """Volume node -> file -> core label map -> segmentation node; returns (segmentation, core labels)."""
    input_path = mrml.writeVolumeNode(volume, str(tmp_path / "input.nrrd"))
    core = _core_labels(input_path, str(tmp_path / "labels.nrrd"))
    seg = mrml.importLabelmap(str(tmp_path / "labels.nrrd"), labels.segment_specs(SPECS), volume, output, show3D=True)
    return seg, core


def _exported(segmentation_node, volume, path) -> np.ndarray:
    """The segments as Slicer exports them on the volume's grid (what the user would save or train on)."""
    mrml.writeSegmentsAsLabelmap(segmentation_node, volume, path)
    node = mrml.loadVolume(path, "check", labelmap=True)
    array = slicer.util.arrayFromVolume(node).copy()
    mrml.removeNodes([node])
    return array


def _node_classes(app) -> collections.Counter:
    return collections.Counter(node.GetClassName() for node in app.nodesByClass())


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_round_trip_through_the_core_keeps_geometry_and_voxels(slicer_app, tmp_path, geometry):
    volume = slicer.util.addVolumeFromArray(_image(), GEOMETRIES[geometry], "CT")
    seg, core = _round_trip(slicer_app, tmp_path, volume)
    assert mrml.segmentNames(seg) == ["liver", "kidney_left"]
    # the segments sit on exactly the voxels the core labelled, on the input's grid
    exported = _exported(seg, volume, str(tmp_path / "back.nrrd"))
    np.testing.assert_array_equal(exported, core)
    # and the segmentation's reference geometry (Segment Editor's grid) is the input's
    geometry_string = seg.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert geometry_string, "no reference geometry"
    values = [float(v) for v in geometry_string.split(";")[:16]]
    np.testing.assert_allclose(np.array(values).reshape(4, 4), _ijk_to_ras(volume), atol=1e-4)


def _translated_volume(app):
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    transform.SetMatrixTransformToParent(_matrix([[0, -1, 0, 40.0], [1, 0, 0, -25.0], [0, 0, 1, 12.5], [0, 0, 0, 1]]))
    volume = slicer.util.addVolumeFromArray(_image(), GEOMETRIES["oblique"], "CT under T")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    return volume, transform


def test_input_under_a_parent_transform_new_output(slicer_app, tmp_path):
    """F3: the segmentation follows the input's transform and stores the input's own grid (not T applied twice)."""
    volume, transform = _translated_volume(slicer_app)
    seg, core = _round_trip(slicer_app, tmp_path, volume)
    assert seg.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(_exported(seg, volume, str(tmp_path / "back.nrrd")), core)
    values = [float(v) for v in seg.GetSegmentation().GetConversionParameter("Reference image geometry").split(";")[:16]]
    np.testing.assert_allclose(np.array(values).reshape(4, 4), _ijk_to_ras(volume), atol=1e-4)


def test_input_under_a_parent_transform_reused_output(slicer_app, tmp_path):
    """F3: segmenting again into the same output (already under T) puts the segments over the volume."""
    volume, _ = _translated_volume(slicer_app)
    seg, _ = _round_trip(slicer_app, tmp_path, volume)
    again = tmp_path / "again"
    again.mkdir()
    seg_again, core = _round_trip(slicer_app, again, volume, seg)
    assert seg_again is seg
    np.testing.assert_array_equal(_exported(seg, volume, str(tmp_path / "back2.nrrd")), core)


def test_segments_match_the_core_label_map_and_show_in_3d(slicer_app, tmp_path):
    volume = slicer.util.addVolumeFromArray(_image(), GEOMETRIES["oblique"], "CT")
    seg, core = _round_trip(slicer_app, tmp_path, volume)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(np.unique(core)) - 1
    exported = _exported(seg, volume, str(tmp_path / "back.nrrd"))
    for value, name in ((1, "liver"), (2, "kidney_left")):
        assert int((exported == value).sum()) == int((core == value).sum()) > 0, name
    assert segmentation.ContainsRepresentation("Closed surface")
    for index in range(segmentation.GetNumberOfSegments()):
        polydata = vtk.vtkPolyData()
        seg.GetClosedSurfaceRepresentation(segmentation.GetNthSegmentID(index), polydata)
        assert polydata.GetNumberOfPoints() > 0 and polydata.GetNumberOfCells() > 0, segmentation.GetNthSegment(index).GetName()


def test_import_leaves_only_the_segmentation(slicer_app, tmp_path):
    volume = slicer.util.addVolumeFromArray(_image(), GEOMETRIES["ras"], "CT")
    path = mrml.writeVolumeNode(volume, str(tmp_path / "input.nrrd"))
    _core_labels(path, str(tmp_path / "labels.nrrd"))
    before = _node_classes(slicer_app)
    mrml.importLabelmap(str(tmp_path / "labels.nrrd"), labels.segment_specs(SPECS), volume)
    added = _node_classes(slicer_app) - before
    assert added == collections.Counter({"vtkMRMLSegmentationNode": 1, "vtkMRMLSegmentationDisplayNode": 1})


def test_exporting_segments_leaves_the_scene_as_it_was(slicer_app, tmp_path):
    """F13: the export's "<name>_ColorTable" (and the temporary label map) do not stay in the scene."""
    volume = slicer.util.addVolumeFromArray(_image(), GEOMETRIES["ras"], "CT")
    seg, _ = _round_trip(slicer_app, tmp_path, volume)
    before = _node_classes(slicer_app)
    names = mrml.writeSegmentsAsLabelmap(seg, volume, str(tmp_path / "case-label.nrrd"))
    assert names == ["liver", "kidney_left"]
    assert _node_classes(slicer_app) == before


def _terminology_types(logic, context: str, category) -> set:
    found = set()
    for index in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
        term = slicer.vtkSlicerTerminologyType()
        logic.GetNthTypeInTerminologyCategory(context, category, index, term)
        found.add((term.GetCodingSchemeDesignator(), term.GetCodeValue()))
    return found


def test_segment_terminology_resolves_in_slicers_terminology_logic(slicer_app, tmp_path):
    """F23: every standard term a segment gets is a type Slicer's terminology selector can show
    (its category and type exist in the context the tag names); colours are the model's."""
    from harness import terminology_folder

    if terminology_folder() is None:
        pytest.skip("Slicer's terminology files (pip install --no-deps trame-slicer) are not installed")
    logic = slicer_app.logics["Terminologies"]
    names = sorted(labels._TERMS) + ["kidney_right", "Left adrenal gland"]
    volume = slicer.util.addVolumeFromArray(np.zeros((2, 2, len(names)), np.int16), np.eye(4), "grid")
    array = np.zeros((2, 2, len(names)), np.uint8)
    array[0, 0, :] = np.arange(1, len(names) + 1)
    labelmap = slicer.util.addVolumeFromArray(array, np.eye(4), "lm", "vtkMRMLLabelMapVolumeNode")
    path = mrml.writeVolumeNode(labelmap, str(tmp_path / "all.nrrd"))
    specs = labels.segment_specs([{"value": i + 1, "name": n, "color": [10 * i % 255, 100, 200]} for i, n in enumerate(names)])
    seg = mrml.importLabelmap(path, specs, volume)
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(names)
    unresolved = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        spec = next(s for s in specs if s.name == segment.GetName())
        np.testing.assert_allclose(segment.GetColor(), spec.color, atol=1e-6)
        tag = vtk.mutable("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag), segment.GetName()
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(str(tag), entry)
        context = entry.GetTerminologyContextName()
        category = entry.GetCategoryObject()
        term = entry.GetTypeObject()
        if (term.GetCodingSchemeDesignator(), term.GetCodeValue()) not in _terminology_types(logic, context, category):
            unresolved.append(f"{segment.GetName()}: {term.GetCodeMeaning()} in {category.GetCodeMeaning()}")
    assert not unresolved, unresolved


def test_training_plot_has_one_colour_per_curve(slicer_app):
    """F18: every loss and Dice curve of the live plot gets its own colour (series start black)."""
    from LWITrainingLib.plots import TrainingCurves
    from LWITrainingLib.training_logic import TrainingLogic

    logic = TrainingLogic()
    logic.curves = TrainingCurves()
    events = [
        {"event": "progress", "stage": "pretrain", "iteration": i, "iterations": 4, "epochs": 2, "loss": 1.0 / i,
         "reconstruction": 0.5 / i, "order": [0.1, 0.2]}
        for i in range(1, 5)
    ] + [
        {"event": "progress", "stage": "finetune", "iteration": i, "iterations": 4, "epochs": 2, "loss": 2.0 / i}
        for i in range(1, 5)
    ] + [{"event": "progress", "stage": "finetune", "epoch": 2, "epochs": 2, "dice": {"liver": 0.8, "spleen": 0.6},
          "mean_dice": 0.7}]
    for event in events:
        if logic.curves.add(event):
            logic.updatePlot()
    series = list(logic.plot.seriesNodes.values())
    names = sorted(s.GetName() for s in series)
    assert names == sorted(["Step 1 loss", "Step 1 reconstruction", "Step 1 order", "Step 2 loss",
                            "validation mean Dice", "validation Dice liver", "validation Dice spleen"])
    colors = [tuple(round(c, 3) for c in s.GetColor()) for s in series]
    assert len(set(colors)) == len(series), colors
    assert logic.chartNode.GetNumberOfPlotSeriesNodes() == len(series)
    table = logic.plot.tableNodes["step2"]
    assert table.GetNumberOfRows() == 4  # the curve's points are in the table the series reads
