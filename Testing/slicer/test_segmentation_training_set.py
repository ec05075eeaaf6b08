"""LWISegmentation's "Add to training set" (LWISegmentationLib.training_set): segments mapped by name to the
model's label values, cases appended to a training folder the core reads; real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.dataset import load_dataset

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import files  # noqa: E402
from LWISegmentationLib import training_set  # noqa: E402

MODEL = {1: "liver", 2: "spleen", 5: "left kidney"}  # values need not be consecutive


def _case(folder: Path, name: str, boxes, spacing=(1.5, 1.5, 3.0), label_shape=None):
    """An image and a label map (value -> z range of a box) on an oblique grid, as Slicer writes them."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(size=(8, 12, 10)).astype(np.float32))
    label_array = np.zeros(label_shape or (8, 12, 10), dtype=np.uint8)
    for value, (z0, z1) in boxes.items():
        label_array[z0:z1, 2:9, 3:7] = value
    label = sitk.GetImageFromArray(label_array)
    for img in (image, label):
        img.SetSpacing(spacing)
        img.SetOrigin((5.0, -3.0, 20.0))
        img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    image_path, label_path = folder / f"{name}.nrrd", folder / f"{name}-seg.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(label, str(label_path))
    return str(image_path), str(label_path), label_array


def test_segments_map_to_model_values_by_name():
    mapping = training_set.map_segments_to_model({1: "Spleen", 2: " LIVER", 3: "tumour", 4: "left_kidney"}, MODEL)
    assert mapping.remap == {1: 2, 2: 1, 4: 5}
    assert mapping.unmatched == ["tumour"] and mapping.missing == []
    mapping = training_set.map_segments_to_model({1: "liver"}, MODEL)
    assert mapping.missing == ["spleen", "left kidney"]
    with pytest.raises(ValueError, match="Two segments"):
        training_set.map_segments_to_model({1: "Liver", 2: "liver"}, MODEL)
    assert training_set.model_labels([{"value": 1, "name": "liver"}, {"value": 4, "name": "aorta"}]) == {
        1: "liver",
        4: "aorta",
    }
    assert training_set.segment_names_in_order(["b", "a"]) == {1: "b", 2: "a"}


def test_a_corrected_case_lands_in_the_training_folder_with_model_values(tmp_path):
    folder = tmp_path / "training"
    image, label, array = _case(tmp_path, "ct1", {1: (1, 3), 2: (3, 5), 3: (5, 7)})
    added = training_set.add_to_training_set(
        str(folder), "CT 1", image, label, {1: "Spleen", 2: "tumour", 3: "Liver"}, MODEL, modality="CT"
    )
    assert added.case == "CT_1" and added.cases_in_folder == 1
    assert added.labels == {0: "background", 1: "liver", 2: "spleen", 5: "left kidney"}
    assert "tumour" in added.message() and "left kidney" in added.message()

    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "spleen", "5": "left kidney"}
    written = sitk.ReadImage(str(folder / "labelsTr" / "CT_1.nrrd"))
    expected = np.select([array == 1, array == 3], [2, 1], 0)  # spleen -> 2, liver -> 1, tumour -> background
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
    source = sitk.ReadImage(image)
    copied = sitk.ReadImage(str(folder / "imagesTr" / "CT_1.nrrd"))
    for img in (written, copied):
        assert img.GetSize() == source.GetSize()
        np.testing.assert_allclose(img.GetDirection(), source.GetDirection())
        np.testing.assert_allclose(img.GetOrigin(), source.GetOrigin())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(copied), sitk.GetArrayFromImage(source))

    # A second correction of a case with the same name is kept next to the first.
    image2, label2, _ = _case(tmp_path, "ct1b", {1: (0, 4)})
    again = training_set.add_to_training_set(str(folder), "CT 1", image2, label2, {1: "left-kidney"}, MODEL)
    assert again.case == "CT_1_2" and again.cases_in_folder == 2
    assert training_set.folder_summary(str(folder)) == (2, {1: "liver", 2: "spleen", 5: "left kidney"})
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "CT_1_2.nrrd"))))) == {0, 5}

    # The folder is a dataset the core (and so LWITraining) reads as it is.
    dataset = load_dataset(folder)
    assert [c.name for c in dataset.cases] == ["CT_1", "CT_1_2"]
    assert dataset.labels == {0: "background", 1: "liver", 2: "spleen", 5: "left kidney"}


def test_a_folder_that_numbers_structures_differently_keeps_its_numbers(tmp_path):
    folder = tmp_path / "existing"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "spleen", "2": "liver"}, "training": []}))
    image, label, array = _case(tmp_path, "c", {1: (1, 3), 2: (3, 5)})
    added = training_set.add_to_training_set(str(folder), "c", image, label, {1: "liver", 2: "spleen"}, MODEL)
    assert added.labels == {0: "background", 1: "spleen", 2: "liver", 3: "left kidney"}  # new names appended
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "c.nrrd")))
    np.testing.assert_array_equal(written, np.select([array == 1, array == 2], [2, 1], 0))


def test_unusable_cases_are_refused_with_a_sentence(tmp_path):
    folder = tmp_path / "t"
    image, label, _ = _case(tmp_path, "x", {1: (1, 3)})
    with pytest.raises(ValueError, match="No segment is named like a label of the model"):
        training_set.add_to_training_set(str(folder), "x", image, label, {1: "tumour"}, MODEL)
    _, other_grid, _ = _case(tmp_path, "y", {1: (1, 3)}, label_shape=(8, 12, 9))
    with pytest.raises(ValueError, match="cannot be added: label map size"):
        training_set.add_to_training_set(str(folder), "x", image, other_grid, {1: "liver"}, MODEL)
    with pytest.raises(ValueError, match="lists no labels"):
        training_set.add_to_training_set(str(folder), "x", image, label, {1: "liver"}, {})
    assert not (folder / "dataset.json").exists()


def test_default_training_folder_is_under_the_users_lwi_folder(tmp_path):
    assert files.default_training_folder(str(tmp_path)) == str(tmp_path / "LWI" / "training-cases")
    assert training_set.folder_summary(str(tmp_path / "nothing")) == (0, {})
