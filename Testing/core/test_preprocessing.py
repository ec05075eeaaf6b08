"""Preprocessing (lwi.data.preprocessing) and the case cache with augmentation (lwi.data.cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.data.cache import CaseCache
from lwi.data.dataset import Case, load_dataset
from lwi.data.phantoms import write_phantom_dataset
from lwi.data.preprocessing import PreprocessConfig, build_transforms, median_spacing, preprocess
from lwi.errors import LWIError
from lwi.io import image_to_metatensor

# An oblique direction whose image axes also run along other patient axes than x, y, z.
OBLIQUE = np.array(sitk.VersorTransform((0.2, 0.1, 1.0), 0.3).GetMatrix()).reshape(3, 3)[:, [1, 2, 0]]


def make_pair(size=(20, 18, 16), spacing=(1.2, 0.9, 2.0), origin=(30.0, -20.0, 7.0), direction=None, hu=None):
    """A CT-like image (body box at 40 HU in air) and a label cube, on a shared grid."""
    arr = np.full(size, -1000.0, dtype=np.float32)
    arr[2:-2, 3:-3, 2:-2] = 40.0 if hu is None else hu
    lab = np.zeros(size, dtype=np.uint8)
    lab[5:9, 6:11, 4:7] = 1
    lab[12:15, 6:9, 8:12] = 2
    images = []
    for a in (arr, lab):
        img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        if direction is not None:
            img.SetDirection(np.asarray(direction).ravel().tolist())
        images.append(img)
    return images


def ras_centroid_from_sitk(label: sitk.Image, value: int) -> np.ndarray:
    idx = np.argwhere(sitk.GetArrayFromImage(label).transpose(2, 1, 0) == value)
    points = [label.TransformContinuousIndexToPhysicalPoint([float(v) for v in i]) for i in idx]
    return np.mean(points, axis=0) * np.array([-1.0, -1.0, 1.0])


def ras_centroid_from_tensor(label: torch.Tensor, value: int) -> np.ndarray:
    idx = np.argwhere(label[0].numpy() == value).astype(np.float64)
    affine = label.affine.numpy()
    return (affine[:3, :3] @ idx.T).T.mean(axis=0) + affine[:3, 3]


# -- preprocessing --------------------------------------------------------------------------------


def test_ras_orientation_and_spacing_keep_structures_at_their_physical_position():
    image, label = make_pair(direction=OBLIQUE)
    config = PreprocessConfig(spacing=(1.5, 1.5, 1.5), modality="CT", crop_foreground=False)
    x, y = preprocess(image, label, config)
    affine = y.affine.numpy()
    # The output grid is RAS-ordered (axis i runs mostly along world axis i, increasing) with the
    # target spacing; the oblique rotation is kept, not resampled away.
    assert np.all(np.argmax(np.abs(affine[:3, :3]), axis=0) == [0, 1, 2])
    assert np.all(np.diag(affine[:3, :3]) > 0)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.5, 1.5, 1.5], rtol=1e-6)
    # The physical extent is preserved: the voxel count scales by the spacing ratio.
    ras_extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    ras_extent = ras_extent[[2, 0, 1]]  # the image axes that follow R, A, S (OBLIQUE's column order)
    np.testing.assert_allclose(x.shape[1:], ras_extent / 1.5, atol=1.01)
    assert x.shape == y.shape and x.dtype == torch.float32
    # Each labelled structure is where it was in patient space (within a voxel).
    for value in (1, 2):
        np.testing.assert_allclose(
            ras_centroid_from_tensor(y, value), ras_centroid_from_sitk(label, value), atol=1.5
        )


def test_ct_window_scales_hu_to_unit_range():
    image, _ = make_pair(hu=37.5)  # the middle of the default -175..250 window
    x, _ = preprocess(image, None, PreprocessConfig(modality="CT", crop_foreground=False))
    assert float(x.min()) == 0.0  # air is clipped to the bottom of the window
    assert float(x.max()) == pytest.approx(0.5, abs=1e-6)
    config = PreprocessConfig(modality="CT", crop_foreground=False, ct_window=(-1000.0, 1000.0))
    x, _ = preprocess(image, None, config)
    assert float(x.max()) == pytest.approx(0.51875, abs=1e-6) and float(x.min()) == 0.0


def test_mr_z_score_per_volume():
    rng = np.random.default_rng(0)
    arr = rng.gamma(2.0, 150.0, size=(16, 14, 12)).astype(np.float32) + 10.0
    image = sitk.GetImageFromArray(arr)
    x, _ = preprocess(image, None, PreprocessConfig(modality="MR"))
    assert abs(float(x.mean())) < 1e-4
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_foreground_crop_cuts_the_air_and_crops_the_label_alike():
    image, label = make_pair()
    x, y = preprocess(image, label, PreprocessConfig(modality="CT"))
    assert tuple(x.shape[1:]) == (16, 12, 12)  # the 40 HU box only
    assert x.shape == y.shape
    assert sorted(torch.unique(y).tolist()) == [0, 1, 2]
    assert int((y == 1).sum()) == 4 * 5 * 3 and int((y == 2).sum()) == 3 * 3 * 4


def test_preprocessing_is_inverted_exactly_by_monai_for_label_maps():
    image, label = make_pair(direction=OBLIQUE)
    config = PreprocessConfig(modality="CT")  # foreground crop + reorientation, native spacing
    transforms = build_transforms(config, with_label=True)
    out = transforms({"image": image_to_metatensor(image), "label": image_to_metatensor(label)})
    assert tuple(out["label"].shape[1:]) != label.GetSize()
    back = transforms.inverse({"label": out["label"]})["label"]
    np.testing.assert_array_equal(back[0].numpy(), sitk.GetArrayFromImage(label).transpose(2, 1, 0))


def test_config_round_trips_through_json_and_rejects_bad_values():
    config = PreprocessConfig(spacing=(1.5, 1.5, 2), modality="ct", ct_window=(-100, 300))
    again = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.modality == "CT" and again.spacing == (1.5, 1.5, 2.0)
    with pytest.raises(LWIError):
        PreprocessConfig(modality="PET")
    with pytest.raises(LWIError):
        PreprocessConfig(spacing=(1.0, 0.0, 1.0))
    with pytest.raises(LWIError):
        PreprocessConfig(ct_window=(250.0, -175.0))


def test_median_spacing_is_taken_along_ras_axes(tmp_path):
    permuted = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # image axes k, i, j -> R, A, S
    specs = [((1.0, 1.0, 3.0), None), ((2.0, 2.0, 5.0), None), ((5.0, 1.0, 1.0), permuted)]
    cases = []
    for i, (spacing, direction) in enumerate(specs):
        img, _ = make_pair(spacing=spacing, direction=direction)
        path = tmp_path / f"c{i}.nii.gz"
        sitk.WriteImage(img, str(path))
        cases.append(Case(f"c{i}", path))
    # The third image's spacings along R, A, S are (1, 5, 1): per-axis medians (1, 2, 3), where the
    # file-order spacings would give (2, 1, 3).
    assert median_spacing(cases) == pytest.approx((1.0, 2.0, 3.0))


# -- the case cache -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory):
    root = write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), 3, seed=0, shape=(32, 32, 24))
    ds = load_dataset(root)
    config = PreprocessConfig(spacing=(4.0, 4.0, 4.0), modality=ds.modality)
    return CaseCache(ds, config, "cpu")


def test_cache_sample_shapes_and_types(phantom_cache):
    images, labels = phantom_cache.sample(3, (16, 16, 8), torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 16, 16, 8) and images.dtype == torch.float32
    assert labels.shape == (3, 1, 16, 16, 8) and labels.dtype == torch.float32
    assert set(torch.unique(labels).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    images, labels = phantom_cache.sample(2, (16, 16, 8), torch.Generator().manual_seed(0), labelled=False)
    assert images.shape == (2, 1, 16, 16, 8) and labels is None


def test_positive_crops_contain_foreground(phantom_cache):
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        _, labels = phantom_cache.sample(4, (8, 8, 8), gen, pos_fraction=1.0)
        assert bool((labels.flatten(1) > 0).any(dim=1).all())


def test_negative_crops_land_anywhere(phantom_cache):
    _, labels = phantom_cache.sample(40, (4, 4, 4), torch.Generator().manual_seed(2), pos_fraction=0.0)
    has_foreground = (labels.flatten(1) > 0).any(dim=1)
    # Small crops placed uniformly: some hit organs, many only background.
    assert 0 < int(has_foreground.sum()) < 40


def test_sampling_is_deterministic_for_a_seeded_generator(phantom_cache):
    a = phantom_cache.sample(4, (16, 16, 8), torch.Generator().manual_seed(7))
    b = phantom_cache.sample(4, (16, 16, 8), torch.Generator().manual_seed(7))
    c = phantom_cache.sample(4, (16, 16, 8), torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_volumes_smaller_than_the_roi_are_padded(phantom_cache):
    shape = tuple(phantom_cache.images[0].shape[1:])
    roi = (shape[0] + 6, 8, shape[2] + 3)
    images, labels = phantom_cache.sample(2, roi, torch.Generator().manual_seed(3), augment=False)
    assert images.shape == (2, 1, *roi)
    assert bool((labels[:, :, :3] == 0).all()) and bool((labels[:, :, -3:] == 0).all())


def test_spatial_augmentation_moves_image_and_label_together(tmp_path):
    root = write_phantom_dataset(tmp_path, 1, seed=5, shape=(32, 32, 24))
    cache = CaseCache(
        load_dataset(root), PreprocessConfig(modality="MR"), "cpu", flip_prob=0.5, rot90_prob=1.0, intensity_prob=0.0
    )
    image, label = cache.full_case(0)
    # Bone is the brightest structure: the voxels above a threshold are exactly its label, before
    # and after every flip and rotation.
    threshold = float(image[label == 4].min()) - 1e-3
    assert torch.equal(image > threshold, label == 4)
    images, labels = cache.sample(16, (16, 16, 12), torch.Generator().manual_seed(0))
    assert torch.equal(images > threshold, labels == 4)


def test_intensity_augmentation_is_a_bounded_scale_and_shift(tmp_path):
    root = write_phantom_dataset(tmp_path, 1, seed=6, shape=(16, 16, 12))
    config = PreprocessConfig(modality="CT", crop_foreground=False)
    cache = CaseCache(load_dataset(root), config, "cpu", flip_prob=0.0, rot90_prob=0.0, intensity_prob=1.0)
    image, _ = cache.full_case(0)
    images, _ = cache.sample(6, tuple(image.shape[1:]), torch.Generator().manual_seed(0))
    x = image.flatten().double()
    fits = []
    for crop in images:
        a, b = np.polyfit(x.numpy(), crop.flatten().double().numpy(), 1)
        assert 0.9 - 1e-4 <= a <= 1.1 + 1e-4 and abs(b) <= 0.1 + 1e-4
        fits.append((a, b))
    assert len({round(a, 4) for a, _ in fits}) > 1  # it is random


def test_full_case_and_image_only_cache(tmp_path):
    root = write_phantom_dataset(tmp_path, 2, seed=3, shape=(16, 16, 12))
    ds = load_dataset(root, require_labels=False)
    cache = CaseCache(ds, PreprocessConfig(modality="CT"), "cpu", with_labels=False)
    image, label = cache.full_case(1)
    assert image.ndim == 4 and label is None and cache.in_channels == 1
    with pytest.raises(LWIError):
        cache.sample(1, (8, 8, 8), labelled=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cache_matches_cpu_cache(tmp_path):
    root = write_phantom_dataset(tmp_path, 2, seed=0, shape=(32, 32, 24))
    ds = load_dataset(root)
    config = PreprocessConfig(spacing=(4.0, 4.0, 4.0), modality="CT")
    cpu, gpu = CaseCache(ds, config, "cpu"), CaseCache(ds, config, "cuda")
    assert gpu.images[0].is_cuda and gpu.labels[0].is_cuda
    a = cpu.sample(4, (16, 16, 8), torch.Generator().manual_seed(0))
    b = gpu.sample(4, (16, 16, 8), torch.Generator().manual_seed(0))
    assert b[0].is_cuda
    torch.testing.assert_close(b[0].cpu(), a[0], atol=1e-4, rtol=1e-4)
    assert float((b[1].cpu() == a[1]).float().mean()) > 0.999
