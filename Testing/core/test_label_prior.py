"""Step 2 starts its output layer at the class priors of the training labels (the fix for a label
that stayed at Dice 0 for a whole few-shot run; see lwi.strategies.step2.start_at_label_prior)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi import checkpoint
from lwi.architectures import build
from lwi.data.phantoms import write_phantom_dataset
from lwi.progress import Progress
from lwi.strategies import train
from lwi.strategies.step2 import PRIOR_FLOOR, start_at_label_prior

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.mark.parametrize("arch", ["segresnet", "unetr", "swinunetr", "mednext"])
def test_every_networks_output_layer_can_start_at_the_class_priors(arch):
    model = build(arch, 1, 4, (32, 32, 32))
    priors = start_at_label_prior(model, [0.9, 0.07, 0.03, 0.0])
    bias = model.output_bias()
    assert bias is not None and bias.shape == (4,)
    # The untrained network's class probabilities without input features are the priors; a label
    # absent from the labels (or rarer than the floor) starts at the floor, not at log 0.
    assert torch.softmax(bias.detach().double(), 0).tolist() == pytest.approx(priors, abs=1e-6)
    assert priors[1:] == pytest.approx([0.07, 0.03, PRIOR_FLOOR], abs=1e-3)
    assert priors[0] == pytest.approx(1 - 0.07 - 0.03 - PRIOR_FLOOR, abs=1e-3)


def test_step2_output_layer_starts_at_the_training_labels_frequencies(tmp_path):
    data = write_phantom_dataset(tmp_path / "ds", 3, seed=0, shape=(48, 48, 32))
    stream = io.StringIO()
    out = tmp_path / "m.lwi.safetensors"
    # One iteration at a negligible learning rate: the bundle's output bias is where Step 2 started.
    train(
        data, out, strategy="scratch", pretrain_epochs=0, epochs=1, iterations_per_epoch=1, lr=1e-9,
        arch="segresnet", arch_params={"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
        roi=(32, 32, 32), batch_size=2, device="cpu", val_fraction=0.0, progress=Progress("json", stream),
    )
    tensors, _ = checkpoint.load(out)
    bias = next(v for k, v in tensors.items() if k.endswith("conv_final.2.conv.bias"))
    start = torch.softmax(bias.double(), 0).numpy()

    counts = np.zeros(5)
    for path in sorted((data / "labelsTr").glob("*.nii.gz")):
        counts += np.bincount(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).ravel(), minlength=5)[:5]
    freq = counts / counts.sum()
    # Preprocessing crops background away, which scales every label's share by the same factor;
    # relative to the liver (the largest), each label must start at its share, or at the floor.
    scale = start[1] / freq[1]
    expected = np.maximum(freq[1:] * scale, PRIOR_FLOOR)
    assert start[1:] == pytest.approx(expected, rel=0.05)
    assert 1 < scale < 3  # and the shares are of the cropped label maps, not 1/5 each (the default)
    assert start[0] > 0.85
    assert "Output layer starts at the training labels' voxel frequencies" in stream.getvalue()
