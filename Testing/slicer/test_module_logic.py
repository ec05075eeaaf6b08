"""The module files as Slicer loads them and their Logic classes (LWISegmentationLogic,
LWITrainingLogic) on a real MRML scene (slicer-core), with the real LWI packages: Reload (G1), a
source checkout added through *Additional module paths*, the parameter nodes, and the findings of
the 2026-12-06 review fixed in the logic (G2, G3, G7, G8, G10)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer")

import slicer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["LWICommon", "LWISegmentationLib", "LWITrainingLib"]


def _volume(name: str, seed: int = 0):
    image = np.random.default_rng(seed).normal(0.0, 5.0, (12, 12, 12)).astype(np.float32)
    image[3:9, 3:9, 3:9] += 100.0
    return slicer.util.addVolumeFromArray(image, np.diag([2.0, 2.0, 2.0, 1.0]), name)


def _segmentation(volume, names=("liver",)):
    segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", volume.GetName() + " seg")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), volume.GetID())
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[3:9, 3:9, 3:9] = 1
    labelmap = slicer.util.addVolumeFromArray(labels, np.diag([2.0, 2.0, 2.0, 1.0]), "l", "vtkMRMLLabelMapVolumeNode")
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation)
    slicer.mrmlScene.RemoveNode(labelmap)
    segmentation.GetSegmentation().GetNthSegment(0).SetName(names[0])
    return segmentation


def _volumes():
    return [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not n.IsA("vtkMRMLLabelMapVolumeNode")]


# -- G1: Reload, on the real packages --------------------------------------------------------------


def test_reload_executes_every_package_file_again_and_keeps_the_session_state(slicer_modules):
    """Both module files imported, then what their Reload does: every LWI package again from its
    files (the core's name tables, registered as LWICommon._core.*, are not the package's files),
    the running worker and the console poller kept."""
    from LWICommon import jobs
    from LWICommon.gui import reloadPackage
    from LWISegmentationLib import segmentation_logic

    poller = jobs.poller
    segmentation_logic._worker = worker = object()  # a worker the old widget must still find to stop
    try:
        reloaded = [reloadPackage(name) for name in PACKAGES]
        assert "LWICommon.vocabulary" in reloaded[0] and "LWICommon._core.names" not in reloaded[0]
        assert "LWISegmentationLib.widget" in reloaded[1] and "LWITrainingLib.training_logic" in reloaded[2]
        assert sys.modules["LWICommon.jobs"].poller is poller
        assert sys.modules["LWISegmentationLib.segmentation_logic"]._worker is worker
    finally:
        segmentation_logic._worker = None
    # Slicer then executes the module file again: it hands over the reloaded Lib's classes.
    spec = importlib.util.spec_from_file_location("LWITraining", ROOT / "LWITraining" / "LWITraining.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.LWITrainingWidget is sys.modules["LWITrainingLib.widget"].LWITrainingWidget


_CHECKOUT = """
import importlib.util, json, sys, types
# As Slicer with the checkout's module folders in Additional module paths: it appends each module
# file's folder to sys.path, nothing else of the repository (qSlicerScriptedLoadableModuleFactory).
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and "__editable__" not in p]
sys.path.insert(0, {harness!r})
import scripted_layer
scripted_layer.install(types.SimpleNamespace(
    setitem=lambda d, k, v: d.__setitem__(k, v), setattr=lambda o, n, v, raising=True: setattr(o, n, v)))
