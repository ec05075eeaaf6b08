"""``lwi segment`` as a user runs it: a real bundle, real files, a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import make_phantom
from lwi.labelmap import read_segment_names
from lwi.names import MODEL_SUFFIX


@pytest.fixture(scope="module")
def model(tmp_path_factory, make_bundle) -> Path:
    return make_bundle(tmp_path_factory.mktemp("model") / f"tiny{MODEL_SUFFIX}")


def _oblique_phantom(seed: int = 0) -> sitk.Image:
    image, _ = make_phantom(seed, shape=(24, 20, 12), spacing=(3.0, 3.5, 5.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, 0.0, s, 0.0, -1.0, 0.0, s, 0.0, -c))  # oblique, y flipped (non-RAS)
    image.SetOrigin((12.5, -40.0, 300.0))
    return image


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lwi", "segment", *args], capture_output=True, text=True, encoding="utf-8", timeout=240
    )


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


def test_nrrd_output_names_and_colours_every_label_on_the_input_grid(model, tmp_path):
    image = _oblique_phantom()
    source = tmp_path / "ct.mha"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "out" / "ct.seg.nrrd"
    table = tmp_path / "out" / "labels.ctbl"
    proc = _run(
        "--model", str(model), "--input", str(source), "--output", str(out), "--device", "cpu",
        "--progress", "json", "--largest-component", "--color-table", str(table),
    )
    assert proc.returncode == 0, proc.stderr
    assert read_segment_names(out) == {1: "liver", 2: "left kidney"}
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out))
    reader.ReadImageInformation()
    # Slicer's segment colours are 0-1 RGB; liver has its usual colour from the label table.
    liver = [reader.GetMetaData(f"Segment{i}_Color") for i in range(2) if reader.GetMetaData(f"Segment{i}_Name") == "liver"]
    assert np.allclose([float(v) for v in liver[0].split()], np.array([221, 130, 101]) / 255.0, atol=1e-4)
    label = sitk.ReadImage(str(out))
    assert _same_grid(label, image)
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2}
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert events[-1]["event"] == "result" and events[-1]["outputs"] == [str(out)]
    assert "liver" in table.read_text(encoding="utf-8")


def test_folder_input_segments_every_image_under_the_same_names(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    a, b = _oblique_phantom(1), _oblique_phantom(2)
    b.SetSpacing((2.0, 2.5, 6.0))
    sitk.WriteImage(a, str(src / "case_a.nii.gz"))
    sitk.WriteImage(b, str(src / "case_b.nrrd"))
    dst = tmp_path / "out"
    probs = tmp_path / "probs"
    proc = _run(
        "--model", str(model), "--input", str(src), "--output", str(dst), "--device", "cpu",
        "--probabilities", str(probs),
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dst.iterdir()) == ["case_a.nii.gz", "case_b.nrrd"]
    assert _same_grid(sitk.ReadImage(str(dst / "case_a.nii.gz")), a)
    assert _same_grid(sitk.ReadImage(str(dst / "case_b.nrrd")), b)
    assert read_segment_names(dst / "case_b.nrrd") == {1: "liver", 2: "left kidney"}
    p = sitk.ReadImage(str(probs / "case_b.nrrd"))
    assert p.GetNumberOfComponentsPerPixel() == 3 and _same_grid(p, b)
    assert np.allclose(sitk.GetArrayFromImage(p).sum(-1), 1.0, atol=1e-3)


def _bad_2d(tmp_path: Path, model: Path, make_bundle):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image([16, 16], sitk.sitkInt16), str(path))
    return model, path, "2D"


def _bad_unreadable(tmp_path: Path, model: Path, make_bundle):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"this is not an image")
    return model, path, "could not be read"


def _bad_channels(tmp_path: Path, model: Path, make_bundle):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_oblique_phantom(), str(path))
    two = make_bundle(tmp_path / f"two{MODEL_SUFFIX}", in_channels=2)
    return two, path, "2 input channel"


@pytest.mark.parametrize("make", [_bad_2d, _bad_unreadable, _bad_channels], ids=["2d", "unreadable", "channels"])
def test_bad_input_is_one_clear_line_nonzero_exit_and_no_output(model, tmp_path, make, make_bundle):
    bundle, source, reason = make(tmp_path, model, make_bundle)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _run("--model", str(bundle), "--input", str(source), "--output", str(out_dir / "x.seg.nrrd"), "--device", "cpu")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lwi segment: error:"), proc.stderr
    assert reason in lines[0]
    assert list(out_dir.iterdir()) == []  # no output, no temporary left behind
