"""``lwi preview``: the Step-1 views, written as real files that overlay the input image."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi import checkpoint
from lwi.data.phantoms import make_phantom
from lwi.data.preprocessing import PreprocessConfig, preprocess
from lwi.preview import FILES, INFO_FILE, make_preview
from lwi.transformation import mask_to_voxels, shuffle, unshuffle

CT = PreprocessConfig(modality="CT")


def _oblique_input(tmp_path):
    """A phantom stored with permuted and flipped axes: its voxel axes are not the RAS axes."""
    image, _ = make_phantom(11, shape=(36, 32, 24))
    image = sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, False])
    path = tmp_path / "input.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, sitk.ReadImage(str(path))


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


@pytest.fixture(scope="module")
def cli_preview(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("preview")
    path, image = _oblique_input(tmp)
    out = tmp / "views"
    cmd = [sys.executable, "-m", "lwi", "preview", "--input", str(path), "--out-dir", str(out),
           "--subvolumes", "3", "--cube-size", "8", "--mask-ratio", "0.4", "--seed", "7", "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    views = {name: sitk.ReadImage(str(out / filename)) for name, filename in info["files"].items()}
    return image, info, printed, views


def test_json_describes_the_views(cli_preview):
    _, info, printed, views = cli_preview
    assert sorted(info["files"]) == sorted(FILES) and set(views) == set(FILES)
    assert printed["permutation"] == info["permutation"]
    assert info["num_subvolumes"] == 3 and sorted(info["permutation"]) == [0, 1, 2]
    assert info["mask_ratio"] == 0.4 and info["cube_size"] == 8 and info["preprocessing"]["modality"] == "CT"
    grid = np.asarray(info["mask_grid"], dtype=bool)
    assert list(grid.shape) == info["mask_grid_shape"]
    assert grid.sum() == int(grid.size * 0.4) == info["masked_cubes"]


def test_unshuffling_with_the_json_permutation_restores_the_preprocessed_volume(cli_preview):
    image, info, _, views = cli_preview
    pre, _ = preprocess(image, None, CT)
    expected = pre.as_tensor()[0].numpy()
    assert np.allclose(_xyz(views["preprocessed"]), expected, atol=1e-6)  # exactly training's preprocessing
    shuffled = torch.from_numpy(_xyz(views["shuffled"]))[None, None]
    perm = torch.tensor([info["permutation"]])
    assert info["padding"][2] == [0, 0]  # 24 slices split evenly into 3
    assert torch.allclose(unshuffle(shuffled, perm)[0, 0], torch.from_numpy(expected), atol=1e-6)
    assert not np.allclose(_xyz(views["shuffled"]), expected)  # the seed-7 permutation is not the identity
    # The sub-volume label map says which original sub-volume each slice shows.
    layout = _xyz(views["subvolumes"])
    depth = info["subvolume_depth"]
    for slot, original in enumerate(info["permutation"]):
        assert np.all(layout[:, :, slot * depth : (slot + 1) * depth] == original + 1)


def test_masked_view_is_the_shuffled_view_with_the_json_cubes_zeroed(cli_preview):
    _, info, _, views = cli_preview
    shuffled, masked = _xyz(views["shuffled"]), _xyz(views["shuffled_masked"])
    grid = torch.tensor(info["mask_grid"], dtype=torch.bool)[None]
    voxels = mask_to_voxels(grid, info["cube_size"])[0].numpy()[tuple(slice(0, s) for s in shuffled.shape)]
    assert np.array_equal(_xyz(views["mask"]).astype(bool), voxels)
    assert np.all(masked[voxels] == 0)
    assert np.array_equal(masked[~voxels], shuffled[~voxels])
    assert (shuffled[voxels] != 0).any()  # masking really removed content


def test_views_overlay_the_input_in_physical_space(cli_preview):
    image, _, _, views = cli_preview
    for name in FILES:
        assert _same_grid(views[name], views["preprocessed"]), name
    # Put the preprocessed view back on the input's grid: every voxel it covers matches the input's
    # windowed intensity, so the views sit exactly where the original is.
    back = sitk.Resample(views["preprocessed"], image, sitk.Transform(), sitk.sitkNearestNeighbor, -1.0)
    back = sitk.GetArrayFromImage(back)
    hu = sitk.GetArrayFromImage(image).astype(np.float64)
    covered = back >= 0
    assert covered[hu > -175].all()  # the whole body (the foreground crop) is covered
    assert np.allclose(back[covered], np.clip((hu[covered] + 175) / 425, 0, 1), atol=1e-5)


def test_resampled_preview_still_overlays_and_pads_uneven_depths(tmp_path):
    _, image = _oblique_input(tmp_path)
    config = PreprocessConfig(modality="CT", spacing=(4.5, 4.5, 5.0))
    preview = make_preview(image, config, num_subvolumes=5, mask_ratio=0.25, cube_size=4, seed=3)
    info, views = preview["info"], preview["images"]
    size = info["preprocessed_shape"]
    assert size[2] % 5 != 0 and info["padding"][2][1] == (-size[2]) % 5
    # The shuffle is reproduced by padding the preprocessed view the same way (edge slices repeated).
    x = torch.from_numpy(_xyz(views["preprocessed"]))[None, None]
    padded = torch.nn.functional.pad(x, (0, info["padding"][2][1], 0, 0, 0, 0), mode="replicate")
    expected = shuffle(padded, torch.tensor([info["permutation"]]))[0, 0, :, :, : size[2]]
    assert torch.allclose(torch.from_numpy(_xyz(views["shuffled"])), expected)
    # Coarser grid, same place: resampled back onto the input it correlates with the windowed input.
    back = sitk.GetArrayFromImage(
        sitk.Resample(views["preprocessed"], image, sitk.Transform(), sitk.sitkLinear, -1.0)
    )
    hu = sitk.GetArrayFromImage(image).astype(np.float64)
    covered = back >= 0
    reference = np.clip((hu[covered] + 175) / 425, 0, 1)
    assert np.corrcoef(back[covered], reference)[0, 1] > 0.9


def test_preview_takes_preprocessing_and_n_from_a_model(tmp_path):
    from lwi.architectures import build
    from lwi.bundle import save_bundle

    path, _ = _oblique_input(tmp_path)
    adapter = build("segresnet", 1, 2, (32, 32, 24), init_filters=8)  # N = 24 / 8 = 3
    pre = PreprocessConfig(modality="CT", spacing=(3.0, 3.0, 4.0)).to_dict()
    model = save_bundle(tmp_path / "m.lwi.safetensors", adapter, {1: "liver"}, pre)
    out = tmp_path / "views"
    result = subprocess.run(
        [sys.executable, "-m", "lwi", "preview", "--input", str(path), "--out-dir", str(out),
         "--model", str(model), "--cube-size", "8"],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    assert info["num_subvolumes"] == 3
    assert info["preprocessing"]["spacing"] == [3.0, 3.0, 4.0]

    # A Step-1 checkpoint records the transformation it trained with; the preview uses it.
    step1 = tmp_path / "step1.safetensors"
    checkpoint.save(step1, {}, {
        "format": "lwi-step1", "format_version": 1, "architecture": adapter.spec(), "preprocessing": pre,
        "step1": {"num_subvolumes": 2, "mask_ratio": 0.25, "cube_size": 4},
    })
    result = subprocess.run(
        [sys.executable, "-m", "lwi", "preview", "--input", str(path), "--out-dir", str(out), "--model", str(step1),
         "--overwrite"],  # the first preview's views are replaced
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    assert (info["num_subvolumes"], info["mask_ratio"], info["cube_size"]) == (2, 0.25, 4)


def test_unreadable_input_is_a_one_line_error(tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_text("not an image")
    result = subprocess.run(
        [sys.executable, "-m", "lwi", "preview", "--input", str(bad), "--out-dir", str(tmp_path / "o"),
         "--subvolumes", "2"],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / INFO_FILE).exists()