loaded = {{}}
for name in ("LWISegmentation", "LWITraining"):
    sys.path.append({root!r} + "/" + name)
    spec = importlib.util.spec_from_file_location(name, {root!r} + "/" + name + "/" + name + ".py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    loaded[name] = [module.__dict__[name + part].__name__ for part in ("", "Widget", "Logic")]
from LWICommon.gui import reloadPackage
reloaded = [len(reloadPackage(p)) for p in ("LWICommon", "LWISegmentationLib", "LWITrainingLib")]
print(json.dumps({{"loaded": loaded, "common": sys.modules["LWICommon"].__file__, "reloaded": reloaded,
                  "lwi": importlib.util.find_spec("lwi") is not None}}))
"""


def test_a_source_checkout_in_additional_module_paths_loads_both_modules(tmp_path):
    """Only the two module folders on sys.path: the sibling LWICommon is found (loaded by its
    location by the module's Lib), both modules load, and Reload works there too."""
    code = _CHECKOUT.format(harness=str(ROOT / "Testing" / "slicer"), root=str(ROOT))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == {
        "LWISegmentation": ["LWISegmentation", "LWISegmentationWidget", "LWISegmentationLogic"],
        "LWITraining": ["LWITraining", "LWITrainingWidget", "LWITrainingLogic"],
    }
    assert Path(report["common"]) == ROOT / "LWICommon" / "__init__.py"
    assert all(count > 1 for count in report["reloaded"])
    assert not report["lwi"]  # nothing put the checkout's root on sys.path


# -- LWISegmentationLogic ------------------------------------------------------------------------


def test_segmentation_logic_keeps_its_settings_in_the_scenes_parameter_node(slicer_modules, tmp_path):
    logic = slicer.util.getModuleLogic("LWISegmentation")
    p = logic.getParameterNode()
    node = p.parameterNode
    assert node.IsA("vtkMRMLScriptedModuleNode") and node.GetSingletonTag() == "LWISegmentation"
    assert logic.getParameterNode().parameterNode is node  # one per scene
    assert (p.device, p.show3D, p.maskRatio) == ("auto", True, 0.4)
    volume = _volume("CT")
    p.inputVolume = volume
    assert node.GetNodeReferenceID("inputVolume") == volume.GetID()
    with pytest.raises(ValueError):
        p.device = "tpu"

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    model = folder / "liver.lwi.safetensors"
    model.write_bytes(b"")
    logic.selectModel(str(model))  # what LWI Training does with a new model
    assert p.modelPath == model and node.GetParameter("modelPath") == str(model)
    assert logic.shownVolume() is volume


def test_models_of_a_folder_chosen_in_lwi_training_are_listed(slicer_modules, tmp_path, make_bundle):
    """G7: a model trained into another models folder makes that folder's models listed, not only
    the one published last."""
    from LWICommon.files import model_path

    logic = slicer.util.getModuleLogic("LWISegmentation")
    folder = tmp_path / "custom-models"
    folder.mkdir()
    older, newer = (model_path(str(folder), n) for n in ("older", "newer"))
    for path in (older, newer):
        make_bundle(path)
    assert logic.listModels() == []
    logic.selectModel(newer)
    assert sorted(m.name for m in logic.listModels()) == ["newer", "older"]


def test_setup_dependencies_installs_nothing_when_all_is_there(slicer_modules, monkeypatch):
    def noInstall(*args, **kwargs):
        raise AssertionError("nothing is missing: nothing may be installed")

    monkeypatch.setattr(slicer.util, "pip_install", noInstall, raising=False)
    assert slicer.util.getModuleLogic("LWISegmentation").setupDependencies(askConfirmation=False) is True
    assert slicer.util.getModuleLogic("LWITraining").setupDependencies(askConfirmation=False) is True


# -- LWITrainingLogic ----------------------------------------------------------------------------


def test_training_logic_reads_the_panels_settings_from_the_parameter_node(slicer_modules):
    logic = slicer.util.getModuleLogic("LWITraining")
    p = logic.getParameterNode()
    assert p.parameterNode.GetSingletonTag() == "LWITraining"
    p.roiSize, p.epochs, p.targetSpacing, p.timeBudget, p.modelName = 64, 3, "1.5, 1.5, 2", "20m", "liver"
    settings = logic.settingsFromParameterNode(p)
    assert (settings.roi, settings.epochs, settings.spacing, settings.time_budget) == ((64,) * 3, 3, (1.5, 1.5, 2.0), "20m")
    assert settings.pretrain_epochs is None and settings.learning_rate is None  # 0: auto, the plan decides
    with pytest.raises(ValueError):
        p.roiSize = 48  # not one of the sizes offered


def test_opening_lwi_training_creates_no_folder(slicer_modules, tmp_path):
    """G10: what the panel asks the logic when it opens writes nothing into the user's home."""
    logic = slicer.util.getModuleLogic("LWITraining")
    home = tmp_path / "home"
    assert logic.modelsFolder() == str(home / "LWI" / "models")
    assert not logic.canResume("model") and logic.trainConflict("model") == ""
    assert logic.unusedModelName("model") == "model"
    assert not home.exists()


def _finished_run(logic, name: str):
    """What an interrupted and a finished training of ``name`` leave: a run folder with its settings
    and Step 1 checkpoint, and the published model."""
    from LWICommon import files
    from LWITrainingLib import run_folder

    from lwi.names import STEP1_INFIX, derived_path

    run = logic.runFolder(name)
    run_folder.write_settings(run, {"model_name": name}, None)
    checkpoint = derived_path(Path(files.model_path(run, name)), STEP1_INFIX)
    checkpoint.write_bytes(b"step 1")
    model = Path(files.model_path(logic.modelsFolder(), name))
    model.write_bytes(b"the model")
    return run, checkpoint, model


def test_train_never_replaces_a_model_or_a_resumable_run_unless_asked(slicer_modules):
    """G3: Train with the name of an existing model and an interrupted run refuses, touches nothing,
    and says what it would replace; a free name is offered; replace=True goes ahead."""
    logic = slicer.util.getModuleLogic("LWITraining")
    volume = _volume("CT")
    cases = logic.addCases(logic.collectCasesFromNodes([(volume, _segmentation(volume))]))
    run, checkpoint, model = _finished_run(logic, "model")
    conflict = logic.trainConflict("model")
    assert "a model 'model' exists" in conflict and "can be resumed" in conflict

    with pytest.raises(FileExistsError, match="Not trained: a model 'model' exists"):
        logic.train(cases, "model", settings={"device": "cpu"}, start=False)
    assert model.read_bytes() == b"the model" and checkpoint.read_bytes() == b"step 1" and logic.canResume("model")
    assert logic.unusedModelName("model") == "model-2"

    runner = logic.train(cases, "model", settings={"device": "cpu"}, start=False, replace=True)
    assert not runner.running and "--overwrite" in logic.lastCommand
    assert os.path.isdir(os.path.join(run, "data", "imagesTr"))


def test_previews_show_a_scene_cases_own_volume_and_one_loaded_folder_case(slicer_modules, tmp_path):
    """G2: previewing a scene case adds no copy of its volume (whose file is a staged copy that
    Clear deletes); a folder case's image is loaded once, replaced by the next preview and removed
    by Clear, and never points at the case's file."""
    from lwi.data.phantoms import write_phantom_dataset

    logic = slicer.util.getModuleLogic("LWITraining")
    volume = _volume("CT")
    sceneCase = logic.collectCasesFromNodes([(volume, _segmentation(volume))])[0]
    tiny = {"architecture": "segresnet", "roi": [16, 16, 16], "device": "cpu"}
    for _ in range(2):
        logic.startPreview(sceneCase, tiny)
    assert _volumes() == [volume]

    folderCase = logic.collectCasesFromFolder(str(write_phantom_dataset(tmp_path / "ds", 1, shape=(16, 16, 16))))[0]
    logic.addCases([sceneCase, folderCase])
    for _ in range(2):
        logic.startPreview(folderCase, tiny)
    loaded = [n for n in _volumes() if n is not volume]
    assert len(loaded) == 1 and loaded[0].GetName().startswith(f"{folderCase.name} (training case)")
    assert loaded[0].GetStorageNode() is None
    logic.clearCases()
    assert _volumes() == [volume]


def test_clear_refuses_while_a_plan_reads_the_cases(slicer_modules):
    """G8: Clear would delete the staged images a running plan reads."""
    logic = slicer.util.getModuleLogic("LWITraining")
    volume = _volume("CT")
    logic.addCases(logic.collectCasesFromNodes([(volume, _segmentation(volume))]))
    staging = Path(logic._staging())
    runner = logic.plan(logic.trainingSet, {"device": "cpu"}, start=False)
    runner.start()
    try:
        with pytest.raises(RuntimeError, match="cancel it before clearing"):
            logic.clearCases()
        assert any(staging.iterdir())
    finally:
        runner.cancel()
    logic.clearCases()
    assert not staging.exists()


# -- the module files' own lines and the rest of the console API -----------------------------------


@pytest.mark.parametrize("name", ["LWISegmentation", "LWITraining"])
def test_module_description_and_the_self_test_found_only_when_asked(slicer_modules, name):
    module = sys.modules[name]
    parent = type("Parent", (), {})()
    getattr(module, name)(parent)
    assert parent.title.startswith("LWI ") and parent.categories == ["Segmentation"]
    assert parent.dependencies == (["LWISegmentation"] if name == "LWITraining" else [])
    assert module.README_URL in parent.helpText and "Kunhimon" in parent.acknowledgementText
    testClass = getattr(module, name + "Test")  # what Reload and Test's runTest asks for
    assert Path(sys.modules[testClass.__module__].__file__) == ROOT / name / "Testing" / "Python" / f"{name}Test.py"
    with pytest.raises(AttributeError):
        module.NoSuchThing  # noqa: B018 (any other lookup fails as on any module)
    sys.modules.pop(name + "Test", None)


def test_add_scene_cases_takes_each_segmentation_with_the_volume_it_was_drawn_on(slicer_modules):
    logic = slicer.util.getModuleLogic("LWITraining")
    first, second = _volume("CT1", 1), _volume("CT2", 2)
    _segmentation(first), _segmentation(second, ("spleen",))
    slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn on nothing")
    sources = logic.collectCasesFromNodes()  # Add scene cases
    assert [(s.name, s.node, list(s.segments.values())) for s in sources[:2]] == [
        ("CT1", first, ["liver"]), ("CT2", second, ["spleen"])
    ]
    assert sources[2].name == "drawn on nothing" and sources[2].image is None and sources[2].problems
    assert all(os.path.isfile(s.image) for s in sources[:2])


def test_resume_continues_an_interrupted_run_with_its_own_settings(slicer_modules):
    logic = slicer.util.getModuleLogic("LWITraining")
    with pytest.raises(ValueError, match="no interrupted training of 'liver'"):
        logic.resume("liver", start=False)
    _finished_run(logic, "liver")
    runner = logic.resume("liver", epochs=7, start=False)
    assert not runner.running and "--resume" in logic.lastCommand and "--epochs 7" in logic.lastCommand
    assert "--overwrite" not in logic.lastCommand


def test_segment_with_the_model_trained_last(slicer_modules, make_bundle, tmp_path):
    logic = slicer.util.getModuleLogic("LWITraining")
    volume = _volume("CT")
    with pytest.raises(ValueError, match="No model has been trained yet"):
        logic.startSegmentWithModel(volume)
    logic.lastModelPath = str(make_bundle(tmp_path / "liver.lwi.safetensors"))
    job = logic.startSegmentWithModel(volume, device="cpu")
    assert not job.running and logic.lastCommand == slicer.util.getModuleLogic("LWISegmentation").lastCommand
    assert "liver.lwi.safetensors" in logic.lastCommand and "--device cpu" in logic.lastCommand
