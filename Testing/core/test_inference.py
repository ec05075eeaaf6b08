"""Inference geometry: the label map comes back on exactly the input's grid, structures in place.

The network is a hand-set 1x1x1 convolution, i.e. a model that has learned a trivial mapping
(intensity thresholds -> labels), so every voxel's expected label is known exactly and any error in
preprocessing, sliding-window stitching, inversion or geometry shows up as misplaced structures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi.data.preprocessing import PreprocessConfig
from lwi.inference import Segmenter, keep_largest_components
from lwi.resampling import resample_argmax, resample_linear, resample_nearest

# Thresholds on the windowed intensity ([-175, 250] HU -> [0, 1]) halfway between the painted levels:
# body 0 HU (0.412), label 1 at 100 HU (0.647), label 2 at 240 HU (0.976). Resampling interpolates HU
# before the window, so levels inside the window keep "halfway" meaning the same on both grids.
T1, T2 = (0.412 + 0.647) / 2, (0.647 + 0.976) / 2


class ThresholdNet(torch.nn.Module):
    """Logits l_k = k*a*x - c_k, so argmax is 0 below T1, 1 in [T1, T2), 2 above T2 (windowed units)."""

    def __init__(self, a: float = 50.0):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, a, 2 * a]).view(3, 1, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, -a * T1, -a * (T1 + T2)]))

    def forward(self, x):
        return self.conv(x)


def _metadata(spacing=(1.5, 1.5, 2.0), roi=(16, 16, 16)):
    return {
        "architecture": {"arch": "threshold", "in_channels": 1, "out_channels": 3, "roi_size": list(roi)},
        "labels": [
            {"value": 1, "name": "organ", "color": [221, 130, 101]},
            {"value": 2, "name": "lesion", "color": [144, 238, 144]},
        ],
        "preprocessing": PreprocessConfig(spacing=spacing, modality="CT").to_dict(),
        "inference": {"roi_size": list(roi), "overlap": 0.25, "sw_batch_size": 2},
    }


def _rotation(axis, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    r = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _oblique_image():
    """Oblique, anisotropic, non-RAS axis order (IJK ~ S, L, P with flips), non-zero origin.

    A body (0 HU) in air holds a ball of label 1 (100 HU) with a smaller ball of label 2 (240 HU) inside,
    off-centre, so every boundary separates neighbouring intensity levels (no interpolation ring
    of another label). Returns the image and the painted label map ``[x, y, z]``.
    """
    size = (30, 34, 22)
    spacing = (2.1, 1.1, 1.6)
    # Columns = where each index axis points in LPS: i ~ +S, j ~ -L (= R), k ~ +P, then tilted.
    permute = np.array([[0, -1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)
    direction = _rotation(0, 17) @ _rotation(2, -11) @ permute
    image = sitk.Image(list(size), sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin((-41.3, 17.9, 103.2))
    # Physical coordinates of every voxel, then paint by distance.
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).reshape(-1, 3)
    phys = idx @ (direction @ np.diag(spacing)).T + np.asarray(image.GetOrigin())
    centre = phys.mean(axis=0)
    balls = [(centre + np.array([4.0, -3.0, 2.0]), 11.0, 1, 100), (centre + np.array([7.0, -5.0, 4.0]), 5.0, 2, 240)]
    hu = np.full(len(phys), -1000.0)
    hu[np.linalg.norm(phys - centre, axis=1) < 24] = 0.0  # a body, so the foreground crop does something
    truth = np.zeros(len(phys), np.uint8)
    for c, r, value, level in balls:
        inside = np.linalg.norm(phys - c, axis=1) < r
        hu[inside] = level
        truth[inside] = value
    arr = hu.reshape(size).transpose(2, 1, 0).astype(np.int16)  # [x, y, z] -> numpy [z, y, x]
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out, truth.reshape(size)


def _centroid_lps(label: sitk.Image, value: int) -> np.ndarray:
    arr = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    idx = np.argwhere(arr == value)
    assert len(idx), f"label {value} missing from the output"
    return np.asarray(label.TransformContinuousIndexToPhysicalPoint(idx.mean(axis=0).tolist()))


def _as_image(array_xyz, reference):
    out = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    out.CopyInformation(reference)
    return out


@pytest.mark.parametrize("spacing_scale", [1.0, 2.0])
def test_label_map_on_input_grid_with_structures_in_place(spacing_scale):
    image, truth = _oblique_image()
    seg = Segmenter.from_model(ThresholdNet(), _metadata(), device="cpu", spacing_scale=spacing_scale)
    result = seg.segment(image)
    label = result.label
    assert label.GetSize() == image.GetSize()
    assert np.allclose(label.GetSpacing(), image.GetSpacing())
    assert np.allclose(label.GetOrigin(), image.GetOrigin())
    assert np.allclose(label.GetDirection(), image.GetDirection())
    out = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
    assert set(np.unique(out)) <= {0, 1, 2}
    painted = _as_image(truth, image)
    for value in (1, 2):
        # Each structure comes back where it was painted, in physical space, with the right label.
        err = np.linalg.norm(_centroid_lps(label, value) - _centroid_lps(painted, value))
        # Within half a network voxel (2 mm x scale); a flipped or swapped axis moves it >= 8 mm.
        assert err < 1.0 * spacing_scale, (value, err)
        dice = 2 * np.sum((out == value) & (truth == value)) / (np.sum(out == value) + np.sum(truth == value))
        assert dice > (0.8 if spacing_scale == 1.0 else 0.65), (value, dice)
    assert result.device == "cpu"


def test_without_resampling_the_round_trip_is_exact():
    """Spacing kept: crop + reorientation only, so the result must equal the painted map voxel for voxel."""
    image, truth = _oblique_image()
    metadata = _metadata()
    metadata["preprocessing"] = PreprocessConfig(spacing=None, modality="CT").to_dict()
    label = Segmenter.from_model(ThresholdNet(), metadata, device="cpu").segment(image).label
    assert np.array_equal(sitk.GetArrayFromImage(label).transpose(2, 1, 0), truth)


def test_probabilities_are_on_the_input_grid_and_agree_with_the_label_map():
    image, _ = _oblique_image()
    seg = Segmenter.from_model(ThresholdNet(a=5.0), _metadata(), device="cpu")
    result = seg.segment(image, return_probabilities=True)
    probs = result.probabilities
    assert probs is not None and probs.GetNumberOfComponentsPerPixel() == 3
    assert probs.GetSize() == image.GetSize()
    assert np.allclose(probs.GetDirection(), image.GetDirection())
    p = sitk.GetArrayFromImage(probs)  # [z, y, x, c]
    assert np.allclose(p.sum(-1), 1.0, atol=1e-4)
    lab = sitk.GetArrayFromImage(result.label)
    # Interpolated probabilities and the nearest-neighbour label map agree almost everywhere.
    assert np.mean(p.argmax(-1) == lab) > 0.97


def test_resample_nearest_follows_the_affine():
    vol = torch.arange(4 * 5 * 6, dtype=torch.int32).reshape(4, 5, 6)
    # Input grid = the volume flipped along x and shifted by one voxel along z.
    to_net = np.eye(4)
    to_net[0, 0], to_net[0, 3] = -1.0, 3.0
    to_net[2, 3] = 1.0
    out = resample_nearest(vol, to_net, (4, 5, 6))
    assert torch.equal(out[:, :, :5], vol.flip(0)[:, :, 1:])
    assert torch.all(out[:, :, 5] == 0)  # beyond the network grid: background


def test_resample_argmax_equals_argmax_of_fully_interpolated_logits():
    """The boundary-only shortcut gives exactly the labels of interpolating every channel everywhere."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.nn.functional.avg_pool3d(torch.randn(1, 4, 14, 12, 10, generator=gen), 3, 1, 1)[0] * 9
    to_net = np.eye(4)
    to_net[:3, :3] = _rotation(1, 23) @ np.diag([0.55, 0.7, 0.9])  # oblique, finer input grid
    to_net[:3, 3] = [1.3, -0.4, 0.8]
    size = (22, 17, 13)
    fast = resample_argmax(logits, logits.argmax(0).to(torch.uint8), to_net, size)
    full = resample_linear(logits, to_net, size).argmax(0)  # grid_sample of every channel
    assert torch.equal(fast.long(), full)
    assert 0 < (fast == 0).float().mean() < 1  # some voxels fall outside the network grid


