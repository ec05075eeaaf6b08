"""Dataset folders (lwi.data.dataset): both layouts, both label styles, every problem kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.dataset import list_images, load_dataset
from lwi.errors import DatasetError, LWIError

SIZE = (8, 9, 10)  # x, y, z


def volume(values: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def image_array(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, size=SIZE).astype(np.float32)


def label_array(values=(1, 2)) -> np.ndarray:
    lab = np.zeros(SIZE, dtype=np.uint8)
    for i, v in enumerate(values):
        lab[1 + 3 * i : 3 + 3 * i, 2:5, 3:6] = v
    return lab


def write_msd(root: Path, n: int = 3, labels=None, modality="CT", **extra) -> Path:
    """A small MSD-layout dataset; returns its folder."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        name = f"case_{i}.nii.gz"
        sitk.WriteImage(volume(image_array(i)), str(root / "imagesTr" / name))
        sitk.WriteImage(volume(label_array()), str(root / "labelsTr" / name))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "tiny",
        "modality": {"0": modality},
        "labels": labels if labels is not None else {"0": "background", "1": "liver", "2": "spleen"},
        "training": training,
        **extra,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def replace_label(root: Path, case: int, img: sitk.Image) -> None:
    sitk.WriteImage(img, str(root / "labelsTr" / f"case_{case}.nii.gz"))


def problems_of(root: Path, **kwargs) -> list:
    with pytest.raises(DatasetError) as info:
        load_dataset(root, **kwargs)
    return info.value.problems


# -- accepted layouts ---------------------------------------------------------------------------


def test_msd_layout_with_numeric_label_keys(tmp_path):
    ds = load_dataset(write_msd(tmp_path / "d"))
    assert [c.name for c in ds.cases] == ["case_0", "case_1", "case_2"]
    assert ds.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert ds.modality == "CT"
    assert ds.validation is None
    assert all(c.image.is_file() and c.label.is_file() for c in ds.cases)


def test_msd_layout_with_name_keys_gives_the_same_labels(tmp_path):
    ds = load_dataset(write_msd(tmp_path / "d", labels={"background": 0, "spleen": 2, "liver": 1}))
    assert ds.labels == {0: "background", 1: "liver", 2: "spleen"}


def test_mr_modality_and_validation_list_by_name_and_by_path(tmp_path):
    root = write_msd(tmp_path / "d", modality="T2", validation=["case_1", "./imagesTr/case_2.nii.gz"])
    ds = load_dataset(root)
    assert ds.modality == "MR"
    assert ds.validation == ["case_1", "case_2"]
    train, val = ds.split()
    assert [c.name for c in train] == ["case_0"] and [c.name for c in val] == ["case_1", "case_2"]


def test_unknown_validation_case_is_a_problem(tmp_path):
    root = write_msd(tmp_path / "d", validation=["nope"])
    assert any("nope" in p for p in problems_of(root))


def test_bare_layout_with_nnunet_channel_suffix(tmp_path):
    root = tmp_path / "bare"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, values in enumerate([(1, 2), (1, 5)]):
        sitk.WriteImage(volume(image_array(i)), str(root / "imagesTr" / f"pt{i}_0000.nrrd"))
        sitk.WriteImage(volume(label_array(values)), str(root / "labelsTr" / f"pt{i}.nii.gz"))
    ds = load_dataset(root)
    assert [c.name for c in ds.cases] == ["pt0", "pt1"]
    assert ds.cases[0].image.name == "pt0_0000.nrrd" and ds.cases[0].label.name == "pt0.nii.gz"
    # Without dataset.json the labels are the values found, named by value.
    assert ds.labels == {0: "background", 1: "label_1", 2: "label_2", 5: "label_5"}
    assert ds.modality == "MR"


def test_bare_layout_image_without_label_and_label_without_image(tmp_path):
    root = tmp_path / "bare"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    sitk.WriteImage(volume(image_array(0)), str(root / "imagesTr" / "a_0000.nii.gz"))
    sitk.WriteImage(volume(label_array()), str(root / "labelsTr" / "b.nii.gz"))
    problems = problems_of(root)
    assert len(problems) == 2
    assert any(p.startswith("a:") and "no label" in p for p in problems)
    assert any(p.startswith("b:") and "no image" in p for p in problems)


