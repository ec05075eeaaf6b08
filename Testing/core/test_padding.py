"""Volumes smaller than the ROI: training crops and inference windows must pad them alike.

A network trained on crops padded with the background only ever sees that border; MONAI's sliding
window pads with 0 by default, the mean of a z-scored MR. A SegResNet trained on the 5-case
hippocampus set at the plan's whole-image ROI (48x64x48 for 36x50x36 images) reached training Dice
0.89 and test Dice 0.000 before both sides used the same value.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.data.cache import CaseCache
from lwi.data.dataset import Case
from lwi.data.preprocessing import PreprocessConfig
from lwi.engine import Validator
from lwi.inference import Segmenter
from lwi.testing import TINY_PREPROCESSING, TINY_ROI, build_tiny_bundle

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

MR = {**TINY_PREPROCESSING, "modality": "MR", "crop_foreground": False}


class Recorder(torch.nn.Module):
    """The network, recording every window it is given."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.windows = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows.append(x.detach().clone())
        return self.net(x)


def _small_mr_case(tmp_path) -> Case:
    """A 10x12x9-voxel MR-like volume at 4 mm (smaller than the 16^3 ROI on every axis): a bright
    body on a dark background, and a label inside it."""
    rng = np.random.default_rng(0)
    image = rng.normal(20.0, 2.0, (9, 12, 10)).astype(np.float32)  # z, y, x
    image[2:7, 3:9, 2:8] += 300.0
    label = np.zeros(image.shape, np.uint8)
    label[3:6, 4:8, 3:7] = 1
    paths = []
    for name, array in (("image", image), ("label", label)):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((4.0, 4.0, 4.0))
        paths.append(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(img, str(paths[-1]))
    return Case("small", paths[0], paths[1])


def test_inference_and_validation_pad_a_small_volume_as_the_training_crops(tmp_path):
    case = _small_mr_case(tmp_path)
    config = PreprocessConfig.from_dict(MR)
    cache = CaseCache([case], config, "cpu")
    crop, _ = cache.sample(1, TINY_ROI, generator=torch.Generator().manual_seed(0), augment=False, pos_fraction=0.0)
    image, label = cache.full_case(0)
    assert tuple(image.shape[1:]) < TINY_ROI and float(image.min()) < -0.3  # padded; background far below 0

    bundle = build_tiny_bundle(tmp_path / "m.lwi.safetensors", labels={0: "background", 1: "body"}, preprocessing=MR)
    segmenter = Segmenter(bundle, device="cpu", overlap=0.0)
    segmenter.model = Recorder(segmenter.model)
    segmenter.segment(sitk.ReadImage(str(case.image)))
    (window,) = segmenter.model.windows  # one window covers the whole small volume
    assert torch.allclose(window, crop, atol=1e-5)

    validator_net = Recorder(segmenter.model.net)
    Validator([(image, label)], {0: "background", 1: "body"}, TINY_ROI, overlap=0.0, sw_batch_size=1)(validator_net)
    (window,) = validator_net.windows
    assert torch.allclose(window, crop, atol=1e-5)
