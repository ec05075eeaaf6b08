"""LWI Segmentation's uncertainty on a real scene (slicer-core) with the real core in its worker: the map
comes in as a volume on the input's geometry, shown over it with Slicer's colour map and an opacity the
slider sets, its score is on the segmentation node, and a folder of volumes is ranked least certain
first."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("slicer")

import SimpleITK as sitk  # noqa: E402
import slicer  # noqa: E402
from test_console_api import ORGANS, _labelled_case, console  # noqa: E402,F401

from lwi.data.phantoms import make_phantom  # noqa: E402


@pytest.fixture
def model(tmp_path, make_bundle):
    return str(make_bundle(tmp_path / "organs.lwi.safetensors", ORGANS, bias=[0.0, 0.3, 0.1]))


@pytest.mark.slow
def test_segmentation_shows_its_uncertainty_map_and_score(console, model):  # noqa: F811
    from LWISegmentationLib import uncertainty

    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    case3, _ = _labelled_case("case3", 3)
    logic = slicer.util.getModuleLogic("LWISegmentation")
    node = logic.segment(case3, model, device="cpu", uncertainty=True)
    unc = logic.lastUncertainty
    assert unc is not None and unc.IsA("vtkMRMLScalarVolumeNode")
    assert unc.GetImageData().GetDimensions() == case3.GetImageData().GetDimensions()
    assert np.allclose(unc.GetSpacing(), case3.GetSpacing()) and np.allclose(unc.GetOrigin(), case3.GetOrigin())
    values = slicer.util.arrayFromVolume(unc)
    assert values.min() >= 0.0 and values.max() <= 1.0 and values.max() > 0.0
    assert unc.GetDisplayNode().GetColorNodeID() == uncertainty.COLOR_NODE_ID
    assert unc.GetStorageNode() is None  # not tied to the temporary file: Save Data writes it
    score = logic.lastResult["uncertainty_score"]
    assert logic.uncertaintyScore(node) == pytest.approx(score) == logic.uncertaintyScore(unc)
    assert "--uncertainty" in logic.lastCommand
    # the overlay: the map over the volume, its opacity set by the slider
    assert composite.GetForegroundVolumeID() == unc.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(uncertainty.DEFAULT_OPACITY)
    logic.setUncertaintyOpacity(0.2)
    assert composite.GetForegroundOpacity() == pytest.approx(0.2)
    # segmenting the same volume again replaces its map instead of piling them up
    logic.segment(case3, model, device="cpu", outputSegmentation=node, uncertainty=True)
    names = [n.GetName() for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")]
    assert [n for n in names if "uncertainty" in n] == ["case3 LWI uncertainty"]


@pytest.mark.slow
def test_a_folder_is_ranked_least_certain_first(console, model, tmp_path):  # noqa: F811
    folder = tmp_path / "new-volumes"
    folder.mkdir()
    for i in range(3):
        image, _ = make_phantom(i, shape=(24, 20, 12 + 2 * i), spacing=(3.0, 3.5, 5.0))
        sitk.WriteImage(image, str(folder / f"volume{i}.nii.gz"))
    logic = slicer.util.getModuleLogic("LWISegmentation")
    ranked = logic.rankFolder(str(folder), model, device="cpu", outputFolder=str(tmp_path / "ranked"))
    assert sorted(name for name, _ in ranked) == [f"volume{i}.nii.gz" for i in range(3)]
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert sorted(os.listdir(tmp_path / "ranked" / "uncertainty")) == [f"volume{i}.nii.gz" for i in range(3)]
