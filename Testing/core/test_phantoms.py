"""Synthetic abdominal CT phantoms (lwi.data.phantoms)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from lwi.data.dataset import load_dataset
from lwi.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset


def arrays(seed, **kwargs):
    image, label = make_phantom(seed, **kwargs)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)


def test_every_label_is_present_with_several_voxels():
    for seed in range(3):
        _, label = arrays(seed)
        counts = {v: int((label == v).sum()) for v in PHANTOM_LABELS}
        assert all(n >= 100 for n in counts.values()), counts
        assert set(np.unique(label)) == set(PHANTOM_LABELS)


def test_small_phantoms_still_hold_every_label():
    _, label = arrays(0, shape=(32, 32, 24))
    assert set(np.unique(label)) == set(PHANTOM_LABELS)


def test_hu_ranges_are_ct_like():
    image, label = arrays(1)
    assert image.dtype == np.int16
    median = {v: float(np.median(image[label == v])) for v in PHANTOM_LABELS if v}
    assert -1024 <= image.min() and image.max() <= 3071
    assert float(np.median(image[:, :2, :])) < -900  # air at the edge of the field of view
    assert 40 <= median[1] <= 80  # liver
    assert 80 <= median[2] <= 140  # spleen
    assert 130 <= median[3] <= 220  # kidney
    assert median[4] >= 400  # bone
    # Distinct organs: a tiny network can separate them by intensity.
    assert median[1] < median[2] < median[3] < median[4]


def test_geometry_is_plausible_lps():
    image, label = make_phantom(2, shape=(40, 36, 20), spacing=(2.0, 2.5, 5.0))
    assert image.GetSize() == (40, 36, 20)
    assert image.GetSpacing() == (2.0, 2.5, 5.0)
    assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    assert label.GetSize() == image.GetSize() and label.GetOrigin() == image.GetOrigin()
    # The body is centred on x = y = 0.
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    assert abs(centre[0]) < 1e-6 and abs(centre[1]) < 1e-6


def test_liver_is_on_the_patients_right_and_spleen_on_the_left():
    _, label = arrays(4)  # array [z, y, x]; LPS x grows toward the patient's left
    x = np.arange(label.shape[2])
    liver_x = x[np.nonzero(label == 1)[2]].mean()
    spleen_x = x[np.nonzero(label == 2)[2]].mean()
    assert liver_x < label.shape[2] / 2 < spleen_x


def test_seeds_vary_shapes_and_the_same_seed_repeats():
    a_img, a_lab = arrays(10)
    b_img, b_lab = arrays(10)
    c_img, c_lab = arrays(11)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)
    for v in (1, 2, 3):
        overlap = np.logical_and(a_lab == v, c_lab == v).sum() / np.logical_or(a_lab == v, c_lab == v).sum()
        assert overlap < 0.95  # organs move and change shape...
        assert overlap > 0.1  # ...but stay where anatomy puts them


def test_written_dataset_is_a_valid_msd_folder(tmp_path):
    root = write_phantom_dataset(tmp_path / "phantoms", 2, seed=3, shape=(24, 24, 16))
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert meta["modality"] == {"0": "CT"} and meta["numTraining"] == 2
    ds = load_dataset(root)
    assert ds.modality == "CT" and ds.labels == PHANTOM_LABELS
    assert [c.name for c in ds.cases] == ["phantom_000", "phantom_001"]
    # Case i is make_phantom(seed + i).
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(ds.cases[1].label)))
    np.testing.assert_array_equal(written, arrays(4, shape=(24, 24, 16))[1])
