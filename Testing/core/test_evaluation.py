"""Evaluation: Dice and HD95 agree with hand computations; ``lwi evaluate`` writes its table and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.evaluation import evaluate_pair, format_table, subset_means, summarize


def _image(array_xyz: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)).astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((5.0, -3.0, 10.0))
    return image


def test_dice_and_hd95_equal_hand_computation():
    truth = np.zeros((12, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[2:6, 2:6, 2:6] = 1  # a 4^3 cube
    pred[3:7, 2:6, 2:6] = 1  # the same cube one voxel further along x: overlap 3 x 4 x 4
    truth[9, 5, 5] = 2  # single voxels 2 voxels apart along x (x spacing 2 mm -> 4 mm)
    pred[11, 5, 5] = 2
    pred[9, 8, 5] = 3  # label 3 only in the prediction
    labels = {0: "background", 1: "cube", 2: "dot", 3: "false", 4: "absent"}
    scores = evaluate_pair(_image(pred), _image(truth), labels)
    assert scores["dice"]["cube"] == pytest.approx(2 * 48 / (64 + 64))
    assert scores["dice"]["dot"] == 0.0
    assert scores["hd95"]["dot"] == pytest.approx(4.0)  # (11 - 9) voxels x 2 mm
    # Label 3 only in the prediction: HD95 is the image's diagonal (12x2, 10, 10 mm), listed as penalised.
    diagonal = (24.0**2 + 10.0**2 + 10.0**2) ** 0.5
    assert scores["dice"]["false"] == 0.0 and scores["hd95"]["false"] == pytest.approx(diagonal)
    assert scores["hd95_penalty"] == pytest.approx(diagonal) and scores["hd95_penalized"] == ["false"]
    assert scores["dice"]["absent"] is None and scores["hd95"]["absent"] is None
    # Every surface point of the shifted cube is 0 or 1 voxel (2 mm along x) from the other surface.
    assert scores["hd95"]["cube"] == pytest.approx(2.0)


def test_summary_means_skip_undefined_values_and_table_lists_them():
    labels = {1: "liver", 2: "kidney"}
    cases = [
        {"case": "a", "dice": {"liver": 0.8, "kidney": None}, "hd95": {"liver": 3.0, "kidney": None}},
        {"case": "b", "dice": {"liver": 0.6, "kidney": 0.5}, "hd95": {"liver": 5.0, "kidney": 7.0}},
    ]
    results = summarize(cases, labels)
    assert results["mean"]["dice"] == {"liver": pytest.approx(0.7), "kidney": pytest.approx(0.5)}
    assert results["mean"]["hd95"]["kidney"] == pytest.approx(7.0)
    assert results["mean_dice"] == pytest.approx(0.6)
    table = format_table(results)
    assert "n/a" in table and "0.7000" in table and "kidney" in table


def test_a_missed_label_worsens_the_mean_hd95():
    """A prediction that misses a structure must not get a better mean HD95 than one that finds it
    roughly (before: the miss was dropped from the mean, so missing scored best)."""
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    truth[12:16, 12:16, 12:16] = 2
    rough = truth.copy()
    rough[12:16, 12:16, 12:16] = 0
    rough[13:17, 12:16, 12:16] = 2  # label 2 found, shifted one voxel
    missed = truth.copy()
    missed[truth == 2] = 0  # label 2 missed
    labels = {1: "a", 2: "b"}
    found = summarize([{"case": "x", **evaluate_pair(_image(rough), _image(truth), labels)}], labels)
    lost = summarize([{"case": "x", **evaluate_pair(_image(missed), _image(truth), labels)}], labels)
    assert lost["mean_hd95"] > found["mean_hd95"]
    assert lost["hd95_penalized"] == {"a": 0, "b": 1} and found["hd95_penalized"] == {"a": 0, "b": 0}


def test_evaluate_cli_writes_json_matching_a_hand_computed_dice(tmp_path):
    from lwi.data.phantoms import PHANTOM_LABELS, write_phantom_dataset
    from lwi.names import MODEL_SUFFIX
    from lwi.testing import build_tiny_bundle

    data = write_phantom_dataset(tmp_path / "data", 2, seed=3, shape=(20, 20, 12), spacing=(4.0, 4.0, 6.0))
    # A bias towards label 1 so the random network predicts some of it.
    model = build_tiny_bundle(tmp_path / f"m{MODEL_SUFFIX}", PHANTOM_LABELS, seed=1, bias=[0.0, 0.05, -1.0, -1.0, -1.0],
                              preprocessing={"spacing": [4.0, 4.0, 4.0], "modality": "CT"}, inference={"overlap": 0.25})
    out_json = tmp_path / "res" / "eval.json"
    preds = tmp_path / "preds"
    proc = subprocess.run(
        [sys.executable, "-m", "lwi", "evaluate", "--model", str(model), "--data", str(data), "--json",
         str(out_json), "--predictions", str(preds), "--device", "cpu"],
        capture_output=True, text=True, encoding="utf-8", timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "liver" in proc.stdout and "mean" in proc.stdout
    results = json.loads(out_json.read_text(encoding="utf-8"))
    assert [c["case"] for c in results["cases"]] == ["phantom_000", "phantom_001"]
    for case in results["cases"]:
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(preds / f"{case['case']}.seg.nrrd")))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(Path(data) / "labelsTr" / f"{case['case']}.nii.gz")))
        for value, name in PHANTOM_LABELS.items():
            if value == 0:
                continue
            p, t = pred == value, truth == value
            expected = None if not (p.any() or t.any()) else 2 * np.sum(p & t) / (p.sum() + t.sum())
            if expected is None:
                assert case["dice"][name] is None
            else:
                assert case["dice"][name] == pytest.approx(expected, abs=1e-6)
    assert results["mean"]["dice"].keys() == {"liver", "spleen", "kidney", "vertebra"}


def test_the_synapse_8_organ_mean_ignores_the_other_labels():
    """Reference checklist 21: perfect on labels {1, 2, 3, 4, 6, 7, 8, 11} and wrong elsewhere scores 1.0."""
    names = {v: f"organ{v}" for v in range(1, 14)}
    eight = (1, 2, 3, 4, 6, 7, 8, 11)
    case = {"case": "c", "dice": {n: (1.0 if v in eight else 0.0) for v, n in names.items()},
            "hd95": {n: (1.0 if v in eight else 50.0) for v, n in names.items()}}
    results = summarize([case], names)
    assert results["mean_dice"] == pytest.approx(8 / 13)
    selected = subset_means(results, eight)
    assert selected["mean_dice"] == 1.0 and selected["mean_hd95"] == 1.0 and len(selected["labels"]) == 8
    with pytest.raises(Exception, match="--labels"):
        subset_means(results, [14])
