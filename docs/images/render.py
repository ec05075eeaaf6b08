"""Render a segmentation result as Slicer shows it: the four-up layout (axial, sagittal, coronal, 3D).

The views are Slicer's own, from the slicer-core wheel: one ``vtkMRMLSliceLogic`` per slice view and a
``vtkMRMLViewLogic`` for the 3D view, drawn by Slicer's displayable managers (segments as outlines and
fill in the slice views, closed surfaces and the three slice planes in 3D, slice intersections, Slicer's
default light 3D background) into offscreen VTK windows (EGL or OSMesa, whichever the VTK wheel finds).
The image and the label map are loaded by the LWI modules' own code (LWICommon: names, colours and
terminology from the model's metadata) in a slicer-core scene (Testing/slicer/harness.py); the four
views are then put side by side, two by two, as in Slicer's "Four-Up" layout. Python >= 3.10 with
``pip install -e ".[test]"``; from the repository root::

    lwi segment --model MODEL --input IMAGE --output seg.seg.nrrd
    python docs/images/render.py --image IMAGE --segmentation seg.seg.nrrd --model MODEL \\
        --out docs/images/slicer-four-up.png
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "LWISegmentation"), os.path.join(ROOT, "Testing", "slicer")]

import slicer  # noqa: E402
import vtk  # noqa: E402
from harness import SlicerCoreApp  # noqa: E402
from LWICommon import labels, mrml  # noqa: E402
from LWISegmentationLib import models  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

#: Slicer's slice views in the Four-Up layout: (singleton tag, orientation, layout colour).
SLICE_VIEWS = (
    ("Red", "Axial", slicer.vtkMRMLSliceNode.GetRedColor()),
    ("Yellow", "Sagittal", slicer.vtkMRMLSliceNode.GetYellowColor()),
    ("Green", "Coronal", slicer.vtkMRMLSliceNode.GetGreenColor()),
)

SLICE_MANAGERS = (
    "vtkMRMLCrosshairDisplayableManager",  # also draws the slice intersections
    "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D",
)
THREED_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",  # background, box and axis labels
    "vtkMRMLModelDisplayableManager",  # the slice planes
    "vtkMRMLThreeDReformatDisplayableManager",
    "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
)


def _manager_group(factory_class, application_logic, managers, renderer):
    """A displayable manager group on ``renderer`` with ``managers``, as Slicer's view widgets make it."""
    factory = factory_class.GetInstance()
    factory.SetMRMLApplicationLogic(application_logic)
    for name in managers:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = slicer.vtkMRMLDisplayableManagerGroup()
    group.Initialize(factory, renderer)
    return group


def _window(size):
    """An offscreen render window of ``size`` with one renderer and an interactor."""
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.SetMultiSamples(8)
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    # Displayable managers put their widgets on the window's interactor; a generic one needs no display.
    interactor = vtk.vtkGenericRenderWindowInteractor()
    interactor.SetRenderWindow(window)
    interactor.Initialize()
    return window, renderer


class SliceView:
    """A slice view: slice logic, its node, the reslice image as a background 2D actor (what CTK's
    light-box renderer manager does in Slicer) and the slice displayable managers on top."""

    def __init__(self, scene, application_logic, tag: str, orientation: str, colour, size) -> None:
        self.window, self.renderer = _window(size)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(application_logic)
        self.logic.SetMRMLScene(scene)
        application_logic.GetSliceLogics().AddItem(self.logic)
        self.node = self.logic.AddSliceNode(tag)
        self.node.SetOrientation(orientation)
        self.node.SetLayoutColor(*colour)  # the colour of its bar and of its intersection lines
        self.node.SetMappedInLayout(True)  # the other views draw its intersection
        # The image first: 2D actors draw in the order they were added, the segments' fill over it.
        mapper = vtk.vtkImageMapper()
        mapper.SetColorWindow(255)  # the slice logic's output is RGBA in 0..255
        mapper.SetColorLevel(127.5)
        self.image = vtk.vtkActor2D()
        self.image.SetMapper(mapper)
        self.image.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image)
        self.group = _manager_group(
            slicer.vtkMRMLSliceViewDisplayableManagerFactory, application_logic, SLICE_MANAGERS, self.renderer
        )
        self.group.SetMRMLDisplayableNode(self.node)
        self.size = size

    def show(self, volume, ras) -> None:
        """Show ``volume`` as background, fitted to the view and through the RAS point ``ras``."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
        self.logic.ResizeSliceNode(*self.size)
        self.logic.RotateSliceToLowestVolumeAxes(False)
        self.logic.FitSliceToBackground()
        self.node.JumpSliceByCentering(*ras)
        self.logic.SnapSliceOffsetToIJK()
        self.image.GetMapper().SetInputConnection(self.logic.GetImageDataConnection())

    def grab(self) -> np.ndarray:
        """The view as drawn now, [rows, cols, 3] uint8."""
        return _grab(self.window)


class ThreeDView:
    """The 3D view: view logic, its node and the 3D displayable managers."""

    def __init__(self, scene, application_logic, size) -> None:
        self.window, self.renderer = _window(size)
        self.logic = slicer.vtkMRMLViewLogic()
        self.logic.SetMRMLApplicationLogic(application_logic)
        self.logic.SetMRMLScene(scene)
        application_logic.GetViewLogics().AddItem(self.logic)
        self.node = self.logic.AddViewNode("1")
        self.group = _manager_group(
            slicer.vtkMRMLThreeDViewDisplayableManagerFactory,
            application_logic,
            THREED_MANAGERS,
            self.renderer,
        )
        self.group.SetMRMLDisplayableNode(self.node)

    def look_from(self, direction, zoom: float = 1.0) -> None:
        """Point the camera at the scene from ``direction`` (RAS), superior up."""
        camera_manager = self.group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager")
        camera_node = camera_manager.GetCameraNode()
        self.renderer.ResetCamera()
        camera = camera_node.GetCamera()
        focal = np.array(camera.GetFocalPoint())
        direction = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
        camera_node.SetPosition(*(focal + direction * camera.GetDistance()))
        camera_node.SetViewUp(0.0, 0.0, 1.0)
        self.renderer.ResetCamera()
        camera.Zoom(zoom)
        camera_node.ResetClippingRange()

    def grab(self) -> np.ndarray:
        """The view as drawn now, [rows, cols, 3] uint8."""
        return _grab(self.window)


def _normal(slice_node) -> np.ndarray:
    """The slice plane's normal in RAS."""
    matrix = slice_node.GetSliceToRAS()
    return np.array([matrix.GetElement(row, 2) for row in range(3)])


