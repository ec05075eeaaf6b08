"""Training cases for the LWITraining module (LWICommon/cases.py): collection, label matching by
name, and the export to a training folder the core reads, against real image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import cases  # noqa: E402

SHAPE_ZYX = (6, 10, 12)


def _write_case(folder: Path, name: str, boxes, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), label_size=None):
    """An image and a label map; ``boxes`` maps a label value to the z slice it fills (None: no voxels)."""
    rng = np.random.default_rng(len(name))
    image = sitk.GetImageFromArray(rng.normal(size=SHAPE_ZYX).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    label_array = np.zeros(label_size or SHAPE_ZYX, dtype=np.uint8)
    for value, z in boxes.items():
        if z is not None:
            label_array[z, 2:6, 3:8] = value
    label = sitk.GetImageFromArray(label_array)
    label.SetSpacing(spacing)
    label.SetOrigin(origin)
    image_path, label_path = folder / f"{name}.nrrd", folder / f"{name}-label.nrrd"
    sitk.WriteImage(image, str(image_path))
    sitk.WriteImage(label, str(label_path))
    return str(image_path), str(label_path)


def _source(tmp_path, name, segments, boxes, **kwargs):
    image, label = _write_case(tmp_path, name, boxes, **kwargs)
    return cases.CaseSource(name, image, label, segments)


def test_names_match_whatever_the_spelling():
    assert cases.normalize_name(" Left_Kidney ") == cases.normalize_name("left-kidney") == "left kidney"
    assert cases.normalize_name("liver") != cases.normalize_name("liver 2")


def test_same_name_with_different_values_is_one_label(tmp_path):
    a = _source(tmp_path, "a", {1: "Liver", 2: "spleen"}, {1: 1, 2: 3})
    b = _source(tmp_path, "b", {1: "spleen", 3: "liver"}, {1: 2, 3: 4})
    ts = cases.match_cases([a, b])
    assert ts.labels == {1: "Liver", 2: "spleen"}
    assert [r.included for r in ts.rows] == [True, True]
    assert ts.rows[1].remap == {3: 1, 1: 2}

    result = cases.export_cases(ts, str(tmp_path / "train"), modality="CT")
    assert result.written == ["a", "b"]
    b_label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "train" / "labelsTr" / "b.nrrd")))
    assert set(np.unique(b_label[4])) == {0, 1}  # b's liver (value 3) is now 1
    assert set(np.unique(b_label[2])) == {0, 2}  # b's spleen (value 1) is now 2

    # The core reads the folder as it is.
    from lwi.data.dataset import load_dataset

    dataset = load_dataset(tmp_path / "train")
    assert dataset.labels == {0: "background", 1: "Liver", 2: "spleen"}
    assert [c.name for c in dataset.cases] == ["a", "b"] and dataset.modality == "CT"
    copied = sitk.ReadImage(str(dataset.cases[1].image))
    original = sitk.ReadImage(b.image)
    assert np.array_equal(sitk.GetArrayFromImage(copied), sitk.GetArrayFromImage(original))
    assert copied.GetSpacing() == original.GetSpacing()


def test_a_case_missing_a_segment_is_excluded_with_the_reason(tmp_path):
    a = _source(tmp_path, "a", {1: "liver", 2: "spleen"}, {1: 1, 2: 3})
    b = _source(tmp_path, "b", {1: "liver", 2: "spleen"}, {1: 1, 2: 3})
    c = _source(tmp_path, "c", {1: "liver"}, {1: 1})
    ts = cases.match_cases([a, b, c])
    assert ts.labels == {1: "liver", 2: "spleen"}
    assert [r.name for r in ts.included] == ["a", "b"]
    assert ts.rows[2].problems == ["no segment 'spleen'"]
    assert ts.table()[2] == ("c", "scene", "liver", "Excluded: no segment 'spleen'")

    result = cases.export_cases(ts, str(tmp_path / "train"))
    assert result.written == ["a", "b"] and [r.name for r in result.skipped] == ["c"]
    assert len(json.loads((tmp_path / "train" / "dataset.json").read_text(encoding="utf-8"))["training"]) == 2


def test_an_empty_segment_excludes_its_case(tmp_path):
    a = _source(tmp_path, "a", {1: "liver", 2: "spleen"}, {1: 1, 2: 3})
    b = _source(tmp_path, "b", {1: "liver", 2: "spleen"}, {1: 1, 2: None})
    ts = cases.match_cases([a, b])
    assert ts.rows[1].problems == ["segment 'spleen' is empty"] and not ts.rows[1].included
    assert b.empty == ["spleen"]


def test_an_extra_segment_is_noted_not_trained(tmp_path):
    a = _source(tmp_path, "a", {1: "liver", 2: "tumour"}, {1: 1, 2: 3})
    b = _source(tmp_path, "b", {1: "liver"}, {1: 1})
    ts = cases.match_cases([a, b])
    assert ts.labels == {1: "liver"}
    assert all(r.included for r in ts.rows)
    assert "tumour" in ts.rows[0].status() and ts.rows[0].remap == {1: 1}
    cases.export_cases(ts, str(tmp_path / "train"))
    a_label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "train" / "labelsTr" / "a.nrrd")))
    assert set(np.unique(a_label)) == {0, 1}  # the tumour counts as background

    # Asking for the labels explicitly excludes the case that lacks one.
    ts = cases.match_cases([a, b], labels=["Liver", "tumour"])
    assert ts.labels == {1: "Liver", 2: "tumour"} and ts.rows[1].problems == ["no segment 'tumour'"]


def test_file_problems_are_reported(tmp_path):
    other_grid = _source(tmp_path, "shifted", {1: "liver"}, {1: 1}, label_size=(6, 10, 11))
    duplicate = _source(tmp_path, "dup", {1: "liver", 2: "Liver"}, {1: 1, 2: 2})
    unnamed = _source(tmp_path, "unnamed", {1: "liver"}, {1: 1, 2: 3})
    missing = cases.CaseSource("gone", str(tmp_path / "nothing.nrrd"), None, {1: "liver"})
    ts = cases.match_cases([other_grid, duplicate, unnamed, missing], labels=["liver"])
    problems = {r.name: "; ".join(r.problems) for r in ts.rows}
    assert "size" in problems["shifted"]
    assert "2 segments are named" in problems["dup"]
    assert "[2]" in problems["unnamed"]
    assert "does not exist" in problems["gone"]
    assert ts.included == []


def test_export_adds_to_an_existing_folder_by_name(tmp_path):
    folder = str(tmp_path / "train")
    first = cases.match_cases([_source(tmp_path, "p", {1: "liver", 2: "spleen"}, {1: 1, 2: 3})])
    cases.export_cases(first, folder)
    second = cases.match_cases([_source(tmp_path, "p", {4: "kidney", 7: "spleen"}, {4: 1, 7: 2})])
    result = cases.export_cases(second, folder)
    assert result.written == ["p_2"]
    assert result.labels == {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "train" / "labelsTr" / "p_2.nrrd")))
    assert set(np.unique(label[1])) == {0, 3} and set(np.unique(label[2])) == {0, 2}
    labels, entries, _ = cases.read_training_folder(folder)
    assert len(entries) == 2 and labels[3] == "kidney"


def test_export_can_reference_images_instead_of_copying(tmp_path):
    a = _source(tmp_path, "a", {1: "liver"}, {1: 1})
    cases.export_cases(cases.match_cases([a]), str(tmp_path / "run"), copy_images=False)
    entry = json.loads((tmp_path / "run" / "dataset.json").read_text(encoding="utf-8"))["training"][0]
    assert entry["image"] == str(Path(a.image).resolve())
    assert not any((tmp_path / "run" / "imagesTr").iterdir())
    from lwi.data.dataset import load_dataset

    assert load_dataset(tmp_path / "run").cases[0].image == Path(a.image).resolve()


def test_folder_cases_keep_good_cases_and_explain_bad_ones(tmp_path):
    from lwi.data.phantoms import write_phantom_dataset

    folder = write_phantom_dataset(tmp_path / "ds", 3, shape=(24, 24, 16))
    ok = cases.folder_cases(str(folder))
    assert [c.origin for c in ok] == ["folder"] * 3 and all(not c.problems for c in ok)
    assert ok[0].segments == {1: "liver", 2: "spleen", 3: "kidney", 4: "vertebra"}
    assert {c.modality for c in ok} == {"CT"}  # its dataset.json's: Train and the plan keep it

    # Break one label map: it no longer matches its image's grid.
    bad = Path(ok[1].label)
    small = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    sitk.WriteImage(small, str(bad))
    collected = cases.folder_cases(str(folder))
    assert [bool(c.problems) for c in collected] == [False, True, False]
    assert {c.modality for c in collected} == {"CT"}
    assert "size" in collected[1].problems[0]
    ts = cases.match_cases(collected)
    assert len(ts.included) == 2 and ts.labels == {1: "liver", 2: "spleen", 3: "kidney", 4: "vertebra"}

    with pytest.raises(ValueError):
        cases.folder_cases(str(tmp_path / "nowhere"))


def _with_validation(folder: Path, listed) -> Path:
    """Add a ``validation`` list (case names or image paths, as the core accepts) to a folder's dataset.json."""
    path = folder / "dataset.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["validation"] = list(listed)
    path.write_text(json.dumps(meta))
    return folder


