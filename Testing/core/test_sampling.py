"""Crop sampling of the case cache: per-label crop centres (a small structure is not starved) and
flips that never reverse depth when Step 1 asks so."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.data.cache import CaseCache
from lwi.data.dataset import load_dataset
from lwi.data.preprocessing import PreprocessConfig


def _write_case(root, name, image, label):
    for sub, array in (("imagesTr", image), ("labelsTr", label)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        sitk.WriteImage(img, str(root / sub / f"{name}.nii.gz"))


@pytest.fixture(scope="module")
def big_and_small(tmp_path_factory):
    """One case: label 1 fills a large block, label 2 is a single 2^3 cube far from it."""
    root = tmp_path_factory.mktemp("bigsmall")
    shape = (64, 64, 64)
    label = np.zeros(shape, np.uint8)
    label[4:36, 4:60, 4:60] = 1
    label[56:58, 56:58, 56:58] = 2
    image = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32) + 50 * label
    _write_case(root, "case_000", image, label)
    return CaseCache(load_dataset(root), PreprocessConfig(modality="MR", crop_foreground=False), "cpu")


def test_every_label_gets_its_share_of_centred_crops(big_and_small):
    # Crops of 8^3 centred on a foreground voxel: with centres drawn over all foreground voxels the
    # 8-voxel structure would be hit by about 8 / 100,000 of them; per label, by half of them.
    _, labels = big_and_small.sample(200, (8, 8, 8), torch.Generator().manual_seed(0), pos_fraction=1.0, augment=False)
    has_small = (labels.flatten(1) == 2).any(dim=1).float().mean().item()
    has_big = (labels.flatten(1) == 1).any(dim=1).float().mean().item()
    assert 0.35 < has_small < 0.65, has_small
    assert 0.35 < has_big < 0.65, has_big


def test_step1_flips_never_reverse_depth(tmp_path):
    # The image's value is its depth index: in an unflipped-along-depth crop it increases along z.
    shape = (24, 24, 32)
    z = np.broadcast_to(np.arange(shape[2], dtype=np.float32), shape).copy()
    _write_case(tmp_path, "case_000", z + 1.0, (z > 5).astype(np.uint8))
    cache = CaseCache(
        load_dataset(tmp_path), PreprocessConfig(modality="CT", crop_foreground=False, ct_window=(0.0, 100.0)),
        "cpu", flip_prob=1.0, rot90_prob=0.0, intensity_prob=0.0,
    )
    gen = torch.Generator().manual_seed(0)
    images, _ = cache.sample(6, (16, 16, 16), gen, labelled=False, flip_axes=(0, 1))
    profile = images[:, 0].mean(dim=(1, 2))  # [B, Z]
    assert bool((profile[:, 1:] > profile[:, :-1]).all())
    # With depth allowed (Step 2) and flip_prob 1, depth is reversed.
    images, _ = cache.sample(6, (16, 16, 16), gen, labelled=False)
    profile = images[:, 0].mean(dim=(1, 2))
    assert bool((profile[:, 1:] < profile[:, :-1]).all())
