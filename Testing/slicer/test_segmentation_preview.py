"""The Step-1 preview of LWISegmentation (LWISegmentationLib.preview): options, and the geometry of a real
``lwi preview`` run (started the way the module starts it) that the module shows."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import make_phantom

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import cli_args  # noqa: E402
from LWICommon.process import ProcessRunner  # noqa: E402
from LWISegmentationLib import preview  # noqa: E402


def test_options_are_checked_before_anything_starts():
    options = preview.preview_options(4, 0.25, 8, seed=3, model="m.lwi.safetensors", device="cpu")
    assert options == {"subvolumes": 4, "mask_ratio": 0.25, "cube_size": 8, "seed": 3, "device": "cpu",
                       "model": "m.lwi.safetensors"}
    args = cli_args.preview_command("in.nrrd", "out", options, python="py")
    assert args[args.index("--subvolumes") + 1] == "4" and args[args.index("--seed") + 1] == "3"
    assert "--json" in args
    assert "--subvolumes" not in cli_args.preview_command("in.nrrd", "out", preview.preview_options(), python="py")
    for bad in ({"num_subvolumes": 0}, {"mask_ratio": 1.0}, {"mask_ratio": -0.1}, {"cube_size": 0}):
        with pytest.raises(ValueError):
            preview.preview_options(**bad)
    rng = random.Random(1)
    assert preview.new_seed(rng) != preview.new_seed(rng)  # "new random draw"


def test_slots_and_boundaries_follow_the_permutation():
    info = {"permutation": [2, 0, 1], "subvolume_depth": 5, "preprocessed_shape": [9, 9, 13],
            "num_subvolumes": 3, "cube_size": 4, "mask_grid_shape": [3, 3, 4], "masked_cubes": 14, "seed": 9}
    slots = preview.subvolume_slots(info)
    assert [(s.block, s.first, s.last) for s in slots] == [(2, 0, 4), (0, 5, 9), (1, 10, 12)]  # last one padded
    assert preview.boundary_slices(info) == [5, 10]
    text = preview.summary(info)
    assert "3 sub-volumes of 5 slices" in text and "order 3 1 2" in text and "14 of 36 cubes" in text


def test_a_real_preview_lies_on_the_input_and_shows_the_subvolumes(tmp_path):
    image, _ = make_phantom(0, shape=(40, 36, 30), spacing=(3.0, 3.0, 4.0))
    c, s = np.cos(0.2), np.sin(0.2)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    image.SetOrigin((-50.0, 20.0, 100.0))
    source = tmp_path / "ct.nrrd"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "preview"
    options = preview.preview_options(num_subvolumes=5, mask_ratio=0.3, cube_size=8, seed=11, device="cpu")
    runner = ProcessRunner(
        cli_args.preview_command(str(source), str(out), options, python=sys.executable),
        env=cli_args.subprocess_env(str(ROOT)),
    ).start()
    assert runner.wait(120) == 0, runner.error_message()
    info = preview.read_preview(str(out))
    assert info["num_subvolumes"] == 5 and info["seed"] == 11 and info["cube_size"] == 8

    shuffled = sitk.ReadImage(info["paths"]["shuffled"])
    masked = sitk.ReadImage(info["paths"]["shuffled_masked"])
    layout = sitk.ReadImage(info["paths"]["subvolumes"])
    for view in (masked, layout):  # the views overlay each other exactly
        assert view.GetSize() == shuffled.GetSize()
        np.testing.assert_allclose(view.GetOrigin(), shuffled.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(view.GetDirection(), shuffled.GetDirection(), atol=1e-6)
    # ... and lie on the input in physical space: the views' centre is inside the input.
    centre = shuffled.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in shuffled.GetSize()])
    index = image.TransformPhysicalPointToContinuousIndex(centre)
    assert all(-0.5 <= i <= n - 0.5 for i, n in zip(index, image.GetSize()))

    array = sitk.GetArrayFromImage(layout)  # numpy order z, y, x: z is the shuffled axis
    slots = preview.subvolume_slots(info)
    assert len(slots) == 5 and slots[-1].last == shuffled.GetSize()[2] - 1
    for slot in slots:
        assert np.all(array[slot.first : slot.last + 1] == slot.block + 1)
    for k in preview.boundary_slices(info):
        assert np.all(array[k] != array[k - 1])
    masked_fraction = float(np.mean(sitk.GetArrayFromImage(masked) == 0))
    assert 0.1 < masked_fraction < 0.6  # about the requested ratio of cubes is blanked


def test_an_incomplete_output_folder_is_reported(tmp_path):
    with pytest.raises(ValueError, match="No preview"):
        preview.read_preview(str(tmp_path))
    (tmp_path / "preview.json").write_text('{"files": {"shuffled": "shuffled.nii.gz"}}')
    with pytest.raises(ValueError, match="lacks the view"):
        preview.read_preview(str(tmp_path))
