"""Render the README's pictures of the demo result: the organ overlay in 3D and on an axial slice.

The result goes through the same code as in Slicer: the unseen phantom is loaded as a volume node and
the LWI model's label map is imported into a segmentation node by LWICommon (names, colours and
closed surfaces from the model's metadata), in a slicer-core scene (Testing/slicer/harness.py). The
3D view is drawn with VTK offscreen (EGL or OSMesa, whichever the VTK wheel finds), the slice with
numpy. Run from the repository root after ``lwi demo`` (Python >= 3.10 with ``pip install -e
".[test]"``)::

    python docs/images/render.py --demo-dir lwi-demo
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "LWISegmentation"), os.path.join(ROOT, "Testing", "slicer")]

import slicer  # noqa: E402
import vtk  # noqa: E402
from harness import SlicerCoreApp  # noqa: E402
from LWICommon import labels, mrml  # noqa: E402
from LWISegmentationLib import models  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load_demo(demo_dir: str, strategy: str):
    """The unseen phantom and its segmentation by the ``strategy`` model, as nodes."""
    volume = mrml.loadVolume(os.path.join(demo_dir, "unseen_image.nii.gz"), "unseen phantom")
    metadata = models.read_bundle_metadata(os.path.join(demo_dir, f"{strategy}.lwi.safetensors"))
    segmentation = mrml.importLabelmap(
        os.path.join(demo_dir, f"{strategy}_segmentation.seg.nrrd"),
        labels.segment_specs(metadata["labels"]),
        volume,
        show3D=True,
    )
    return volume, segmentation


def _segments(segmentation_node):
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        yield segmentation.GetNthSegmentID(index), segmentation.GetNthSegment(index)


def segment_values(volume, segmentation_node):
    """The segments as one label array on the volume's grid ([k, j, i]; segment i -> i + 1) and their colours."""
    handle, exported = tempfile.mkstemp(suffix=".nrrd")
    os.close(handle)
    try:
        names = mrml.writeSegmentsAsLabelmap(segmentation_node, volume, exported)
        node = mrml.loadVolume(exported, "segments", labelmap=True)
    finally:
        if os.path.exists(exported):
            os.remove(exported)
    values = slicer.util.arrayFromVolume(node).copy()
    mrml.removeNodes([node])
    segmentation = segmentation_node.GetSegmentation()
    colors = [segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(n)).GetColor() for n in names]
    return values, colors


def _windowed(array: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    low = level - width / 2.0
    return np.clip((array - low) / width, 0.0, 1.0)


def _write_png(rgb: np.ndarray, path: str) -> None:
    """``rgb`` [rows, cols, 3] in 0..1, row 0 at the top."""
    image = vtk.vtkImageData()
    rows, cols = rgb.shape[:2]
    image.SetDimensions(cols, rows, 1)
    pixels = np.ascontiguousarray((rgb[::-1] * 255.0 + 0.5).astype(np.uint8).reshape(-1, 3))  # VTK: bottom row first
    from vtk.util.numpy_support import numpy_to_vtk

    image.GetPointData().SetScalars(numpy_to_vtk(pixels, deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(path)
    writer.SetInputData(image)
    writer.Write()


def render_slice(volume, segmentation_node, path: str, zoom: int = 8) -> None:
    """The axial slice with the most labelled voxels: the CT (abdomen window) with the segments
    blended in their colours and outlined, patient right on the left and anterior up, as Slicer shows it."""
    ct = slicer.util.arrayFromVolume(volume).astype(float)  # [k, j, i]
    values, colors = segment_values(volume, segmentation_node)
    overlay = np.zeros(ct.shape + (3,))
    for value, color in enumerate(colors, start=1):
        overlay[values == value] = color
    mask = values > 0
    k = int(np.argmax(mask.sum(axis=(1, 2))))
    gray = _windowed(ct[k])[..., None].repeat(3, axis=2)
    rgb = np.where(mask[k][..., None], 0.45 * gray + 0.55 * overlay[k], gray)
    # IJK axes -> screen: Slicer's axial view puts patient right (R) on the left and anterior up.
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    if m.GetElement(0, 0) > 0:  # i runs towards R: flip so R is on the left
        rgb, mask_k = rgb[:, ::-1], mask[k][:, ::-1]
    else:
        mask_k = mask[k]
    if m.GetElement(1, 1) > 0:  # j runs towards A: anterior goes up (row 0)
        rgb, mask_k = rgb[::-1], mask_k[::-1]
    rgb = rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)
    _write_png(rgb, path)


def render_3d(volume, segmentation_node, path: str, size=(900, 700)) -> None:
    """The segments' closed surfaces in their colours over an axial CT plane, from the front-right."""
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.12, 0.13, 0.17)
    renderer.SetBackground2(0.35, 0.37, 0.45)
    renderer.GradientBackgroundOn()
    for segment_id, segment in _segments(segmentation_node):
        polydata = vtk.vtkPolyData()
        segmentation_node.GetClosedSurfaceRepresentation(segment_id, polydata)
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(polydata)
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*segment.GetColor())
        actor.GetProperty().SetSpecular(0.2)
        renderer.AddActor(actor)
    # an axial CT plane under the organs for orientation (air transparent)
    values, _ = segment_values(volume, segmentation_node)
    labelled = np.nonzero(values.sum(axis=(1, 2)))[0]
    k = int(labelled[0]) if len(labelled) else values.shape[0] // 2
    ct = slicer.util.arrayFromVolume(volume)[k].astype(float)  # [j, i]
    rgba = np.empty(ct.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = (_windowed(ct)[..., None] * 255.0).astype(np.uint8)
    rgba[..., 3] = np.where(ct > -500.0, 235, 0)
    plane_image = vtk.vtkImageData()
    plane_image.SetDimensions(ct.shape[1], ct.shape[0], 1)
    plane_image.SetOrigin(0.0, 0.0, float(k))  # IJK coordinates; the actor's matrix maps them to RAS
    from vtk.util.numpy_support import numpy_to_vtk

    plane_image.GetPointData().SetScalars(numpy_to_vtk(rgba.reshape(-1, 4), deep=True))
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijk_to_ras)
    plane = vtk.vtkImageActor()
    plane.GetMapper().SetInputData(plane_image)
    plane.SetUserMatrix(ijk_to_ras)
    plane.ForceTranslucentOn()
    renderer.AddActor(plane)

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.SetMultiSamples(8)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    renderer.ResetCamera()
    focal = camera.GetFocalPoint()
    distance = camera.GetDistance()
    # anterior (+A), a little to the patient's right (+R) and from above (+S)
    direction = np.array([-0.45, 1.0, 0.55])
    direction /= np.linalg.norm(direction)
    camera.SetPosition(*(np.array(focal) + direction * distance))
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.35)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(path)
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="lwi-demo", help="the folder `lwi demo` wrote (default: lwi-demo)")
    parser.add_argument("--strategy", default="lwi", help="whose segmentation to show: lwi or scratch")
    parser.add_argument("--out-dir", default=HERE, help="where the PNGs go (default: docs/images)")
    args = parser.parse_args(argv)
    app = SlicerCoreApp()
    try:
        volume, segmentation = load_demo(args.demo_dir, args.strategy)
        render_3d(volume, segmentation, os.path.join(args.out_dir, "demo-3d.png"))
        render_slice(volume, segmentation, os.path.join(args.out_dir, "demo-slice.png"))
    finally:
        app.close()
    print(f"Wrote demo-3d.png and demo-slice.png to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
