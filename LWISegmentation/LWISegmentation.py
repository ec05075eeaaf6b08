"""LWISegmentation: segment the loaded volume with an LWI model, in a background process.

This file is loaded by Slicer at start-up: it imports nothing heavy. torch, MONAI and the ``lwi``
core run in a separate Python process (``PythonSlicer -m lwi segment ...``); the helpers in
``LWICommon`` (next to this file) are plain Python.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Annotated, Callable, Optional

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
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
DEVICES = ["auto", "cuda", "cpu"]


class LWISegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LWI Segmentation"
        self.parent.categories = ["Segmentation"]
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
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    modelPath: pathlib.Path
    device: Annotated[str, Choice(DEVICES)] = "auto"
    show3D: bool = True


class LWISegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: holds no computation, calls :class:`LWISegmentationLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.task = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

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

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[LWISegmentationParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets are bound through their SlicerParameterName property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self.task is not None and self.task.running:
            return  # the button is Cancel while running
        ready = bool(
            self._parameterNode
            and self._parameterNode.inputVolume
            and os.path.isfile(str(self._parameterNode.modelPath))
        )
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = (
            "Segment the input volume." if ready else "Select an input volume and a model file."
        )

    def onApplyButton(self) -> None:
        if self.task.running:
            self.task.cancel()
            return
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            runner = self.logic.segment(
                p.inputVolume,
                str(p.modelPath),
                device=p.device,
                outputSegmentation=p.outputSegmentation,
                show3D=p.show3D,
                start=False,
                onImported=self._onImported,
            )
            self.task.log("Running: " + self.logic.lastCommand)
            self.task.start(runner)
        except Exception as e:
            slicer.util.errorDisplay(f"Segmentation could not start: {e}")
            logging.exception("LWISegmentation failed to start")

    def _onImported(self, segmentationNode) -> None:
        if self._parameterNode:
            self._parameterNode.outputSegmentation = segmentationNode


class LWISegmentationLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from the Python console without the GUI::

    from LWISegmentation import LWISegmentationLogic
    logic = LWISegmentationLogic()
    runner = logic.segment(volumeNode, "/path/liver.lwi.safetensors", device="cuda", wait=True)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastCommand = ""

    def getParameterNode(self):
        return LWISegmentationParameterNode(super().getParameterNode())

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch (through the PyTorch extension) and the core's other requirements are
        installed; asks once before installing. Returns False if the user declined."""
        from LWICommon.slicer_setup import installDependencies

        return installDependencies(askConfirmation)

    def segment(
        self,
        inputVolume,
        modelPath: str,
        device: str = "auto",
        outputSegmentation=None,
        show3D: bool = True,
        wait: bool = False,
        start: bool = True,
        onImported: Optional[Callable] = None,
    ):
        """Segment ``inputVolume`` with the model bundle ``modelPath`` in a background process.

        Returns the :class:`LWICommon.process.ProcessRunner` (started unless ``start=False``). When
        the run succeeds, the label map is imported into ``outputSegmentation`` (created if None) next
        to the input, and ``onImported(segmentationNode)`` is called. ``wait=True`` blocks until done
        and raises RuntimeError with the run's error message on failure.
        """
        from LWICommon import cli_args, files, mrml
        from LWICommon.labels import segment_specs
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment

        if inputVolume is None:
            raise ValueError("Select an input volume.")
        if not os.path.isfile(modelPath):
            raise ValueError(f"The model file {modelPath} does not exist.")
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        inputPath = mrml.writeVolumeNode(inputVolume, files.input_volume_path(runDir, inputVolume.GetName()))
        outputPath = files.output_labelmap_path(runDir, inputVolume.GetName())
        args = cli_args.segment_command(modelPath, inputPath, outputPath, device=device)
        self.lastCommand = cli_args.quote_command(args)
        metadata = self.modelInfo(modelPath)

        def onFinished(runner) -> None:
            if runner.returncode != 0 or runner.cancelled:
                return
            segmentationNode = mrml.importLabelmap(
                outputPath,
                segment_specs(metadata.get("labels", [])),
                inputVolume,
                outputSegmentation,
                show3D=show3D,
            )
            if onImported is not None:
                onImported(segmentationNode)

        runner = ProcessRunner(
            args, env=coreEnvironment(), cwd=runDir, temp_dir=runDir, on_finished=onFinished
        )
        if start or wait:
            runner.start()
        if wait:
            runner.wait()
            if runner.error_message():
                raise RuntimeError(runner.error_message())
        return runner

    def modelInfo(self, modelPath: str) -> dict:
        """The model's metadata (``lwi info MODEL --json``), read in a short subprocess."""
        from LWICommon.process import model_info
        from LWICommon.slicer_setup import coreEnvironment

        return model_info(modelPath, env=coreEnvironment())


class LWISegmentationTest(ScriptedLoadableModuleTest):
    """Tests run by Slicer (Reload and Test, and the extension's CTest). They need no GPU and no
    torch: they check the node <-> file round trip and the background process machinery."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_VolumeRoundTrip()
        self.setUp()
        self.test_LabelmapImport()
        self.setUp()
        self.test_ProcessRunner()

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
            self.skipTest("PythonSlicer not found")
        script = "import json,time\nfor i in range(3):\n print(json.dumps({'event':'progress','fraction':(i+1)/3}),flush=True)\ntime.sleep(60)\n"
        runner = ProcessRunner([python, "-c", script]).start()
        events = []
        for _ in range(200):
            events += runner.poll()
            if len(events) >= 3:
                break
            time.sleep(0.05)
        runner.cancel()
        self.assertEqual([e["fraction"] for e in events[:3]], [1 / 3, 2 / 3, 1.0])
        self.assertTrue(runner.cancelled)
        self.delayDisplay("Process runner passed")