def _held_out(folder) -> set:
    """The cases ``lwi train --data folder`` holds out for validation: the core's own split."""
    from lwi.data.dataset import load_dataset
    from lwi.data.split import split_cases

    return {c.name for c in split_cases(load_dataset(folder), seed=0, val_fraction=0.2)[1]}


def _phantom_source(tmp_path, name: str) -> cases.CaseSource:
    """A scene-like case with the phantoms' four segments."""
    return _source(tmp_path, name, {1: "liver", 2: "spleen", 3: "kidney", 4: "vertebra"}, {1: 0, 2: 1, 3: 2, 4: 3})


def test_a_folders_validation_list_stays_when_cases_are_mixed_or_excluded(tmp_path):
    """The export keeps the validation cases a folder lists that are still exported; every other case
    (scene cases, other folders' cases) is a training case. Two folders with the same case names
    export as distinct cases (they were "listed twice" for the core before)."""
    from lwi.data.phantoms import write_phantom_dataset

    listed = _with_validation(write_phantom_dataset(tmp_path / "a", 4, shape=(16, 16, 16)), ["phantom_001", "./imagesTr/phantom_002.nii.gz"])
    other = write_phantom_dataset(tmp_path / "b", 2, seed=7, shape=(16, 16, 16))  # no list, the same case names
    collected = cases.folder_cases(str(listed))
    assert [c.validation for c in collected] == [False, True, True, False]
    ts = cases.match_cases(collected)
    assert "validation" in ts.rows[1].status() and "validation" not in ts.rows[0].status()

    # Every case of the folder exported: the core holds out exactly the listed cases.
    assert _held_out(listed) == {"phantom_001", "phantom_002"}
    cases.export_cases(ts, str(tmp_path / "all"), copy_images=False)
    assert _held_out(tmp_path / "all") == {"phantom_001", "phantom_002"}

    # One listed case excluded (its label map broken), a scene case and another folder's cases added:
    # the listed case still there stays a validation case, everything else is trained on.
    sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkUInt8), str(collected[2].label))
    mixed = cases.folder_cases(str(listed)) + cases.folder_cases(str(other)) + [_phantom_source(tmp_path, "scene")]
    ts = cases.match_cases(mixed)
    assert [r.name for r in ts.excluded] == ["phantom_002"] and len(ts.included) == 6
    result = cases.export_cases(ts, str(tmp_path / "mixed"), copy_images=False)
    assert len(result.written) == len(set(n.lower() for n in result.written)) == 6
    from lwi.data.dataset import load_dataset

    exported = load_dataset(tmp_path / "mixed")
    assert len(exported.cases) == 6 and _held_out(tmp_path / "mixed") == {"phantom_001"}
    held = next(c for c in exported.cases if c.name == "phantom_001")
    assert held.image == (listed / "imagesTr" / "phantom_001.nii.gz").resolve()  # folder A's, not B's


    # Two scene cases of one name (staged as 000-CT.nrrd and 001-CT.nrrd, referenced as Show plan does):
    # each keeps its own label map.
    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    first, second = _phantom_source(tmp_path / "s0", "CT"), _phantom_source(tmp_path / "s1", "CT")
    first.image = str(Path(first.image).rename(tmp_path / "s0" / "000-CT.nrrd"))
    second.image = str(Path(second.image).rename(tmp_path / "s1" / "001-CT.nrrd"))
    cases.export_cases(cases.match_cases([first, second]), str(tmp_path / "scene"), copy_images=False)
    pairs = [(c.image, c.label) for c in load_dataset(tmp_path / "scene").cases]
    assert [i.name for i, _ in pairs] == ["000-CT.nrrd", "001-CT.nrrd"] and pairs[0][1] != pairs[1][1]


@pytest.mark.slow
def test_train_and_show_plan_hold_out_the_folders_validation_cases_as_lwi_train_does(slicer_app, tmp_path, monkeypatch):
    """The panel's Train and Show plan export a folder with a validation list so that the run holds out
    those cases, as ``lwi train --data`` on the folder does (not a random 20%)."""
    from LWITrainingLib.training_logic import TrainingLogic
    from LWITrainingLib.training_settings import TrainingSettings

    from lwi.data.phantoms import write_phantom_dataset

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    folder = _with_validation(write_phantom_dataset(tmp_path / "ds", 5, shape=(16, 16, 16)), ["phantom_000", "phantom_003"])
    logic = TrainingLogic()
    ts = logic.addCases(logic.collectCasesFromFolder(str(folder)))
    settings = TrainingSettings(device="cpu")
    logic.train(ts, "m", settings=settings, modelsFolder=str(tmp_path / "models"), start=False)
    assert _held_out(Path(logic.runFolder("m", str(tmp_path / "models"))) / "data") == {"phantom_000", "phantom_003"}

    event = logic.plan(ts, settings, wait=True, probe=False)  # lwi plan, a real subprocess
    assert event["cases"] == {"train": 3, "validation": 2}