def test_images_only_when_labels_are_not_required(tmp_path):
    root = tmp_path / "unlabelled"
    (root / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(volume(image_array(0)), str(root / "imagesTr" / "x.nii.gz"))
    ds = load_dataset(root, require_labels=False)
    assert [(c.name, c.label) for c in ds.cases] == [("x", None)]
    with pytest.raises(LWIError, match="labelsTr"):
        load_dataset(root)


def test_list_images(tmp_path):
    for name in ("b.nii.gz", "a.mha"):
        sitk.WriteImage(volume(image_array(0)), str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.mha", "b.nii.gz"]


def test_missing_folder_and_region_labels(tmp_path):
    with pytest.raises(LWIError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    root = write_msd(tmp_path / "d", labels={"background": 0, "whole": [1, 2]})
    with pytest.raises(LWIError, match="region-based"):
        load_dataset(root)


# -- one test per problem kind ------------------------------------------------------------------


@pytest.mark.parametrize(
    "geometry, expected",
    [
        (dict(spacing=(1.0, 1.0, 2.5)), "spacing"),
        (dict(origin=(0.0, 5.0, 0.0)), "origin"),
        (dict(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)), "direction"),
    ],
)
def test_geometry_mismatch(tmp_path, geometry, expected):
    root = write_msd(tmp_path / "d")
    replace_label(root, 1, volume(label_array(), **geometry))
    problems = problems_of(root)
    assert len(problems) == 1 and problems[0].startswith("case_1:") and expected in problems[0]


def test_size_mismatch(tmp_path):
    root = write_msd(tmp_path / "d")
    replace_label(root, 0, volume(label_array()[:-1]))
    (problem,) = problems_of(root)
    assert problem.startswith("case_0:") and "size" in problem


def test_tiny_geometry_differences_are_tolerated(tmp_path):
    root = write_msd(tmp_path / "d")
    replace_label(root, 0, volume(label_array(), spacing=(1.0 + 1e-6, 1.0, 2.0), origin=(1e-6, 0.0, 0.0)))
    assert len(load_dataset(root)) == 3


def test_non_integer_labels(tmp_path):
    root = write_msd(tmp_path / "d")
    lab = label_array().astype(np.float32)
    lab[0, 0, 0] = 0.5
    replace_label(root, 2, volume(lab))
    (problem,) = problems_of(root)
    assert problem.startswith("case_2:") and "non-integer" in problem


def test_integer_valued_float_labels_are_fine(tmp_path):
    root = write_msd(tmp_path / "d")
    replace_label(root, 2, volume(label_array().astype(np.float32)))
    assert len(load_dataset(root)) == 3


def test_undeclared_label(tmp_path):
    root = write_msd(tmp_path / "d")
    replace_label(root, 1, volume(label_array((1, 7))))
    (problem,) = problems_of(root)
    assert problem.startswith("case_1:") and "[7]" in problem and "not declared" in problem


def test_empty_label(tmp_path):
    root = write_msd(tmp_path / "d")
    replace_label(root, 0, volume(np.zeros(SIZE, dtype=np.uint8)))
    (problem,) = problems_of(root)
    assert problem.startswith("case_0:") and "empty" in problem


def test_2d_image(tmp_path):
    root = write_msd(tmp_path / "d")
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkFloat32), str(root / "imagesTr" / "case_1.nii.gz"))
    (problem,) = problems_of(root)
    assert problem.startswith("case_1:") and "2D" in problem


def test_4d_image(tmp_path):
    root = write_msd(tmp_path / "d")
    sitk.WriteImage(sitk.Image([8, 9, 10, 2], sitk.sitkFloat32), str(root / "imagesTr" / "case_1.nii.gz"))
    (problem,) = problems_of(root)
    assert problem.startswith("case_1:") and "4D" in problem


def test_missing_file(tmp_path):
    root = write_msd(tmp_path / "d")
    (root / "labelsTr" / "case_2.nii.gz").unlink()
    (problem,) = problems_of(root)
    assert problem.startswith("case_2:") and "does not exist" in problem


def test_unreadable_file(tmp_path):
    root = write_msd(tmp_path / "d")
    (root / "imagesTr" / "case_0.nii.gz").write_bytes(b"\x00garbage" * 50)
    (problem,) = problems_of(root)
    assert problem.startswith("case_0:") and "could not be read" in problem


def test_all_problems_are_reported_at_once_one_line_per_case(tmp_path):
    root = write_msd(tmp_path / "d", n=4)
    replace_label(root, 0, volume(np.zeros(SIZE, dtype=np.uint8)))  # empty
    replace_label(root, 1, volume(label_array((1, 9)), spacing=(2.0, 1.0, 2.0)))  # two problems
    (root / "imagesTr" / "case_3.nii.gz").unlink()  # missing
    with pytest.raises(DatasetError) as info:
        load_dataset(root)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["case_0", "case_1", "case_3"]
    assert "spacing" in problems[1] and "[9]" in problems[1]
    message = str(info.value)
    assert all(p in message for p in problems) and "case_2" not in message