def _grab(window) -> np.ndarray:
    """The window's pixels as [rows, cols, 3] uint8, row 0 at the top."""
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    cols, rows, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, cols, 3)[::-1]


def write_png(rgb: np.ndarray, path: str) -> None:
    """Write ``rgb`` ([rows, cols, 3] uint8, row 0 at the top) as a PNG."""
    from vtk.util.numpy_support import numpy_to_vtk

    image = vtk.vtkImageData()
    rows, cols = rgb.shape[:2]
    image.SetDimensions(cols, rows, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3), deep=True))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(path)
    writer.SetInputData(image)
    writer.Write()


def load(image: str, segmentation: str, model: str):
    """The image as a volume node and the label map as a segmentation node named as the model says."""
    volume = mrml.loadVolume(image, os.path.basename(image).split(".")[0])
    metadata = models.read_bundle_metadata(model)
    segmentation_node = mrml.importLabelmap(
        segmentation, labels.segment_specs(metadata["labels"]), volume, show3D=True
    )
    return volume, segmentation_node


def segments_centre(segmentation_node) -> np.ndarray:
    """The RAS centre of the segments' bounding box (where the views cut through them)."""
    bounds = [0.0] * 6
    segmentation_node.GetRASBounds(bounds)
    return np.array(
        [(bounds[0] + bounds[1]) / 2.0, (bounds[2] + bounds[3]) / 2.0, (bounds[4] + bounds[5]) / 2.0]
    )


def view_bar(label: str, text: str, colour, width: int, height: int = 22) -> np.ndarray:
    """A view controller's bar as Slicer draws it over each view: the layout colour, the view's
    label and (slice views) the slice offset."""
    window, renderer = _window((width, height))
    renderer.SetBackground(*colour)
    for content, x, bold in ((label, 8, True), (text, 36, False)):
        actor = vtk.vtkTextActor()
        actor.SetInput(content)
        actor.SetDisplayPosition(x, 4)
        prop = actor.GetTextProperty()
        prop.SetFontSize(14)
        prop.SetBold(bold)
        prop.SetColor(0.0, 0.0, 0.0)
        renderer.AddActor2D(actor)
    return _grab(window)


def four_up(views, gap: int = 2, gap_colour=(40, 40, 40)) -> np.ndarray:
    """Slicer's Four-Up layout: 3D top left, axial (Red) top right, coronal (Green) bottom left,
    sagittal (Yellow) bottom right."""
    top = np.concatenate(
        [views["3D"], np.full((views["3D"].shape[0], gap, 3), gap_colour, np.uint8), views["Red"]], 1
    )
    bottom = np.concatenate(
        [views["Green"], np.full((views["Green"].shape[0], gap, 3), gap_colour, np.uint8), views["Yellow"]], 1
    )
    return np.concatenate([top, np.full((gap, top.shape[1], 3), gap_colour, np.uint8), bottom], 0)


def render(image: str, segmentation: str, model: str, out: str, size: int = 400) -> None:
    """Write the four-up picture of ``segmentation`` over ``image`` to ``out``."""
    app = SlicerCoreApp()
    try:
        volume, segmentation_node = load(image, segmentation, model)
        centre = segments_centre(segmentation_node)
        slice_views = {
            tag: SliceView(app.scene, app.applicationLogic, tag, o, c, (size, size))
            for tag, o, c in SLICE_VIEWS
        }
        threed = ThreeDView(app.scene, app.applicationLogic, (size, size))
        for view in slice_views.values():
            view.logic.GetSliceDisplayNode().SetIntersectingSlicesVisibility(True)
            view.show(volume, centre)
        threed.look_from((-0.6, 1.0, 0.5), zoom=1.3)
        pictures = {}
        for tag, view in slice_views.items():
            axis = "RAS"[int(np.argmax(np.abs(_normal(view.node))))]
            offset = f"{axis}: {view.logic.GetSliceOffset():.1f}mm"
            bar = view_bar(tag[0], offset, view.node.GetLayoutColor(), size)
            pictures[tag] = np.concatenate([bar, view.grab()], 0)
        bar = view_bar("1", "", threed.node.GetLayoutColor(), size)
        pictures["3D"] = np.concatenate([bar, threed.grab()], 0)
        write_png(four_up(pictures), out)
    finally:
        app.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="the image the model segmented (NIfTI, NRRD, ...)")
    parser.add_argument("--segmentation", required=True, help="the label map `lwi segment` wrote for it")
    parser.add_argument("--model", required=True, help="the model bundle (.lwi.safetensors): segment names")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--size", type=int, default=400, help="each view's width and height in pixels")
    args = parser.parse_args(argv)
    render(args.image, args.segmentation, args.model, args.out, args.size)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
