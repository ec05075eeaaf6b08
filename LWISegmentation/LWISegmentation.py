"""LWISegmentation: segment the loaded volume with an LWI model, in a background process.

This file is loaded by Slicer at start-up: it imports nothing heavy. torch, MONAI and the ``lwi``
core run in a separate Python process (``PythonSlicer -m lwi segment ...``); the helpers in
``LWICommon`` (next to this file) are plain Python.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Annotated, Optional

import slicer
import vtk
from LWICommon.segmentation_logic import SegmentationLogic
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

README_URL = "https://github.com/lwi-slicer/SlicerLWI#readme"
PAPER_CITATION = (
    "Kunhimon S., Shaker A., Naseer M., Khan S., Khan F. S. Learnable Weight Initialization for "
    "Volumetric Medical Image Segmentation. Artificial Intelligence in Medicine, 2024 (arXiv:2306.09320)."
)

def _vocabulary():
    """The core's names (lwi/names.py, through LWICommon: torch-free), needed at load time."""
    from LWICommon.vocabulary import names

    return names


DEVICES = list(_vocabulary().DEVICE_CHOICES)


class LWISegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LWI Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LWI extension developers"]
        self.parent.helpText = (
            "Segment the selected volume with a model trained by the LWI Training module (or the "
            "<code>lwi</code> command). The network runs in a separate process, on the GPU when one is "
            f'available. See the <a href="{README_URL}">LWI documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Learnable Weight Initialization (LWI) is the method of: "
            + PAPER_CITATION
            + " Networks, losses and inference come from MONAI."
        )