def test_axis_aligned_fast_path_matches_the_general_path(monkeypatch):
    import lwi.resampling as resampling

    gen = torch.Generator().manual_seed(1)
    logits = torch.nn.functional.avg_pool3d(torch.randn(1, 3, 9, 8, 7, generator=gen), 3, 1, 1)[0] * 9
    labels = logits.argmax(0).to(torch.uint8)
    to_net = np.zeros((4, 4))
    to_net[0, 2], to_net[1, 0], to_net[2, 1], to_net[3, 3] = -0.6, 0.45, 0.8, 1.0  # permuted, flipped, scaled
    to_net[:3, 3] = [6.2, -0.3, 0.4]
    size = (21, 11, 13)
    fast = (resample_nearest(labels, to_net, size), resample_argmax(logits, labels, to_net, size))
    monkeypatch.setattr(resampling._AxisMap, "of", classmethod(lambda cls, m: None))
    slow = (resample_nearest(labels, to_net, size), resample_argmax(logits, labels, to_net, size))
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert fast[0].any() and (fast[0] != fast[1]).any()


def test_largest_component_keeps_one_piece_per_label():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[15:17, 15:17, 15:17] = 1  # small stray piece
    lab[10:12, 2:5, 2:5] = 2
    out = keep_largest_components(lab)
    assert out[3, 3, 3] == 1 and out[16, 16, 16] == 0
    assert np.sum(out == 2) == np.sum(lab == 2)


