"""LWITraining: train a segmentation model with LWI initialisation, in a background process.

This file is loaded by Slicer at start-up: it imports nothing heavy. Training runs in a separate
Python process (``PythonSlicer -m lwi train ...``); the helpers in ``LWICommon`` are plain Python
and are installed with the LWISegmentation module, in the same folder as this file.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
from typing import Annotated, Any, Dict, Optional

import slicer
import vtk
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
STRATEGIES = ["lwi", "scratch", "medcontext", "anatomask"]
ARCHITECTURES = ["unetr", "swinunetr", "mednext", "segresnet"]
DEVICES = ["auto", "cuda", "cpu"]


def _ensureCommonImportable() -> None:
    """Make ``import LWICommon`` work: installed, it sits next to this file; in a source checkout it
    is in the sibling LWISegmentation folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.join(os.path.dirname(here), "LWISegmentation")):
        if os.path.isfile(os.path.join(candidate, "LWICommon", "__init__.py")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return


class LWITraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LWI Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LWI extension developers"]
        self.parent.helpText = (
            "Train a segmentation network on a few labelled cases, initialised by the self-supervised "
            "Learnable Weight Initialization step, then use the model in the LWI Segmentation module. "
            f'Training runs in a separate process. See the <a href="{README_URL}">LWI documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Learnable Weight Initialization (LWI) is the method of: "
            + PAPER_CITATION
            + " Networks, losses and training utilities come from MONAI."
        )


@parameterNodeWrapper
class LWITrainingParameterNode:
    """The module's settings, saved with the scene.

    dataFolder: the training cases (MSD layout or imagesTr/ + labelsTr/).
    modelsFolder: where the trained model bundle is written.
    modelName: the model's file name (without ``.lwi.safetensors``).
    strategy, architecture, epochs, pretrainEpochs, device: the ``lwi train`` options.
    """

    dataFolder: pathlib.Path
    modelsFolder: pathlib.Path
    modelName: str = "model"
    strategy: Annotated[str, Choice(STRATEGIES)] = "lwi"
    architecture: Annotated[str, Choice(ARCHITECTURES)] = "unetr"
    epochs: Annotated[int, WithinRange(1, 100000)] = 200
    pretrainEpochs: Annotated[int, WithinRange(0, 100000)] = 100
    device: Annotated[str, Choice(DEVICES)] = "auto"


class LWITrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: holds no computation, calls :class:`LWITrainingLogic`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.task = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LWITraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        _ensureCommonImportable()
        from LWICommon.gui import TaskPanel

        self.logic = LWITrainingLogic()
        self.task = TaskPanel(
            self.ui.trainButton, self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit
        )

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[LWITrainingParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets are bound through their SlicerParameterName property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanTrain)
            self._checkCanTrain()

    def _checkCanTrain(self, caller=None, event=None) -> None:
        if self.task is not None and self.task.running:
            return  # the button is Cancel while running
        p = self._parameterNode
        ready = bool(p and os.path.isdir(str(p.dataFolder)) and p.modelName.strip())
        self.ui.trainButton.enabled = ready
        self.ui.trainButton.toolTip = (
            "Train a model." if ready else "Select a data folder and name the model."
        )

    def onTrainButton(self) -> None:
        if self.task.running:
            self.task.cancel()
            return
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            runner = self.logic.train(
                str(p.dataFolder),
                str(p.modelsFolder),
                p.modelName,
                strategy=p.strategy,
                options={"arch": p.architecture, "epochs": p.epochs, "pretrain_epochs": p.pretrainEpochs},
                device=p.device,
                start=False,
            )
            self.task.log("Running: " + self.logic.lastCommand)
            self.task.start(runner)
        except Exception as e:
            slicer.util.errorDisplay(f"Training could not start: {e}")
            logging.exception("LWITraining failed to start")


class LWITrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from the Python console without the GUI::

    from LWITraining import LWITrainingLogic
    runner = LWITrainingLogic().train("/data/Task04_Hippocampus", "/models", "hippocampus", wait=True)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastCommand = ""

    def getParameterNode(self):
        return LWITrainingParameterNode(super().getParameterNode())

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch and the core's requirements are installed (asks once); False if declined."""
        _ensureCommonImportable()
        from LWICommon.slicer_setup import installDependencies

        return installDependencies(askConfirmation)

    def train(
        self,
        dataFolder: str,
        modelsFolder: str,
        modelName: str,
        strategy: str = "lwi",
        options: Optional[Dict[str, Any]] = None,
        device: str = "auto",
        wait: bool = False,
        start: bool = True,
    ):
        """Train a model on the cases in ``dataFolder`` and write ``modelsFolder/modelName.lwi.safetensors``.

        ``options`` are further ``lwi train`` options (``arch``, ``epochs``, ``pretrain_epochs``,
        ``roi``, ``seed``, ...). Returns the :class:`LWICommon.process.ProcessRunner` (started unless
        ``start=False``); ``wait=True`` blocks and raises RuntimeError with the run's error message.
        """
        _ensureCommonImportable()
        from LWICommon import cli_args, files
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment

        if not os.path.isdir(dataFolder):
            raise ValueError(f"The data folder {dataFolder} does not exist.")
        modelsFolder = modelsFolder if modelsFolder and modelsFolder != "." else files.default_models_folder()
        os.makedirs(modelsFolder, exist_ok=True)
        outputPath = files.model_path(modelsFolder, modelName)
        args = cli_args.train_command(
            dataFolder, outputPath, strategy=strategy, device=device, options=options
        )
        self.lastCommand = cli_args.quote_command(args)
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        runner = ProcessRunner(args, env=coreEnvironment(), cwd=runDir, temp_dir=runDir)
        if start or wait:
            runner.start()
        if wait:
            runner.wait()
            if runner.error_message():
                raise RuntimeError(runner.error_message())
        return runner


class LWITrainingTest(ScriptedLoadableModuleTest):
    """Tests run by Slicer. They need no GPU and no torch."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ParameterNodeDefaults()
        self.setUp()
        self.test_MissingDataFolder()

    def test_ParameterNodeDefaults(self):
        """The parameter node starts with the documented defaults and keeps what is set."""
        parameterNode = LWITrainingLogic().getParameterNode()
        self.assertEqual(parameterNode.strategy, "lwi")
        self.assertEqual(parameterNode.architecture, "unetr")
        parameterNode.epochs = 5
        self.assertEqual(LWITrainingLogic().getParameterNode().epochs, 5)
        self.delayDisplay("Parameter node passed")

    def test_MissingDataFolder(self):
        """Training a folder that does not exist fails before anything starts, with a clear message."""
        with self.assertRaises(ValueError):
            LWITrainingLogic().train(
                os.path.join(slicer.app.temporaryPath, "no-such-folder"), "", "model", start=False
            )
        self.delayDisplay("Missing data folder passed")