@parameterNodeWrapper
class LWISegmentationParameterNode:
    """The module's settings, saved with the scene.

    inputVolume: the volume to segment.
    outputSegmentation: the segmentation to (re)fill; a new one is created when empty.
    modelPath: the model bundle (``.lwi.safetensors``).
    device: where the network runs.
    show3D: show the result in the 3D view.
    numSubvolumes: preview: N axial sub-volumes (0: as the model).
    maskRatio: preview: fraction of masked cubes.
    cubeSize: preview: mask cube edge in voxels.
    correctedSegmentation: Add to training set: the corrected segmentation of the input volume.
    trainingFolder: Add to training set: the folder of labelled cases (default ~/LWI/training-cases).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: pathlib.Path
    device: Annotated[str, Choice(DEVICES)] = "auto"
    show3D: bool = True
    numSubvolumes: Annotated[int, WithinRange(0, 64)] = 0
    maskRatio: Annotated[float, WithinRange(0.0, 0.95)] = 0.4
    cubeSize: Annotated[int, WithinRange(1, 128)] = 16
    correctedSegmentation: vtkMRMLSegmentationNode
    trainingFolder: pathlib.Path


class LWISegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: holds no computation, calls :class:`LWISegmentationLogic`."""

    BROWSE = "Browse..."

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.task = None
        self.previewTask = None
        self.previewSeed = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = []
        self._updatingModels = False
        self._shownModelPath = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LWISegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        from LWICommon.gui import TaskPanel

        self.logic = LWISegmentationLogic()
        self.task = TaskPanel(
            self.ui.applyButton, self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit
        )
        self.previewTask = TaskPanel(
            self.ui.previewButton, self.ui.previewProgressBar, self.ui.previewStatusLabel, self.ui.logTextEdit
        )

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.previewButton.connect("clicked(bool)", self.onPreviewButton)
        self.ui.newDrawButton.connect("clicked(bool)", self.onNewDrawButton)
        self.ui.addToTrainingSetButton.connect("clicked(bool)", self.onAddToTrainingSetButton)
        self.ui.modelComboBox.connect("activated(int)", self.onModelChosen)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self) -> None:
        for task in (self.task, self.previewTask):
            if task is not None:
                task.cancel(wait=True)  # the timer stops with the widget: finish the runs here
        if self.logic is not None:
            self.logic.shutdownWorker()  # frees the GPU when the module is closed
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the LWICommon helpers too (Slicer reloads only this file), then the module."""
        from LWICommon.gui import reloadPackage

        reloadPackage("LWICommon")
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        # The running segmentation or preview would import its result next to nodes that are
        # being removed: stop them (their results are discarded).
        for task in (self.task, self.previewTask):
            if task is not None:
                task.cancel()
        if self.logic is not None:
            self.logic.clearPreview()  # slice nodes outlive the scene: restore their label outline
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            # Default to the volume shown in the slice views, else the first one.
            self._parameterNode.inputVolume = self.logic.shownVolume()

    def setParameterNode(self, inputParameterNode: Optional[LWISegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            from LWICommon import files
            from LWICommon.gui import connectParameterNodeToGui, isUnsetPath

            if isUnsetPath(self._parameterNode.trainingFolder):  # pathlib.Path's default is "."
                self._parameterNode.trainingFolder = pathlib.Path(files.default_training_folder())
            # Widgets are bound through their SlicerParameterName property in the .ui file.
            self._parameterNodeGuiTag = connectParameterNodeToGui(self._parameterNode, self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        hasModel = bool(p and os.path.isfile(str(p.modelPath)))
        if p and str(p.modelPath) != self._shownModelPath and not self._updatingModels:
            self.refreshModels()  # e.g. LWI Training just selected the model it trained
        if not (self.task is not None and self.task.running):  # the button is Cancel while running
            ready = bool(p and p.inputVolume and hasModel)
            self.ui.applyButton.enabled = ready
            self.ui.applyButton.toolTip = (
                "Segment the input volume." if ready else "Select an input volume and a model file."
            )
        if not (self.previewTask is not None and self.previewTask.running):
            self.ui.previewButton.enabled = bool(p and p.inputVolume)
        self.ui.newDrawButton.enabled = bool(p and p.inputVolume)
        self.ui.addToTrainingSetButton.enabled = bool(p and p.inputVolume and p.correctedSegmentation and hasModel)

    # -- models ---------------------------------------------------------------------------
    def refreshModels(self) -> None:
        """Fill the model list: the user's trained models, then "Browse..."."""
        if self.logic is None:
            return
        current = str(self._parameterNode.modelPath) if self._parameterNode else ""
        self._shownModelPath = current
        extra = [current] if os.path.isfile(current) else []
        self._models = self.logic.listModels(extra=extra)
        self._updatingModels = True
        try:
            self.ui.modelComboBox.clear()
            for entry in self._models:
                self.ui.modelComboBox.addItem(entry.title())
            self.ui.modelComboBox.addItem(self.BROWSE)
            paths = [os.path.realpath(e.path) for e in self._models]
            index = paths.index(os.path.realpath(current)) if extra and os.path.realpath(current) in paths else -1
            if index < 0 and self._models and not extra and self._parameterNode:
                index = 0
                self._parameterNode.modelPath = pathlib.Path(self._models[0].path)
                self._shownModelPath = str(self._parameterNode.modelPath)
            self.ui.modelComboBox.setCurrentIndex(index)
        finally:
            self._updatingModels = False
        self._showModelInfo()

    def onModelChosen(self, index: int) -> None:
        if self._updatingModels or not self._parameterNode:
            return
        if index >= len(self._models):  # "Browse..."
            self.ui.modelPathLineEdit.browse()
            return
        self._parameterNode.modelPath = pathlib.Path(self._models[index].path)

    def onModelPathChanged(self, path: str) -> None:
        if not self._updatingModels:
            self.refreshModels()

    def _showModelInfo(self) -> None:
        path = str(self._parameterNode.modelPath) if self._parameterNode else ""
        entry = next((e for e in self._models if os.path.realpath(e.path) == os.path.realpath(path)), None)
        self.ui.modelInfoLabel.text = entry.description() if entry is not None else ""

    # -- segmentation ---------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self.task.running:
            self.task.cancel()
            return
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            job = self.logic.startSegmentation(
                p.inputVolume,
                str(p.modelPath),
                device=p.device,
                outputSegmentation=p.outputSegmentation,
                show3D=p.show3D,
                onImported=self._onImported,
            )
            self.task.log("Running: " + self.logic.lastCommand)
            self.task.start(job)
        except Exception as e:
            slicer.util.errorDisplay(f"Segmentation could not start: {e}")
            logging.exception("LWISegmentation failed to start")

    def _onImported(self, segmentationNode) -> None:
        # The output selector stays as the user set it (a re-run makes a new node unless one was
        # picked); the result is offered for correction and "Add to training set".
        if self._parameterNode:
            self._parameterNode.correctedSegmentation = segmentationNode
        result = self.logic.lastResult or {}
        if result.get("seconds") is not None:
            reused = " (model already loaded)" if result.get("reused_model") else ""
            self.task.log(f"Segmented on {result.get('device')} in {result['seconds']:.1f} s{reused}.")

    # -- preview --------------------------------------------------------------------------
    def onPreviewButton(self) -> None:
        if self.previewTask.running:
            self.previewTask.cancel()
            return
        self._startPreview(newDraw=False)

    def onNewDrawButton(self) -> None:
        if self.previewTask.running:
            return
        self._startPreview(newDraw=True)

    def _startPreview(self, newDraw: bool) -> None:
        from LWICommon.preview import new_seed, preview_options

        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            if newDraw or self.previewSeed is None:
                self.previewSeed = new_seed()
            p = self._parameterNode
            modelPath = str(p.modelPath) if os.path.isfile(str(p.modelPath)) else None
            options = preview_options(
                p.numSubvolumes or None, p.maskRatio, p.cubeSize, self.previewSeed, modelPath, p.device
            )
            runner = self.logic.startPreview(p.inputVolume, options, p.show3D, onLoaded=self._onPreviewLoaded)
            self.previewTask.log("Running: " + self.logic.lastCommand)
            self.previewTask.start(runner)
        except Exception as e:
            slicer.util.errorDisplay(f"The preview could not start: {e}")
            logging.exception("LWISegmentation preview failed to start")

    def _onPreviewLoaded(self, preview: dict) -> None:
        from LWICommon.preview import summary

        self.ui.previewStatusLabel.text = summary(preview["info"])

    # -- training set ---------------------------------------------------------------------
    def onAddToTrainingSetButton(self) -> None:
        p = self._parameterNode
        try:
            added = self.logic.addToTrainingSet(
                p.inputVolume, p.correctedSegmentation, str(p.modelPath), folder=str(p.trainingFolder)
            )
        except Exception as e:
            slicer.util.errorDisplay(f"The case was not added: {e}")
            logging.exception("Add to training set failed")
            return
        self.ui.trainingSetStatusLabel.text = added.message()
        self.task.log(added.message())


class LWISegmentationLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """The module's logic: :class:`LWICommon.segmentation_logic.SegmentationLogic` (everything on the
    scene, also from the Python console) plus the parameter node and the dependency installer."""

    def __init__(self) -> None:
        from LWICommon.slicer_setup import ensureCoreImportable

        ScriptedLoadableModuleLogic.__init__(self)
        ensureCoreImportable()  # label names and dataset layouts come from the core, in this process
        SegmentationLogic.__init__(self)

    def getParameterNode(self):
        return LWISegmentationParameterNode(super().getParameterNode())

    def selectModel(self, modelPath: str) -> None:
        """Select ``modelPath`` in the panel (through the parameter node, which the panel shows)."""
        SegmentationLogic.selectModel(self, modelPath)
        self.getParameterNode().modelPath = pathlib.Path(modelPath)

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch (through the PyTorch extension) and the core's other requirements are
        installed; asks once before installing. Returns False if the user declined."""
        from LWICommon.slicer_setup import installDependencies

        return installDependencies(askConfirmation)


class LWISegmentationTest(ScriptedLoadableModuleTest):
    """Tests run by Slicer (Reload and Test, and the extension's CTest): the node <-> file round
    trip and the background process machinery (no torch needed), then, when the core's
    dependencies are installed, a tiny model made here segments a synthetic volume (on the CPU, and
    again on the GPU when there is one), the Step-1 preview and Add to training set."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_VolumeRoundTrip()
        self.setUp()
        self.test_LabelmapImport()
        self.setUp()
        self.test_ProcessRunner()
        self.setUp()
        self.test_SegmentSyntheticVolume()
        self.setUp()
        self.test_PreviewAndTrainingSet()

    def _makeVolume(self, nodeClassName="vtkMRMLScalarVolumeNode", labels=False):
        import numpy as np

        array = np.zeros((6, 7, 8), dtype=np.int16)
        if labels:
            array[1:3, 1:3, 1:3] = 1
            array[3:5, 4:6, 5:7] = 2
        else:
            array[:] = np.arange(array.size).reshape(array.shape)
        ijkToRAS = np.array(
            [[0.0, -1.5, 0.0, 10.0], [2.0, 0.0, 0.0, -20.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]]
        )
        return slicer.util.addVolumeFromArray(array, ijkToRAS, "LWITestVolume", nodeClassName)

    def test_VolumeRoundTrip(self):
        """A volume written for the core reads back with the same voxels and the same geometry."""
        import numpy as np
        from LWICommon import files, mrml

        volume = self._makeVolume()
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        path = mrml.writeVolumeNode(volume, files.input_volume_path(runDir, volume.GetName()))
        loaded = slicer.util.loadVolume(path, {"show": False})
        m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(m1)
        loaded.GetIJKToRASMatrix(m2)
        np.testing.assert_allclose(
            slicer.util.arrayFromVTKMatrix(m1), slicer.util.arrayFromVTKMatrix(m2), atol=1e-5
        )
        np.testing.assert_array_equal(
            slicer.util.arrayFromVolume(volume), slicer.util.arrayFromVolume(loaded)
        )
        self.delayDisplay("Volume round trip passed")

    def test_LabelmapImport(self):
        """A label map file becomes one named, coloured segment per label, next to its reference."""
        from LWICommon import files, mrml
        from LWICommon.labels import segment_specs

        reference = self._makeVolume()
        labelmap = self._makeVolume("vtkMRMLLabelMapVolumeNode", labels=True)
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        path = mrml.writeVolumeNode(labelmap, os.path.join(runDir, "labels.nrrd"))
        specs = segment_specs(
            [
                {"value": 1, "name": "liver", "color": [221, 130, 101]},
                {"value": 2, "name": "kidney_left", "color": [185, 102, 83]},
            ]
        )
        segmentationNode = mrml.importLabelmap(path, specs, reference, show3D=True)
        segmentation = segmentationNode.GetSegmentation()
        names = sorted(
            segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())
        )
        self.assertEqual(names, ["kidney_left", "liver"])
        liver = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("liver"))
        self.assertAlmostEqual(liver.GetColor()[0], 221 / 255.0, places=3)
        self.assertTrue(liver.HasTag(liver.GetTerminologyEntryTagName()))
        self.assertTrue(segmentationNode.GetSegmentation().ContainsRepresentation("Closed surface"))
        self.delayDisplay("Label map import passed")

    def test_ProcessRunner(self):
        """A background process reports JSON progress and can be cancelled."""
        import shutil
        import sys
        import time

        from LWICommon import cli_args
        from LWICommon.process import ProcessRunner

        python = cli_args.python_executable(current=sys.executable)
        if not shutil.which(python) and not os.path.isfile(python):
            # Not skipTest: Reload and Test calls runTest directly and reports SkipTest as a failure.
            self.delayDisplay("Skipped process runner: PythonSlicer not found")
            return
        script = "import json,time\nfor i in range(3):\n print(json.dumps({'event':'progress','fraction':(i+1)/3}),flush=True)\ntime.sleep(60)\n"
        runner = ProcessRunner([python, "-c", script]).start()
        events = []
        for _attempt in range(200):
            events += runner.poll()
            if len(events) >= 3:
                break
            time.sleep(0.05)
        runner.cancel()
        self.assertEqual([e["fraction"] for e in events[:3]], [1 / 3, 2 / 3, 1.0])
        self.assertTrue(runner.cancelled)
        self.delayDisplay("Process runner passed")

    # -- with the core (torch, MONAI) ------------------------------------------------------
    def _core(self, code: str) -> str:
        """Run ``code`` in the core's Python (PythonSlicer) and return its stdout."""
        import subprocess
        import sys

        from LWICommon import cli_args
        from LWICommon.process import no_window_kwargs
        from LWICommon.slicer_setup import coreEnvironment

        python = cli_args.python_executable(current=sys.executable)
        done = subprocess.run(
            [python, "-c", code], env=coreEnvironment(), capture_output=True, text=True, encoding="utf-8", timeout=600,
            **no_window_kwargs(),
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
        return done.stdout.strip()

    def _coreStatus(self):
        """``(ready, cuda)``: whether the core runs here, and whether it sees a CUDA GPU."""
        try:
            return True, self._core("import monai, torch; print(int(torch.cuda.is_available()))") == "1"
        except Exception:
            return False, False

    def _tinyModel(self, folder: str) -> str:
        """A tiny SegResNet bundle (labels liver, spleen) whose output favours liver, so every
        segmentation is non-empty whatever the random weights."""
        path = os.path.join(folder, "selftest.lwi.safetensors")
        self._core(
            "import torch\n"
            "from lwi.architectures import build\n"
            "from lwi.bundle import save_bundle\n"
            "torch.manual_seed(0)\n"
            "a = build('segresnet', 1, 3, (16, 16, 16), init_filters=8, blocks_down=[1, 1], blocks_up=[1],"
            " norm=['GROUP', {'num_groups': 4}])\n"
            "bias = [p for p in a.parameters() if p.ndim == 1 and p.numel() == 3][-1]\n"
            "bias.data[:] = torch.tensor([0.0, 5.0, 0.0])\n"
            f"save_bundle({path!r}, a, {{0: 'background', 1: 'liver', 2: 'spleen'}},"
            " {'orientation': 'RAS', 'spacing': [4.0, 4.0, 4.0], 'modality': 'CT'},"
            " provenance={'strategy': 'scratch', 'validation_dice': {'liver': 0.5, 'spleen': 0.25}})\n"
        )
        return path

    def _syntheticVolume(self):
        """A CT-like volume with a bright blob on an oblique grid."""
        import numpy as np

        k, j, i = np.mgrid[0:20, 0:32, 0:28]
        array = np.full((20, 32, 28), -1000, dtype=np.int16)
        array[((i - 14) ** 2 + (j - 16) ** 2 + (k - 10) ** 2 * 4) < 100] = 60
        c, s = np.cos(0.3), np.sin(0.3)
        ijkToRAS = np.array([[2.0 * c, -2.5 * s, 0, -30], [2.0 * s, 2.5 * c, 0, 10], [0, 0, 3.0, -40], [0, 0, 0, 1]])
        return slicer.util.addVolumeFromArray(array, ijkToRAS, "LWISyntheticCT")

    def test_SegmentSyntheticVolume(self):
        """A tiny model segments a synthetic volume: named segments, the input's geometry, non-empty;
        the second run reuses the loaded model."""
        import numpy as np
        from LWICommon import files

        ready, cuda = self._coreStatus()
        if not ready:
            self.delayDisplay("Skipped segmentation: the core's dependencies are not installed")
            return
        logic = LWISegmentationLogic()
        folder = files.make_run_dir(slicer.app.temporaryPath)
        modelPath = self._tinyModel(folder)
        entries = logic.listModels([folder])
        self.assertEqual([e.name for e in entries], ["selftest"])
        self.assertEqual(entries[0].labels, [(1, "liver"), (2, "spleen")])

        volume = self._syntheticVolume()
        before = slicer.util.arrayFromVolume(volume).copy()
        devices = ["cpu"] + (["cuda"] if cuda else [])  # GPU steps only when a GPU is present
        for device in devices:
            segmentationNode = logic.segment(volume, modelPath, device=device)
            segmentation = segmentationNode.GetSegmentation()
            names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
            self.assertIn("liver", names)
            self.assertTrue(set(names) <= {"liver", "spleen"})
            labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
            segmentIds = vtk.vtkStringArray()
            segmentIds.InsertNextValue(segmentation.GetSegmentIdBySegmentName("liver"))
            self.assertTrue(
                slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                    segmentationNode, segmentIds, labelmap, volume
                )
            )
            m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(m1)
            labelmap.GetIJKToRASMatrix(m2)
            np.testing.assert_allclose(
                slicer.util.arrayFromVTKMatrix(m1), slicer.util.arrayFromVTKMatrix(m2), atol=1e-4
            )
            labels = slicer.util.arrayFromVolume(labelmap)
            self.assertEqual(labels.shape, before.shape)
            self.assertGreater(int((labels > 0).sum()), 0)
            # A second volume (here: the same one again) does not load the model again.
            logic.segment(volume, modelPath, device=device)
            self.assertTrue(logic.lastResult["reused_model"])
            self.delayDisplay(f"Segmentation on {device} passed")
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)  # input untouched
        logic.shutdownWorker()

    def test_PreviewAndTrainingSet(self):
        """The Step-1 preview lies on the input's physical space; a segmentation becomes a training case."""
        import json

        from LWICommon import files

        ready, _cuda = self._coreStatus()
        if not ready:
            self.delayDisplay("Skipped preview: the core's dependencies are not installed")
            return
        logic = LWISegmentationLogic()
        folder = files.make_run_dir(slicer.app.temporaryPath)
        modelPath = self._tinyModel(folder)
        volume = self._syntheticVolume()
        preview = logic.makePreview(volume, numSubvolumes=4, maskRatio=0.4, cubeSize=4, seed=1, device="cpu")
        self.assertEqual(preview["info"]["num_subvolumes"], 4)
        self.assertEqual(sorted(preview["info"]["permutation"]), [0, 1, 2, 3])
        self.assertEqual(int(slicer.util.arrayFromVolume(preview["subvolumes"]).max()), 4)

        segmentationNode = logic.segment(volume, modelPath, device="cpu")
        segmentationNode.GetSegmentation().GetNthSegment(0).SetName("Liver")  # matched by name
        trainingFolder = os.path.join(folder, "training")
        added = logic.addToTrainingSet(volume, segmentationNode, modelPath, folder=trainingFolder)
        with open(os.path.join(trainingFolder, "dataset.json")) as f:
            dataset = json.load(f)
        self.assertEqual(dataset["labels"]["1"], "liver")
        self.assertEqual(len(dataset["training"]), 1)
        self.assertTrue(os.path.isfile(os.path.join(trainingFolder, "labelsTr", added.case + ".nrrd")))
        logic.shutdownWorker()
        self.delayDisplay("Preview and Add to training set passed")
