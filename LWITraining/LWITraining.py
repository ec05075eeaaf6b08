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
from typing import Annotated, Any, Callable, Dict, List, Optional, Sequence, Tuple

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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
ROI_SIZES = [32, 64, 96, 128, 160]
#: Sub-folder of the models folder where each model's training run lives (data, checkpoints).
RUNS_FOLDER = "training-runs"
CASE_COLUMNS = ["Case", "Source", "Segments", "Status"]


def _ensureCommonImportable() -> None:
    """Make ``import LWICommon`` work: installed, it sits next to this file; in a source checkout it
    is in the sibling LWISegmentation folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (here, os.path.join(os.path.dirname(here), "LWISegmentation")):
        if os.path.isfile(os.path.join(candidate, "LWICommon", "__init__.py")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return


def _vocabulary():
    """The core's names (lwi/names.py, through LWICommon: torch-free), needed at load time."""
    _ensureCommonImportable()
    from LWICommon.vocabulary import names

    return names


_names = _vocabulary()
STRATEGIES = list(_names.STRATEGY_NAMES)  # exactly the core's registry
ARCHITECTURES = list(_names.ARCHITECTURE_NAMES)
DEVICES = list(_names.DEVICE_CHOICES)
INTENSITY_PRESETS = list(_names.MODALITY_CHOICES)


class LWITraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LWI Training"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["LWI extension developers"]
        self.parent.helpText = (
            "Train a segmentation network on a few labelled cases (volumes with segmentations in the "
            "scene, or a dataset folder), initialised by the self-supervised Learnable Weight "
            "Initialization step, then use the model in the LWI Segmentation module. "
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

    caseVolume, caseSegmentation: a volume and its segmentation to add as one training case.
    dataFolder: a dataset folder whose cases are added (MSD layout or imagesTr/ + labelsTr/).
    modelsFolder: where the trained model is written (empty: the application setting, else ~/LWI/models).
    modelName: the model's file name (without ``.lwi.safetensors``).
    strategy, architecture, pretrainEpochs (Step 1), epochs (Step 2), roiSize, targetSpacing (mm, empty:
    the cases' median), intensityPreset, device: the main ``lwi train`` settings.
    learningRate, maskRatio, cubeSize, batchSize: the advanced ones.
    """

    caseVolume: vtkMRMLScalarVolumeNode
    caseSegmentation: vtkMRMLSegmentationNode
    dataFolder: pathlib.Path
    modelsFolder: pathlib.Path
    modelName: str = "model"
    strategy: Annotated[str, Choice(STRATEGIES)] = "lwi"
    architecture: Annotated[str, Choice(ARCHITECTURES)] = "unetr"
    pretrainEpochs: Annotated[int, WithinRange(1, 100000)] = 100
    epochs: Annotated[int, WithinRange(1, 100000)] = 300
    roiSize: Annotated[int, Choice(ROI_SIZES)] = 96
    targetSpacing: str = ""
    intensityPreset: Annotated[str, Choice(INTENSITY_PRESETS)] = "auto"
    device: Annotated[str, Choice(DEVICES)] = "auto"
    learningRate: Annotated[float, WithinRange(1e-7, 1.0)] = 1e-4
    maskRatio: Annotated[float, WithinRange(0.0, 0.95)] = 0.4
    cubeSize: Annotated[int, WithinRange(2, 64)] = 16
    batchSize: Annotated[int, WithinRange(1, 64)] = 2


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
        self.ui.casesTableWidget.setColumnCount(len(CASE_COLUMNS))
        self.ui.casesTableWidget.setHorizontalHeaderLabels(CASE_COLUMNS)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.addSceneCasesButton.connect("clicked(bool)", self.onAddSceneCases)
        self.ui.addPairButton.connect("clicked(bool)", self.onAddPair)
        self.ui.addFolderCasesButton.connect("clicked(bool)", self.onAddFolderCases)
        self.ui.clearCasesButton.connect("clicked(bool)", self.onClearCases)
        self.ui.previewButton.connect("clicked(bool)", self.onPreview)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResumeButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.logic.clearCases()
        self._showCases()
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[LWITrainingParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            if self._parameterNode.strategy not in STRATEGIES:  # a scene saved with a strategy now gone
                self._parameterNode.strategy = _names.DEFAULT_STRATEGY
            # Widgets are bound through their SlicerParameterName property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self.task is not None and self.task.running
        included = len(self.logic.trainingSet.included) if self.logic.trainingSet else 0
        name = p.modelName.strip() if p else ""
        self.ui.addPairButton.enabled = bool(p and p.caseVolume and p.caseSegmentation)
        self.ui.addFolderCasesButton.enabled = bool(p and os.path.isdir(str(p.dataFolder)))
        self.ui.previewButton.enabled = bool(self._selectedCase() is not None)
        canResume = bool(p and name and not running and self.logic.canResume(name, self._modelsFolder()))
        self.ui.resumeButton.enabled = canResume
        self.ui.segmentButton.enabled = bool(self.logic.lastModelPath and not running)
        if running:
            return  # the Train button is Cancel while running
        ready = bool(p and included and name)
        self.ui.trainButton.enabled = ready
        self.ui.trainButton.toolTip = (
            f"Train on {included} case(s)." if ready else "Add training cases and name the model."
        )

    def _modelsFolder(self) -> str:
        p = self._parameterNode
        return self.logic.modelsFolder(str(p.modelsFolder) if p and str(p.modelsFolder) not in ("", ".") else None)

    # -- cases -------------------------------------------------------------------------------
    def _run(self, what: str, function: Callable[[], Any]) -> Any:
        try:
            return function()
        except Exception as e:
            logging.exception(what)
            slicer.util.errorDisplay(f"{what} failed: {e}")
            return None
        finally:
            self._showCases()

    def onAddSceneCases(self) -> None:
        self._run("Adding the scene's cases", lambda: self.logic.addCases(self.logic.collectCasesFromNodes()))

    def onAddPair(self) -> None:
        p = self._parameterNode
        self._run(
            "Adding the case",
            lambda: self.logic.addCases(self.logic.collectCasesFromNodes([(p.caseVolume, p.caseSegmentation)])),
        )

    def onAddFolderCases(self) -> None:
        folder = str(self._parameterNode.dataFolder)
        self._run("Reading the folder", lambda: self.logic.addCases(self.logic.collectCasesFromFolder(folder)))

    def onClearCases(self) -> None:
        self.logic.clearCases()
        self._showCases()

    def _showCases(self) -> None:
        table = self.ui.casesTableWidget
        rows = self.logic.trainingSet.table() if self.logic.trainingSet else []
        table.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, text in enumerate(values):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(text)
                table.setItem(r, c, item)
        ts = self.logic.trainingSet
        if ts:
            labels = ", ".join(f"{v}: {n}" for v, n in sorted(ts.labels.items()))
            self.ui.casesSummaryLabel.text = (
                f"{len(ts.included)} case(s) will be trained on, {len(ts.excluded)} excluded. Labels: {labels or 'none'}."
            )
        else:
            self.ui.casesSummaryLabel.text = "No cases yet."
        self._updateButtons()

    def _selectedCase(self):
        ts = self.logic.trainingSet
        if not ts or not ts.rows:
            return None
        row = self.ui.casesTableWidget.currentRow()
        return ts.rows[row].source if 0 <= row < len(ts.rows) else ts.rows[0].source

    # -- actions -----------------------------------------------------------------------------
    def _settings(self):
        p = self._parameterNode
        return self.logic.settingsFromParameterNode(p)

    def onPreview(self) -> None:
        case = self._selectedCase()
        self._run("The preview", lambda: self.logic.showPreview(case, self._settings()))

    def onTrainButton(self) -> None:
        if self.task.running:
            self.task.cancel()  # the core's last checkpoint stays: Resume continues from it
            return
        self._start(resume=False)

    def onResumeButton(self) -> None:
        self._start(resume=True)

    def _start(self, resume: bool) -> None:
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            kwargs = dict(modelsFolder=self._modelsFolder(), start=False, onEvent=self._onEvent)
            if resume:
                runner = self.logic.resume(p.modelName, epochs=p.epochs, pretrainEpochs=p.pretrainEpochs, **kwargs)
            else:
                runner = self.logic.train(self.logic.trainingSet, p.modelName, settings=self._settings(), **kwargs)
            self.task.log("Running: " + self.logic.lastCommand)
            self.ui.stageLabel.text = "Starting..."
            self.task.start(runner, onDone=self._onDone)
            self.ui.resumeButton.enabled = False
        except Exception as e:
            slicer.util.errorDisplay(f"Training could not start: {e}")
            logging.exception("LWITraining failed to start")

    def _onEvent(self, event: Dict[str, Any]) -> None:
        if event.get("event") == "progress":
            self.ui.stageLabel.text = self.logic.stageText(event)

    def _onDone(self, runner) -> None:
        if runner.cancelled:
            self.ui.stageLabel.text = "Cancelled: the last checkpoint is kept; Resume continues from it."
        elif runner.returncode == 0:
            self.ui.stageLabel.text = f"Model saved: {self.logic.lastModelPath}"
        else:
            self.ui.stageLabel.text = "Failed; Resume continues from the last checkpoint, if one was saved."
        self._updateButtons()

    def onSegmentButton(self) -> None:
        volume = self._parameterNode.caseVolume or slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if volume is None:
            slicer.util.errorDisplay("Load or select a volume to segment.")
            return
        self._run("Segmenting", lambda: self.logic.segmentWithModel(volume, device=self._parameterNode.device))


class LWITrainingLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from the Python console without the GUI::

        logic = slicer.util.getModuleLogic("LWITraining")
        cases = logic.collectCasesFromNodes([(volume1, segmentation1), (volume2, segmentation2)])
        logic.addCases(cases)                       # the table: logic.trainingSet.table()
        logic.train(logic.trainingSet, "liver", settings={"epochs": 50}, wait=True)
        logic.segmentWithModel(volume3, wait=True)  # with the model just trained

    Training runs ``lwi train`` in a background process (:class:`LWICommon.process.ProcessRunner`);
    ``wait=True`` blocks until it ends. Each model has a run folder (``<models>/training-runs/<name>/``:
    the exported cases and the checkpoints), so a cancelled or failed run can be resumed.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        _ensureCommonImportable()
        self.lastCommand = ""
        self.lastModelPath: Optional[str] = None
        self.runner = None
        self.sources: List[Any] = []
        self.trainingSet = None
        self.curves = None
        self.chartNode = None
        self._stagingDir: Optional[str] = None

    def getParameterNode(self):
        return LWITrainingParameterNode(super().getParameterNode())

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch and the core's requirements are installed (asks once); False if declined."""
        from LWICommon.slicer_setup import installDependencies

        return installDependencies(askConfirmation)

    # -- folders -----------------------------------------------------------------------------
    def modelsFolder(self, folder: Optional[str] = None) -> str:
        """Where models go: ``folder`` if given, else the ``LWI/ModelsFolder`` application setting,
        else ``~/LWI/models`` (created)."""
        from LWICommon import files

        folder = files.models_folder(folder)
        os.makedirs(folder, exist_ok=True)
        return folder

    def runFolder(self, modelName: str, modelsFolder: Optional[str] = None) -> str:
        """The folder of a model's training run: its exported cases (``data/``) and checkpoints."""
        from LWICommon import files

        return os.path.join(self.modelsFolder(modelsFolder), RUNS_FOLDER, files.safe_stem(modelName, "model"))

    def canResume(self, modelName: str, modelsFolder: Optional[str] = None) -> bool:
        """Whether an interrupted run of ``modelName`` left a checkpoint to continue from."""
        from LWICommon import files

        run = self.runFolder(modelName, modelsFolder)
        out = files.model_path(run, modelName)
        settingsFile = os.path.join(run, "settings.json")
        # The core's naming of a run's resumable files (lwi.names.derived_path).
        return os.path.isfile(settingsFile) and any(
            _names.derived_path(out, infix).is_file() for infix in (_names.LAST_INFIX, _names.STEP1_INFIX)
        )

    # -- cases -------------------------------------------------------------------------------
    def _staging(self) -> str:
        from LWICommon import files

        if not self._stagingDir or not os.path.isdir(self._stagingDir):
            self._stagingDir = files.make_run_dir(slicer.app.temporaryPath, prefix="lwi-cases-")
        return self._stagingDir

    def collectCasesFromNodes(self, pairs: Optional[Sequence[Tuple[Any, Any]]] = None) -> List[Any]:
        """Training cases from the scene: ``pairs`` of (volume node, segmentation node), or every
        segmentation node with the volume it was drawn on (its reference geometry volume).

        Each case is written to files (image and a label map of its segments, on the volume's grid);
        returns :class:`LWICommon.cases.CaseSource` objects. A segmentation without a volume, or
        without segments, becomes a case with that problem.
        """
        from LWICommon import cases, files, mrml

        if pairs is None:
            pairs = []
            for segmentationNode in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
                role = segmentationNode.GetReferenceImageGeometryReferenceRole()
                pairs.append((segmentationNode.GetNodeReference(role), segmentationNode))
        sources = []
        folder = self._staging()
        for index, (volumeNode, segmentationNode) in enumerate(pairs):
            name = volumeNode.GetName() if volumeNode else segmentationNode.GetName()
            if volumeNode is None:
                sources.append(cases.CaseSource(name, None, None, {}, problems=["no volume: select its volume and Add pair"]))
                continue
            segmentation = segmentationNode.GetSegmentation()
            segmentIds = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            segments = {i + 1: segmentation.GetSegment(sid).GetName() for i, sid in enumerate(segmentIds)}
            stem = f"{index:03d}-{files.safe_stem(name)}"
            imagePath = mrml.writeVolumeNode(volumeNode, os.path.join(folder, stem + ".nrrd"))
            labelPath = os.path.join(folder, stem + "-label.nrrd")
            if segmentIds:
                self._writeSegmentsAsLabelmap(segmentationNode, segmentIds, volumeNode, labelPath)
            sources.append(cases.CaseSource(name, imagePath, labelPath if segmentIds else None, segments))
        return sources

    def _writeSegmentsAsLabelmap(self, segmentationNode, segmentIds, volumeNode, path: str) -> None:
        """Segment i of ``segmentIds`` -> value i + 1, on ``volumeNode``'s grid."""
        from LWICommon import mrml

        ids = vtk.vtkStringArray()
        for segmentId in segmentIds:
            ids.InsertNextValue(segmentId)
        labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                segmentationNode, ids, labelmapNode, volumeNode
            ):
                raise RuntimeError(f"Could not export the segments of {segmentationNode.GetName()}.")
            mrml.writeVolumeNode(labelmapNode, path)
        finally:
            slicer.mrmlScene.RemoveNode(labelmapNode)

    def collectCasesFromFolder(self, folder: str) -> List[Any]:
        """Training cases from a dataset folder (MSD layout, or the folder "Add to training set" fills)."""
        from LWICommon import cases

        return cases.folder_cases(folder)

    def addCases(self, sources: Sequence[Any], labels: Optional[Sequence[str]] = None):
        """Add cases to the training set and match all of them again by segment name; returns the
        :class:`LWICommon.cases.TrainingSet` (also in :attr:`trainingSet`). ``labels`` picks the
        structures to train (default: those most cases have)."""
        from LWICommon import cases

        known = {(s.image, s.label) for s in self.sources}
        self.sources += [s for s in sources if (s.image, s.label) not in known or s.image is None]
        self.trainingSet = cases.match_cases(self.sources, labels=labels)
        return self.trainingSet

    def clearCases(self) -> None:
        """Forget the collected cases."""
        self.sources = []
        self.trainingSet = None

    # -- settings ----------------------------------------------------------------------------
    def settingsFromParameterNode(self, p):
        """The :class:`LWICommon.training_settings.TrainingSettings` the panel shows."""
        from LWICommon.training_settings import TrainingSettings, parse_spacing

        return TrainingSettings(
            architecture=p.architecture,
            strategy=p.strategy,
            pretrain_epochs=p.pretrainEpochs,
            epochs=p.epochs,
            roi=(p.roiSize,) * 3,
            spacing=parse_spacing(p.targetSpacing),
            intensity=p.intensityPreset,
            device=p.device,
            model_name=p.modelName,
            learning_rate=p.learningRate,
            mask_ratio=p.maskRatio,
            cube_size=p.cubeSize,
            batch_size=p.batchSize,
        )

    @staticmethod
    def _settings(settings, modelName: str):
        from LWICommon.training_settings import TrainingSettings

        if settings is None:
            settings = TrainingSettings()
        elif isinstance(settings, dict):
            settings = TrainingSettings.from_dict(settings)
        settings.model_name = modelName
        problems = settings.problems()
        if problems:
            raise ValueError(" ".join(problems))
        return settings

    # -- training ----------------------------------------------------------------------------
    def train(
        self,
        cases,
        modelName: str,
        settings=None,
        modelsFolder: Optional[str] = None,
        wait: bool = False,
        onEvent: Optional[Callable[[Dict[str, Any]], None]] = None,
        onFinished: Optional[Callable[[Any], None]] = None,
        start: bool = True,
        plot: bool = True,
    ):
        """Train a model called ``modelName`` on ``cases`` and save it in the models folder.

        Args:
            cases: a :class:`LWICommon.cases.TrainingSet`, a list of ``CaseSource`` (from
                :meth:`collectCasesFromNodes` / :meth:`collectCasesFromFolder`), or a dataset folder.
            settings: a ``TrainingSettings`` or a dict of its fields (``epochs``, ``pretrain_epochs``,
                ``architecture``, ``roi``, ``device``, ...); None: the defaults.
            modelsFolder: where the model goes (default: :meth:`modelsFolder`).
            wait: block until training ends; raises RuntimeError with the run's message on failure.
            onEvent: called with each progress/log event of the run.
            onFinished: called with the runner when the run is over (whatever the outcome).
            start: False returns the runner unstarted (the panel starts it).
            plot: show the losses and validation Dice in a plot chart while training.

        Returns the :class:`LWICommon.process.ProcessRunner`. Excluded cases are logged with their reasons.
        """
        from LWICommon import cases as caselib

        settings = self._settings(settings, modelName)
        if isinstance(cases, str):
            cases = caselib.match_cases(caselib.folder_cases(cases))
        elif not isinstance(cases, caselib.TrainingSet):
            cases = caselib.match_cases(list(cases))
        if not cases.included:
            reasons = "; ".join(f"{r.name}: {r.status()}" for r in cases.rows) or "no cases were given"
            raise ValueError(f"No case can be trained on ({reasons}).")
        for row in cases.excluded:
            logging.warning(f"LWITraining: case {row.name} is left out: {'; '.join(row.problems)}")

        run = self.runFolder(modelName, modelsFolder)
        data = os.path.join(run, "data")
        if os.path.isdir(data):
            import shutil

            shutil.rmtree(data)
        os.makedirs(run, exist_ok=True)
        # Scene cases live in a temporary folder: copy their images; folder cases stay where they are.
        scene = [r for r in cases.included if r.source.origin != caselib.FOLDER]
        folder = [r for r in cases.included if r.source.origin == caselib.FOLDER]
        modality = None if settings.intensity == "auto" else settings.intensity
        for rows, copy in ((scene, True), (folder, False)):
            if rows:
                part = caselib.TrainingSet(cases.labels, rows)
                caselib.export_cases(part, data, modality=modality, copy_images=copy, name=modelName)
        self._writeRunSettings(run, settings, modelsFolder)
        return self._launch(run, settings, modelsFolder, False, wait, onEvent, onFinished, start, plot)

    def resume(
        self,
        modelName: str,
        modelsFolder: Optional[str] = None,
        epochs: Optional[int] = None,
        pretrainEpochs: Optional[int] = None,
        wait: bool = False,
        onEvent: Optional[Callable[[Dict[str, Any]], None]] = None,
        onFinished: Optional[Callable[[Any], None]] = None,
        start: bool = True,
        plot: bool = True,
    ):
        """Continue an interrupted (cancelled or failed) run of ``modelName`` from its last
        checkpoint, with its own cases and settings; only the numbers of epochs may change."""
        import json

        from LWICommon.training_settings import TrainingSettings

        if not self.canResume(modelName, modelsFolder):
            raise ValueError(f"There is no interrupted training of '{modelName}' to resume.")
        run = self.runFolder(modelName, modelsFolder)
        with open(os.path.join(run, "settings.json"), encoding="utf-8") as f:
            settings = TrainingSettings.from_dict(json.load(f)["settings"])
        if epochs:
            settings.epochs = int(epochs)
        if pretrainEpochs:
            settings.pretrain_epochs = int(pretrainEpochs)
        return self._launch(run, settings, modelsFolder, True, wait, onEvent, onFinished, start, plot)

    def _writeRunSettings(self, run: str, settings, modelsFolder: Optional[str]) -> None:
        import json

        with open(os.path.join(run, "settings.json"), "w", encoding="utf-8") as f:
            json.dump({"settings": settings.to_dict(), "modelsFolder": modelsFolder}, f, indent=2)

    def _launch(self, run, settings, modelsFolder, resume, wait, onEvent, onFinished, start, plot):
        from LWICommon import files, training_settings
        from LWICommon.plots import TrainingCurves
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment

        if self.runner is not None and self.runner.running:
            raise RuntimeError("A training is already running: cancel it first.")
        checkpoint = files.model_path(run, settings.model_name)
        finalPath = files.model_path(self.modelsFolder(modelsFolder), settings.model_name)
        args = training_settings.train_args(
            settings, os.path.join(run, "data"), checkpoint, resume=resume, overwrite=not resume
        )
        self.lastCommand = training_settings.cli_args.quote_command(args)
        self.curves = TrainingCurves()

        def eventReceived(event) -> None:
            if plot and self.curves.add(event):
                self.updatePlot()
            if onEvent is not None:
                onEvent(event)

        def finished(runner) -> None:
            if runner.returncode == 0 and not runner.cancelled and os.path.isfile(checkpoint):
                self._publishModel(checkpoint, finalPath)
            if onFinished is not None:
                onFinished(runner)

        # No temp_dir: cancelling must keep the run folder and its checkpoints (for Resume).
        self.runner = ProcessRunner(args, env=coreEnvironment(), cwd=run, on_event=eventReceived, on_finished=finished)
        if start or wait:
            self.runner.start()
        if wait:
            self.runner.wait()
            if self.runner.error_message():
                raise RuntimeError(self.runner.error_message())
        return self.runner

    def _publishModel(self, checkpoint: str, finalPath: str) -> None:
        """Copy the trained bundle into the models folder (atomically) and show it in LWISegmentation."""
        import shutil

        partial = finalPath + ".partial"
        shutil.copyfile(checkpoint, partial)
        os.replace(partial, finalPath)
        self.lastModelPath = finalPath
        logging.info(f"LWITraining: model saved to {finalPath}")
        try:
            import LWISegmentation

            # The LWISegmentation panel is bound to its parameter node: it shows the new model at once.
            segmentationParameters = LWISegmentation.LWISegmentationLogic().getParameterNode()
            segmentationParameters.modelPath = pathlib.Path(finalPath)
        except Exception:  # the other module missing must not turn a finished training into a failure
            logging.exception("LWITraining: could not select the new model in LWI Segmentation")

    def cancel(self) -> None:
        """Stop the running training; the last checkpoint is kept, so :meth:`resume` continues from it."""
        if self.runner is not None:
            self.runner.cancel()

    def stageText(self, event: Dict[str, Any]) -> str:
        """``"Step 2: fine-tuning, epoch 12/300, ETA 3 min 10 s"`` for a progress event."""
        from LWICommon.plots import stage_title
        from LWICommon.process import format_duration

        text = stage_title(event.get("stage"))
        if event.get("epoch") is not None and event.get("epochs"):
            text += f", epoch {event['epoch']}/{event['epochs']}"
        eta = format_duration(event.get("eta_seconds"))
        return text + (f", ETA {eta}" if eta else "")

    # -- plot --------------------------------------------------------------------------------
    def updatePlot(self, show: bool = True) -> None:
        """Copy :attr:`curves` into table nodes and draw them in one plot chart (losses and
        validation Dice against the run's epoch)."""
        import numpy as np
        from LWICommon.plots import X_COLUMN

        if self.curves is None:
            return
        if self.chartNode is None or self.chartNode.GetScene() is None:
            self.chartNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", "LWI training")
            self.chartNode.SetTitle("LWI training: losses and validation Dice")
            self.chartNode.SetXAxisTitle("epoch")
            self.chartNode.SetYAxisTitle("loss / Dice")
            self._tables, self._series = {}, {}
            if show:
                slicer.modules.plots.logic().ShowChartInLayout(self.chartNode)
        for table in ("step1", "step2", "validation"):
            columns, rows = self.curves.table(table)
            if not rows:
                continue
            if table not in self._tables:
                self._tables[table] = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", f"LWI training {table}")
            slicer.util.updateTableFromArray(self._tables[table], np.asarray(rows, dtype=float), columns)
        for spec in self.curves.series():
            if spec.name in self._series:
                continue
            seriesNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", spec.name)
            seriesNode.SetAndObserveTableNodeID(self._tables[spec.table].GetID())
            seriesNode.SetXColumnName(X_COLUMN)
            seriesNode.SetYColumnName(spec.column)
            seriesNode.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            seriesNode.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            self.chartNode.AddAndObservePlotSeriesNodeID(seriesNode.GetID())
            self._series[spec.name] = seriesNode

    # -- using the result --------------------------------------------------------------------
    def showPreview(self, case, settings=None):
        """The Step-1 shuffle/mask preview of a training case (a ``CaseSource`` or a volume node),
        with these training settings (arch, ROI, mask ratio, cube size, spacing, intensity), made by
        the LWISegmentation module's preview."""
        import LWISegmentation

        settings = self._settings(settings, getattr(settings, "model_name", None) or "preview")
        segmentationLogic = LWISegmentation.LWISegmentationLogic()
        if not hasattr(segmentationLogic, "preview"):
            raise RuntimeError("This version of LWI Segmentation has no preview.")
        volumeNode = case
        if hasattr(case, "image"):
            if not case.image:
                raise ValueError(f"The case {case.name} has no image.")
            volumeNode = slicer.util.loadVolume(case.image, {"name": f"{case.name} (training case)"})
        return segmentationLogic.preview(volumeNode, options=settings.preview_options())

    def segmentWithModel(self, volumeNode, modelPath: Optional[str] = None, device: str = "auto", wait: bool = False):
        """Segment ``volumeNode`` with ``modelPath`` (default: the model trained last) through
        the LWISegmentation module; returns its runner."""
        import LWISegmentation

        modelPath = modelPath or self.lastModelPath
        if not modelPath:
            raise ValueError("No model has been trained yet in this session: give modelPath.")
        return LWISegmentation.LWISegmentationLogic().segment(volumeNode, modelPath, device=device, wait=wait)


class LWITrainingTest(ScriptedLoadableModuleTest):
    """Tests run by Slicer (Reload and Test, or CTest): the parameter node, and a tiny training on
    three synthetic labelled cases on the CPU (needs the core's dependencies)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ParameterNodeDefaults()
        self.setUp()
        self.test_CasesMatchedByName()
        self.setUp()
        self.test_TinyTraining()

    def _makeCase(self, name: str, segmentNames: Sequence[str], seed: int):
        """A 32^3 volume with bright boxes and a segmentation with one named segment per box."""
        import numpy as np

        rng = np.random.default_rng(seed)
        image = rng.normal(0.0, 10.0, (32, 32, 32)).astype(np.float32)
        labels = np.zeros((32, 32, 32), dtype=np.uint8)
        for value in range(1, len(segmentNames) + 1):
            z0 = 4 + 12 * (value - 1) + seed % 3
            labels[z0 : z0 + 8, 8:24, 8:24] = value
            image[labels == value] += 100.0 * value
        volumeNode = slicer.util.addVolumeFromArray(image, name=name)
        labelmapNode = slicer.util.addVolumeFromArray(labels, name=name + " labels", nodeClassName="vtkMRMLLabelMapVolumeNode")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name + " segmentation")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentationNode.SetNodeReferenceID(segmentationNode.GetReferenceImageGeometryReferenceRole(), volumeNode.GetID())
        slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode)
        slicer.mrmlScene.RemoveNode(labelmapNode)
        segmentation = segmentationNode.GetSegmentation()
        for index, segmentName in enumerate(segmentNames):
            segmentation.GetNthSegment(index).SetName(segmentName)
        return volumeNode, segmentationNode

    def test_ParameterNodeDefaults(self):
        """The parameter node starts with the documented defaults and keeps what is set."""
        parameterNode = LWITrainingLogic().getParameterNode()
        self.assertEqual(parameterNode.strategy, "lwi")
        self.assertEqual(parameterNode.architecture, "unetr")
        self.assertEqual(parameterNode.roiSize, 96)
        parameterNode.epochs = 5
        self.assertEqual(LWITrainingLogic().getParameterNode().epochs, 5)
        self.delayDisplay("Parameter node passed")

    def test_CasesMatchedByName(self):
        """Segments are matched by name across scene cases; a case missing one is excluded with the reason."""
        logic = LWITrainingLogic()
        a = self._makeCase("caseA", ["liver", "spleen"], 0)
        b = self._makeCase("caseB", ["Spleen", "Liver"], 1)
        c = self._makeCase("caseC", ["liver"], 2)
        trainingSet = logic.addCases(logic.collectCasesFromNodes([a, b, c]))
        self.assertEqual(sorted(n.lower() for n in trainingSet.labels.values()), ["liver", "spleen"])
        self.assertEqual([r.included for r in trainingSet.rows], [True, True, False])
        self.assertIn("spleen", trainingSet.rows[2].status())
        self.delayDisplay("Case matching passed")

    def test_TinyTraining(self):
        """Three synthetic cases, a tiny SegResNet, a few iterations on the CPU: a model file with the right labels appears."""
        import tempfile

        logic = LWITrainingLogic()
        if not logic.setupDependencies(askConfirmation=False):
            self.skipTest("The core's dependencies are not installed.")
        pairs = [self._makeCase(f"synthetic{i}", ["liver", "spleen"], i) for i in range(3)]
        logic.addCases(logic.collectCasesFromNodes(pairs))
        modelsFolder = tempfile.mkdtemp(prefix="lwi-selftest-", dir=slicer.app.temporaryPath)
        settings = {
            "architecture": "segresnet",
            "roi": [32, 32, 32],
            "pretrain_epochs": 1,
            "epochs": 2,
            "cube_size": 8,
            "batch_size": 1,
            "device": "cpu",
        }
        logic.train(logic.trainingSet, "selftest", settings=settings, modelsFolder=modelsFolder, wait=True)
        self.assertTrue(os.path.isfile(logic.lastModelPath))
        import LWISegmentation

        metadata = LWISegmentation.LWISegmentationLogic().modelInfo(logic.lastModelPath)
        names = sorted(entry["name"] for entry in metadata["labels"] if int(entry["value"]) != 0)
        self.assertEqual(names, ["liver", "spleen"])
        self.delayDisplay("Tiny training passed")