def test_bad_images_give_clear_errors():
    from lwi.errors import LWIError

    seg = Segmenter.from_model(ThresholdNet(), _metadata(), device="cpu")
    with pytest.raises(LWIError, match="3D"):
        seg.segment(sitk.Image([10, 10], sitk.sitkFloat32))
    two_channel = sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 2)
    with pytest.raises(LWIError, match="channel"):
        seg.segment(two_channel)


def test_out_of_memory_retries_with_smaller_batches_then_on_the_cpu(monkeypatch):
    """The CUDA fallback plan, driven by simulated out-of-memory errors (no GPU needed)."""
    seg = Segmenter.from_model(ThresholdNet(), _metadata(), device="cpu", sw_batch_size=4)
    seg.device = torch.device("cuda")  # as if loaded on a GPU
    calls, messages = [], []

    def fake_once(image, device, batch, stitch, largest_component, probabilities, name="", uncertainty=False):
        calls.append((device.type, batch, stitch.type))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "segmented"

    monkeypatch.setattr(seg, "_segment_once", fake_once)
    monkeypatch.setattr(seg.progress, "log", messages.append)
    image, _ = _oblique_image()
    assert seg.segment(image) == "segmented"
    assert calls == [("cuda", 4, "cuda"), ("cuda", 2, "cuda"), ("cuda", 1, "cuda"), ("cuda", 1, "cpu"), ("cpu", 4, "cpu")]
    assert len(messages) == 4 and "on the CPU" in messages[-1]

    def other_error(*args):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(seg, "_segment_once", other_error)
    with pytest.raises(RuntimeError, match="cuDNN"):  # only memory errors are retried
        seg.segment(image)


def test_mirroring_averages_the_eight_flips():
    """--mirror: each window's logits are the mean over the 8 flips of its axes, flipped back; a
    flip-invariant network (1x1 conv) is unchanged, an asymmetric one is symmetrised."""
    from lwi.inference import MIRRORS, mirrored

    assert len(MIRRORS) == 8 and len(set(MIRRORS)) == 8
    x = torch.randn(2, 1, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    pointwise = ThresholdNet()
    with torch.no_grad():
        assert torch.allclose(mirrored(pointwise, x), pointwise(x), atol=1e-5)
        shifted = torch.nn.Conv3d(1, 3, 3, padding=1)
        by_hand = sum(torch.flip(shifted(torch.flip(x, a)), a) if a else shifted(x) for a in MIRRORS) / 8
        assert torch.allclose(mirrored(shifted, x), by_hand, atol=1e-5)
        assert not torch.allclose(mirrored(shifted, x), shifted(x), atol=1e-3)
        # The mean of mirrored outputs is itself mirror-symmetric.
        assert torch.allclose(mirrored(shifted, torch.flip(x, (2,))), torch.flip(mirrored(shifted, x), (2,)), atol=1e-5)


def test_segmenter_with_mirroring_on_a_flip_invariant_network_gives_the_same_labels():
    image = _oblique_image()[0]
    plain = Segmenter.from_model(ThresholdNet(), _metadata(), device="cpu").segment(image)
    mirror = Segmenter.from_model(ThresholdNet(), _metadata(), device="cpu", mirror=True).segment(image)
    assert np.array_equal(sitk.GetArrayFromImage(plain.label), sitk.GetArrayFromImage(mirror.label))
