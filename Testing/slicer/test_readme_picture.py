"""docs/images/render.py, the script that draws the README's picture through Slicer's own views
(slicer-core), run as a user runs it on a small synthetic image, label map and model bundle: the
picture must be Slicer's four-up layout with the segments in the slice views and in 3D."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")
sitk = pytest.importorskip("SimpleITK")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "images" / "render.py"
SIZE = 160  # each view's side in pixels
BAR = 22  # the view controller bar's height
LABELS = {0: "background", 1: "liver", 2: "left kidney"}

_GL_PROBE = (
    "import vtk\n"
    "w = vtk.vtkRenderWindow(); w.SetOffScreenRendering(1); w.AddRenderer(vtk.vtkRenderer())\n"
    "w.SetSize(8, 8); w.Render()\n"
)


@pytest.fixture(scope="module")
def offscreen_opengl():
    """Rendering needs an OpenGL the VTK wheel can open without a display (EGL or OSMesa)."""
    probe = subprocess.run([sys.executable, "-c", _GL_PROBE], capture_output=True, text=True, encoding="utf-8", timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"no offscreen OpenGL for VTK here: {probe.stderr.strip()[-300:]}")


def _case(folder: Path):
    """A 40 x 48 x 36 image (1 mm) with two labelled boxes, as NIfTI files."""
    image = np.full((36, 48, 40), 20.0, dtype=np.float32)  # [z, y, x]
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[12:24, 14:26, 8:22] = 1
    labels[12:24, 22:34, 18:32] = 2  # each slice view through the centre cuts both
    image[labels > 0] = 200.0
    paths = []
    for name, array in (("image.nii.gz", image), ("labels.nii.gz", labels)):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(itk, str(folder / name))
        paths.append(folder / name)
    return paths


def _read_png(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[..., :3].astype(int)  # [rows, cols, rgb]


def test_the_picture_is_slicers_four_up_layout_with_the_segments(tmp_path, make_bundle, offscreen_opengl):
    import slicer

    image, labels = _case(tmp_path)
    model = make_bundle(tmp_path / "m.lwi.safetensors", LABELS)
    out = tmp_path / "four-up.png"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--image", str(image), "--segmentation", str(labels)]
        + ["--model", str(model), "--out", str(out), "--size", str(SIZE)],
        capture_output=True,
        text=True, encoding="utf-8",
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    picture = _read_png(out)
    side = SIZE + BAR
    assert picture.shape[:2] == (2 * side + 2, 2 * SIZE + 2)

    quadrants = {
        "3D": picture[:side, :SIZE],
        "Red": picture[:side, SIZE + 2 :],
        "Green": picture[side + 2 :, :SIZE],
        "Yellow": picture[side + 2 :, SIZE + 2 :],
    }

    def close(pixels, rgb, tolerance=12):
        return np.abs(pixels - np.asarray(rgb) * 255.0).max(axis=-1) <= tolerance

    # Each bar has its view's layout colour, as Slicer's view controllers do.
    layout = {
        "Red": slicer.vtkMRMLSliceNode.GetRedColor(),
        "Yellow": slicer.vtkMRMLSliceNode.GetYellowColor(),
        "Green": slicer.vtkMRMLSliceNode.GetGreenColor(),
        "3D": slicer.vtkMRMLViewNode().GetLayoutColor(),
    }
    for name, quadrant in quadrants.items():
        assert close(quadrant[BAR // 2, -5], layout[name]).all(), name

    # The 3D view has Slicer's default background: the view node's gradient, lighter at the bottom.
    view = slicer.vtkMRMLViewNode()
    threed = quadrants["3D"][BAR:]
    assert close(threed[2, 2], view.GetBackgroundColor2(), 20).all()
    assert close(threed[-3, 2], view.GetBackgroundColor(), 20).all()

    # The segments' outlines, in the model's colours, in every slice view; their surfaces in 3D.
    from lwi.bundle import read_bundle_metadata

    colours = [np.asarray(entry["color"]) / 255.0 for entry in read_bundle_metadata(model)["labels"]]
    # Inside, Slicer's default fill: the colour blended over the (white, bright) image, not over black.
    fill = slicer.vtkMRMLSegmentationDisplayNode().GetOpacity2DFill()
    for name in ("Red", "Green", "Yellow"):
        seen = [close(quadrants[name][BAR:], colour, 30).sum() for colour in colours]
        filled = [close(quadrants[name][BAR:], fill * colour + (1 - fill), 12).sum() for colour in colours]
        assert min(seen) > 0 and min(filled) > 100, (name, seen, filled)
    chroma = threed / np.maximum(threed.sum(axis=-1, keepdims=True), 1)  # shading changes brightness, not hue
    for colour in colours:
        shaded = (np.abs(chroma - colour / colour.sum()).max(axis=-1) < 0.03) & (threed.sum(axis=-1) > 60)
        assert shaded.sum() > 0.01 * threed.shape[0] * threed.shape[1], colour
