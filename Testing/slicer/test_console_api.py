"""The README's Python-console example, run on real MRML nodes (slicer-core) with the real core in
its subprocesses: train on two labelled cases, segment a third with the new model, preview, add a
corrected case to the training set.

Slicer's event loop is the one thing missing without Qt: where its timer would poll a background job
on Slicer's main thread, the poller's plain ticker (:class:`LWICommon.jobs.PlainTicker`) does, run here.
Tiny settings (a SegResNet at a 16^3 ROI, one epoch per step, on the CPU) keep each test short.
"""

from __future__ import annotations

import collections
import importlib
import os

import numpy as np
import pytest

pytest.importorskip("slicer")

import slicer  # noqa: E402
from LWICommon import mrml  # noqa: E402

TINY = {
    "architecture": "segresnet",
    "roi": [16, 16, 16],
    "cube_size": 8,
    "pretrain_epochs": 1,
    "epochs": 1,
    "batch_size": 1,
    "device": "cpu",
}


@pytest.fixture
def console(slicer_app, tmp_path, monkeypatch):
    """Both modules' logic, reachable as in Slicer (``slicer.util.getModuleLogic``), with the user's
    home (models and training folders) in ``tmp_path``."""
    from LWISegmentationLib.segmentation_logic import SegmentationLogic, shutdownSharedWorker
    from LWITrainingLib.training_logic import TrainingLogic

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    slicer_app.addPythonModule("LWISegmentation", SegmentationLogic())
    slicer_app.addPythonModule("LWITraining", TrainingLogic())
    yield slicer_app
    for job in list(_poller().jobs):
        job.cancel()
    _poller().jobs.clear()
    shutdownSharedWorker()


def _poller():
    """The session's job poller (looked up now: other tests reload LWICommon, as Slicer's Reload does)."""
    return importlib.import_module("LWICommon.jobs").poller


def _event_loop(until, timeout: float = 120.0) -> None:
    """What Slicer's main loop does for a console job: the poller's ticker (without Qt the plain
    one, run for real) polls the jobs on this thread until they are over."""
    ticker = _poller().ticker
    assert isinstance(ticker, importlib.import_module("LWICommon.jobs").PlainTicker)
    ticker.runUntilStopped(timeout)
    assert until()


def _labelled_case(name: str, seed: int):
    """A 24^3 volume with two bright boxes and a segmentation with segments "liver" and "spleen"."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 5.0, (24, 24, 24)).astype(np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[4 + seed : 12 + seed, 6:18, 6:18] = 1
    label[14:20, 4 + seed : 12 + seed, 8:16] = 2
    image[label == 1] += 100.0
    image[label == 2] += 200.0
    ijk = np.diag([1.5, 1.5, 2.0, 1.0])
    ijk[:3, 3] = [-18.0, -18.0, -24.0]
    volume = slicer.util.addVolumeFromArray(image, ijk, name)
    labelmap = slicer.util.addVolumeFromArray(label, ijk, name + " labels", "vtkMRMLLabelMapVolumeNode")
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name + " segmentation")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), volume.GetID())
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    mrml.removeNodes([labelmap])
    for index, segmentName in enumerate(["liver", "spleen"]):
        segmentation.GetSegmentation().GetNthSegment(index).SetName(segmentName)
    return volume, segmentation


def _classes(app) -> collections.Counter:
    return collections.Counter(node.GetClassName() for node in app.nodesByClass())


def _train_two_cases(app):
    """README: collect two scene cases, train in the background; returns (logic, runner)."""
    for i in (1, 2):
        _labelled_case(f"case{i}", i)
    training = slicer.util.getModuleLogic("LWITraining")
    before = _classes(app)
    cases = training.addCases(training.collectCasesFromNodes([
        (slicer.util.getNode("case1"), slicer.util.getNode("case1 segmentation")),
        (slicer.util.getNode("case2"), slicer.util.getNode("case2 segmentation")),
    ]))
    assert _classes(app) == before  # F13: collecting cases leaves no colour table or label map behind
    assert [row.included for row in cases.rows] == [True, True]
    assert sorted(cases.labels.values()) == ["liver", "spleen"]
    runner = training.train(cases, "my-organs", settings=TINY)  # no wait: the README's background use
    return training, runner


@pytest.mark.slow
def test_console_training_in_the_background_finishes_and_publishes_the_model(console):
    """F4: train() without wait is polled on the main thread: it ends, the model is published and
    selected in LWI Segmentation, the curves are plotted, and the runner is free for the next run."""
    training, runner = _train_two_cases(console)
    assert runner.running
    _event_loop(lambda: runner.finished)
    assert runner.returncode == 0, runner.error_message()
    assert not runner.running
    models = os.path.join(os.environ["HOME"], "LWI", "models")
    assert training.lastModelPath == os.path.join(models, "my-organs.lwi.safetensors")
    assert os.path.isfile(training.lastModelPath)
    assert slicer.util.getModuleLogic("LWISegmentation").selectedModelPath == training.lastModelPath
    # the live plot: one colour per curve (F18: every series starts black)
    series = list(training.plot.seriesNodes.values())
    assert len(series) >= 2
    assert len({tuple(round(c, 4) for c in s.GetColor()) for s in series}) == len(series)
    assert training.chartNode.GetNumberOfPlotSeriesNodes() == len(series)
    # the runner is free: a second training starts (and is cancelled at once)
    second = training.train(training.trainingSet, "my-organs-2", settings=TINY)
    assert second is not runner and second.running
    training.cancel()
    _event_loop(lambda: second.finished, timeout=30)
    assert second.cancelled


ORGANS = {0: "background", 1: "liver", 2: "spleen"}


@pytest.mark.slow
def test_console_segment_a_third_case_in_the_background_then_blocking(console, tmp_path, make_bundle):
    """README: segment case3 with a model (background with a callback, then blocking): named
    segments on case3's grid, next to it; the second run reuses the loaded model."""
    model = str(make_bundle(tmp_path / "organs.lwi.safetensors", ORGANS))
    case3, _ = _labelled_case("case3", 3)
    segmentation = slicer.util.getModuleLogic("LWISegmentation")
    entries = segmentation.listModels([str(tmp_path)])
    assert [(m.name, m.labels) for m in entries] == [("organs", [(1, "liver"), (2, "spleen")])]
    # (an untrained tiny model: which organs it finds is arbitrary, but seeded)

    results = []
    job = segmentation.segment(case3, model, device="cpu", callback=lambda node, error: results.append((node, error)))
    assert job in _poller().jobs
    _event_loop(lambda: bool(results))
    node, error = results[0]
    assert error is None and job.returncode == 0
    assert mrml.segmentNames(node) and set(mrml.segmentNames(node)) <= {"liver", "spleen"}
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is case3

    again = segmentation.segment(case3, model, device="cpu", outputSegmentation=node)  # blocks
    assert again is node and segmentation.lastResult["reused_model"]  # the worker kept the model


