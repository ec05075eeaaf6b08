"""``lwi segment --uncertainty``: the per-voxel uncertainty map lies on exactly the input's grid (as the
label map: spacing, origin, direction, size, for resampled and reoriented inputs), its values are the
normalised softmax entropy voxel for voxel, its per-case score is reported (JSON progress, ``lwi
evaluate``'s table) and a folder's results are ranked least certain first.

The network is test_inference's hand-set threshold model, so each voxel's logits, and hence its
entropy, are known exactly from its intensity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_inference import T1, T2, ThresholdNet, _metadata, _oblique_image

from lwi.cli import main
from lwi.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset
from lwi.data.preprocessing import PreprocessConfig
from lwi.evaluation import format_table, summarize, uncertainty_dice_correlation
from lwi.inference import Segmenter, uncertainty_map, uncertainty_score
from lwi.names import MODEL_SUFFIX


def _grid(image: sitk.Image):
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _expected_entropy(image: sitk.Image, a: float) -> np.ndarray:
    """The normalised entropy ThresholdNet(a) gives each voxel of ``image`` (CT window [-175, 250])."""
    hu = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float64)
    x = np.clip((hu + 175.0) / 425.0, 0.0, 1.0)
    logits = np.stack([0 * x, a * x - a * T1, 2 * a * x - a * (T1 + T2)])
    p = np.exp(logits - logits.max(0))
    p /= p.sum(0)
    return -(p * np.log(np.clip(p, 1e-30, None))).sum(0) / math.log(3)


def test_map_without_resampling_is_the_entropy_voxel_for_voxel():
    image, _ = _oblique_image()
    metadata = _metadata()
    metadata["preprocessing"] = PreprocessConfig(spacing=None, modality="CT").to_dict()
    result = Segmenter.from_model(ThresholdNet(a=5.0), metadata, device="cpu").segment(image, return_uncertainty=True)
    assert _grid(result.uncertainty) == _grid(image)
    assert result.uncertainty.GetPixelID() == sitk.sitkFloat32
    got = sitk.GetArrayFromImage(result.uncertainty).transpose(2, 1, 0)
    body = sitk.GetArrayFromImage(image).transpose(2, 1, 0) > -500  # inside the foreground crop
    assert np.allclose(got[body], _expected_entropy(image, 5.0)[body], atol=1e-4)
    assert np.all(got[~body] >= 0) and got.max() <= 1.0


@pytest.mark.parametrize("spacing_scale", [1.0, 2.0])
def test_map_on_the_input_grid_where_the_probabilities_are(spacing_scale):
    """Oblique, anisotropic, non-RAS input resampled to 1.5 x 1.5 x 2 mm (x2): the map comes back on the
    input's grid, and in place: it follows the entropy of the probabilities mapped back to that grid
    (whose agreement with the label map test_inference checks; flipping an axis drops the correlation to 0.86)."""
    image, _ = _oblique_image()
    seg = Segmenter.from_model(ThresholdNet(a=5.0), _metadata(), device="cpu", spacing_scale=spacing_scale)
    result = seg.segment(image, return_uncertainty=True, return_probabilities=True)
    assert _grid(result.uncertainty) == _grid(result.label) == _grid(image)
    got = sitk.GetArrayFromImage(result.uncertainty).transpose(2, 1, 0)
    p = sitk.GetArrayFromImage(result.probabilities).transpose(2, 1, 0, 3)
    entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(-1) / math.log(3)
    body = sitk.GetArrayFromImage(image).transpose(2, 1, 0) > -500
    assert np.corrcoef(got[body], entropy[body])[0, 1] > 0.95
    assert np.abs(got - entropy)[body].mean() < 0.02


def test_score_is_the_mean_inside_predicted_structures():
    u = np.array([[[0.1, 0.5], [0.9, 0.0]]], dtype=np.float32)
    label = np.array([[[1, 2], [0, 0]]], dtype=np.uint8)
    assert uncertainty_score(u, label) == pytest.approx(0.3)
    assert uncertainty_score(u, np.zeros_like(label)) == 1.0  # nothing found: checked first
    flat = uncertainty_map(torch.zeros(4, 2, 2, 2))
    assert torch.allclose(flat, torch.ones(2, 2, 2))  # every class equally likely


def test_a_surer_model_scores_lower():
    image, _ = _oblique_image()
    scores = [
        Segmenter.from_model(ThresholdNet(a=a), _metadata(), device="cpu").segment(image, return_uncertainty=True)
        .uncertainty_score for a in (5.0, 50.0)
    ]
    assert 0 < scores[1] < scores[0] < 1


def test_spearman_of_score_and_dice_in_the_summary_and_table():
    labels = {0: "background", 1: "organ"}
    cases = [
        {"case": f"c{i}", "dice": {"organ": d}, "hd95": {"organ": 1.0}, "uncertainty": u}
        for i, (d, u) in enumerate([(0.9, 0.1), (0.8, 0.2), (0.5, 0.4), (0.2, 0.3)])
    ]
    results = summarize(cases, labels)
    assert results["uncertainty_dice_spearman"] == pytest.approx(-0.8)
    assert results["mean_uncertainty"] == pytest.approx(0.25)
    table = format_table(results)
    assert "uncertainty" in table.splitlines()[0] and "0.4000" in table and "-0.800" in table
    assert uncertainty_dice_correlation(cases[:2]) is None  # too few cases to rank


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_bundle):
    root = tmp_path_factory.mktemp("uncertainty")
    model = make_bundle(root / f"tiny{MODEL_SUFFIX}", labels=PHANTOM_LABELS, bias=[0.0, 0.5, 0.0, 0.0, 0.0])
    (root / "images").mkdir()
    for i in range(3):
        image, _ = make_phantom(i, shape=(24, 20, 12 + 2 * i), spacing=(3.0, 3.5, 5.0))
        sitk.WriteImage(image, str(root / "images" / f"case{i}.nii.gz"))
    oblique, _ = _oblique_image()
    sitk.WriteImage(oblique, str(root / "oblique.nrrd"))
    return root, model


def _json_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_segment_writes_the_map_on_the_grid_and_reports_the_score(files, capsys):
    root, model = files
    out, unc = root / "oblique.seg.nrrd", root / "oblique-uncertainty.nrrd"
    code = main(["segment", "--model", str(model), "--input", str(root / "oblique.nrrd"), "--output", str(out),
                 "--uncertainty", str(unc), "--device", "cpu", "--progress", "json"])
    assert code == 0, capsys.readouterr().err
    result = _json_lines(capsys.readouterr().out)[-1]
    written = sitk.ReadImage(str(unc))
    image = sitk.ReadImage(str(root / "oblique.nrrd"))
    assert written.GetSize() == image.GetSize()
    assert np.allclose(written.GetSpacing(), image.GetSpacing()) and np.allclose(written.GetOrigin(), image.GetOrigin())
    assert np.allclose(written.GetDirection(), image.GetDirection())
    values = sitk.GetArrayFromImage(written)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert result["uncertainty"] == {str(out): pytest.approx(float(values[label > 0].mean()) if (label > 0).any() else 1.0, abs=1e-5)}


def test_folder_is_ranked_least_certain_first(files, capsys):
    root, model = files
    code = main(["segment", "--model", str(model), "--input", str(root / "images"), "--output", str(root / "labels"),
                 "--uncertainty", str(root / "maps"), "--device", "cpu", "--progress", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    ranked = _json_lines(captured.out)[-1]["uncertainty"]
    assert len(ranked) == 3 and list(ranked.values()) == sorted(ranked.values(), reverse=True)
    assert sorted(p.name for p in (root / "maps").iterdir()) == [f"case{i}.nii.gz" for i in range(3)]
    assert "Least certain first:" in captured.err


def test_refuses_a_file_as_the_folder_of_maps(files, capsys):
    root, model = files
    (root / "afile").write_text("x")
    code = main(["segment", "--model", str(model), "--input", str(root / "images"), "--output", str(root / "l2"),
                 "--uncertainty", str(root / "afile"), "--device", "cpu"])
    assert code == 1 and "--uncertainty must be a folder" in capsys.readouterr().err


def test_evaluate_reports_each_cases_score(tmp_path, make_bundle, capsys):
    data = write_phantom_dataset(tmp_path / "data", 3, seed=0, shape=(24, 20, 16))
    model = make_bundle(tmp_path / f"tiny{MODEL_SUFFIX}", labels=PHANTOM_LABELS, bias=[0.0, 0.5, 0.0, 0.0, 0.0])
    code = main(["evaluate", "--model", str(model), "--data", str(data), "--json", str(tmp_path / "e.json"),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    scores = [c["uncertainty"] for c in saved["cases"]]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    header = captured.out.splitlines()[0]
    assert header.split()[-1] == "uncertainty"
    assert saved["mean_uncertainty"] == pytest.approx(sum(scores) / 3)
