"""``lwi segment`` on a folder: several worker processes give the label maps of one, progress covers
the whole folder, a folder without DICOM gives no ITK warnings, and a bad image fails alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import make_phantom
from lwi.names import MODEL_SUFFIX

pytestmark = pytest.mark.slow
N_IMAGES = 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_bundle) -> Path:
    root = tmp_path_factory.mktemp("folder")
    make_bundle(root / f"tiny{MODEL_SUFFIX}")
    (root / "images").mkdir()
    for i in range(N_IMAGES):
        image, _ = make_phantom(i, shape=(24, 20, 12 + 2 * i), spacing=(3.0, 3.5, 5.0))
        sitk.WriteImage(image, str(root / "images" / f"case{i}.nii.gz"))
    return root


def _segment(folder: Path, out: str, *devices: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lwi", "segment", "--model", str(folder / f"tiny{MODEL_SUFFIX}"),
               "--input", str(folder / "images"), "--output", str(folder / out), "--progress", "json"]
    command += ["--devices", *devices] if len(devices) > 1 else ["--device", devices[0]]
    proc = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_workers_write_the_label_maps_of_one_and_report_the_whole_folder(folder):
    one = _segment(folder, "one", "cpu")
    two = _segment(folder, "two", "cpu", "cpu")
    for i in range(N_IMAGES):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "one" / f"case{i}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "two" / f"case{i}.nii.gz")))
        assert a.shape == (12 + 2 * i, 20, 24) and np.array_equal(a, b)
    events = [json.loads(line) for line in two.stdout.splitlines()]
    folder_steps = [e for e in events if e["event"] == "progress" and e["stage"] == "folder"]
    assert len(folder_steps) == N_IMAGES and folder_steps[-1]["fraction"] == 1.0
    assert sorted(e["case"] for e in folder_steps) == [f"case{i}.nii.gz" for i in range(N_IMAGES)]
    result = events[-1]
    assert result["event"] == "result" and len(result["outputs"]) == N_IMAGES
    assert "one worker per device: cpu, cpu" in two.stderr
    # The folder holds no DICOM: ITK's "No Series were found" warning must not reach the user.
    for proc in (one, two):
        assert "WARNING" not in proc.stderr and "No Series" not in proc.stderr, proc.stderr[:2000]


def test_a_bad_image_fails_alone(folder, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("case0.nii.gz", "case1.nii.gz"):
        (images / name).write_bytes((folder / "images" / name).read_bytes())
    (images / "broken.nii.gz").write_bytes(b"not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "lwi", "segment", "--model", str(folder / f"tiny{MODEL_SUFFIX}"), "--input",
         str(images), "--output", str(tmp_path / "out"), "--device", "cpu"],
        capture_output=True, text=True, encoding="utf-8", timeout=240,
    )
    assert proc.returncode == 1
    assert "1 of 3 images could not be segmented" in proc.stderr and "broken.nii.gz" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