@pytest.mark.slow
def test_console_preview_replaces_its_nodes_and_survives_save(console):
    """README: makePreview shows the Step-1 views; a new draw replaces them; the views do not point
    at the deleted temporary files (F14), so Save Data writes them."""
    case3, _ = _labelled_case("case3", 3)
    segmentation = slicer.util.getModuleLogic("LWISegmentation")
    volumes_before = len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"))
    preview = segmentation.makePreview(case3, numSubvolumes=4, maskRatio=0.4, cubeSize=4, seed=1, device="cpu")
    assert preview["info"]["num_subvolumes"] == 4
    assert sorted(preview["info"]["permutation"]) == [0, 1, 2, 3]
    assert int(slicer.util.arrayFromVolume(preview["subvolumes"]).max()) == 4
    for view in ("shuffled", "shuffled_masked", "subvolumes"):
        assert preview[view].GetStorageNode() is None and preview[view].GetModifiedSinceRead(), view
    again = segmentation.makePreview(case3, numSubvolumes=4, maskRatio=0.4, cubeSize=4, seed=2, device="cpu")
    assert len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")) == volumes_before + 3
    assert all(preview[v].GetScene() is None for v in ("shuffled", "shuffled_masked", "subvolumes"))
    assert again["shuffled"].GetScene() is slicer.mrmlScene


def test_console_add_to_training_set_leaves_the_scene_as_it_was(console, tmp_path, make_bundle):
    """README: a corrected segmentation becomes a training case, matched to the model's labels by
    name; no export node stays in the scene (F13)."""
    model = str(make_bundle(tmp_path / "organs.lwi.safetensors", ORGANS))
    case3, corrected = _labelled_case("case3", 3)
    corrected.GetSegmentation().GetNthSegment(0).SetName("Liver")  # matched by name, case ignored
    segmentation = slicer.util.getModuleLogic("LWISegmentation")
    before = _classes(console)
    folder = str(tmp_path / "training-cases")
    added = segmentation.addToTrainingSet(case3, corrected, model, folder=folder)
    assert _classes(console) == before
    assert added.cases_in_folder == 1
    label_file = os.path.join(folder, "labelsTr", added.case + ".nrrd")
    written = mrml.loadVolume(label_file, "written", labelmap=True)
    expected = np.zeros((24, 24, 24), np.uint8)
    expected[7:15, 6:18, 6:18] = 1
    expected[14:20, 7:15, 8:16] = 2
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(written), expected)
