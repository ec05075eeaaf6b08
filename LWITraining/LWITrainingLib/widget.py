"""LWI Training's panel: binds the .ui widgets to the parameter node and calls the logic."""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any, Callable, Dict, Optional

import slicer
import vtk
from LWICommon.vocabulary import names
from LWITrainingLib.logic import LWITrainingLogic
from LWITrainingLib.parameters import ROI_SIZES, STRATEGIES, LWITrainingParameterNode
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

DEFAULT_STRATEGY = names.DEFAULT_STRATEGY
PLAN_DONE = "What Train will run with these cases and settings:"
PLAN_OF_TRAINING = "The plan of the training run:"
PLAN_CHANGED = "The cases or settings changed since this plan: Show plan again."
CASE_COLUMNS = ["Case", "Source", "Segments", "Status"]
ROI_AUTO = "auto (plan)"


class LWITrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: holds no computation, calls :class:`LWITrainingLogic`."""

    def __init__(self, parent=None, logic: Optional[LWITrainingLogic] = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic  # Slicer passes none: setup() makes it
        self.task = None
        self.planTask = None
        self._planStatus: Optional[str] = None  # what the plan shown is (None: no plan shown)
        self.previewTask = None
        self.segmentTask = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LWITraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        from LWICommon.gui import TaskPanel

        if self.logic is None:
            self.logic = LWITrainingLogic()
        self.task = TaskPanel(
            self.ui.trainButton, self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit
        )
        self.planTask = TaskPanel(
            self.ui.planButton, self.ui.planProgressBar, self.ui.planStatusLabel, self.ui.logTextEdit
        )
        self.previewTask = TaskPanel(
            self.ui.previewButton, self.ui.previewProgressBar, self.ui.previewStatusLabel, self.ui.logTextEdit
        )
        self.segmentTask = TaskPanel(
            self.ui.segmentButton, self.ui.segmentProgressBar, self.ui.segmentStatusLabel, self.ui.logTextEdit
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
        self.ui.planButton.connect("clicked(bool)", self.onPlanButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.improveButton.connect("clicked(bool)", self.onImproveButton)
        self.ui.resumeButton.connect("clicked(bool)", self.onResumeButton)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        for task in (self.task, self.planTask, self.previewTask, self.segmentTask):
            if task is not None:
                task.cancel(wait=True)  # the timer stops with the widget: finish the runs here
        if self.logic is not None:
            self.logic.clearCases()  # removes the staged copies of scene cases
        self.removeObservers()

    def onReload(self) -> None:
        """Reload the helper packages too (Slicer's Reload executes only the module file again), then
        the module."""
        from LWICommon.gui import reloadPackage

        reloadPackage("LWICommon")
        reloadPackage("LWITrainingLib")
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        # A preview or segmentation would load its result next to nodes being removed, a plan read
        # scene cases about to be deleted: stop them. Training has its own copies, so it goes on.
        for task in (self.planTask, self.previewTask, self.segmentTask):
            if task is not None:
                task.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self.logic.clearCases()
        self._showPlan(None, None)
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
            from LWICommon import files
            from LWICommon.gui import connectParameterNodeToGui, isUnsetPath

            p = self._parameterNode
            if p.strategy not in STRATEGIES:  # a scene saved with a strategy now gone
                p.strategy = DEFAULT_STRATEGY
            # pathlib.Path parameters default to ".": the folder buttons would show Slicer's
            # working directory. Show the real defaults instead.
            if isUnsetPath(p.modelsFolder):
                p.modelsFolder = pathlib.Path(self.logic.modelsFolder())
            if isUnsetPath(p.dataFolder):
                p.dataFolder = pathlib.Path(files.default_training_folder())  # where "Add to training set" writes
            # Widgets are bound through their SlicerParameterName property in the .ui file.
            self._parameterNodeGuiTag = connectParameterNodeToGui(p, self.ui)
            # The connector fills the box with str(choice): 0 would read "0". Index-mapped, so safe;
            # redone after every connect, which clears the box.
            self.ui.roiSizeComboBox.setItemText(ROI_SIZES.index(0), ROI_AUTO)
            self.addObserver(p, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        from LWICommon.gui import isUnsetPath

        p = self._parameterNode
        running = self.task is not None and self.task.running
        included = len(self.logic.trainingSet.included) if self.logic.trainingSet else 0
        name = p.modelName.strip() if p else ""
        self.ui.addPairButton.enabled = bool(p and p.caseVolume and p.caseSegmentation)
        self.ui.addFolderCasesButton.enabled = bool(
            p and not isUnsetPath(p.dataFolder) and os.path.isdir(str(p.dataFolder))
        )
        if not (self.previewTask is not None and self.previewTask.running):  # it is Cancel while running
            self.ui.previewButton.enabled = bool(self._selectedCase() is not None)
        if not (self.planTask is not None and self.planTask.running):
            # Not while training: the plan's timing probe would compete with it (and be wrong).
            self.ui.planButton.enabled = bool(p and included and not running)
            if self._planStatus is not None:
                self.ui.planStatusLabel.text = self._planStatus if self._planIsCurrent() else PLAN_CHANGED
        canResume = bool(p and name and not running and self.logic.canResume(name, self._modelsFolder()))
        self.ui.resumeButton.enabled = canResume
        if not (self.segmentTask is not None and self.segmentTask.running):
            self.ui.segmentButton.enabled = bool(self.logic.lastModelPath and not running)
        if running:
            return  # the Train button is Cancel while running
        ready = bool(p and included and name)
        self._showImprovement(bool(p and included))
        self.ui.trainButton.enabled = ready
        self.ui.trainButton.toolTip = (
            f"Train on {included} case(s)." if ready else "Add training cases and name the model."
        )

    def _modelsFolder(self) -> str:
        p = self._parameterNode
        from LWICommon.gui import isUnsetPath

        return self.logic.modelsFolder(None if not p or isUnsetPath(p.modelsFolder) else str(p.modelsFolder))

    # -- cases -------------------------------------------------------------------------------
    def _run(self, what: str, function: Callable[[], Any]) -> Any:
        try:
            with slicer.util.WaitCursor():  # writing the cases' files can take seconds
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
        # A plan or preview reads the staged cases: stop them first (the logic refuses otherwise).
        for task in (self.planTask, self.previewTask):
            task.cancel(wait=True)
        self._run("Clearing the cases", self.logic.clearCases)

    def _showCases(self) -> None:
        import qt

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
        if self.previewTask.running:
            self.previewTask.cancel()
            return
        try:
            runner = self.logic.startPreview(self._selectedCase(), self._settings())
            self.previewTask.log("Running: " + self.logic.lastCommand)
            if self.logic.lastPreviewNote:
                self.previewTask.log(self.logic.lastPreviewNote)
            self.previewTask.start(runner, onDone=self._onPreviewDone)
        except Exception as e:
            slicer.util.errorDisplay(f"The preview could not start: {e}")
            logging.exception("LWITraining preview failed to start")

    def _onPreviewDone(self, runner) -> None:
        # Where the "auto" network, ROI and spacing came from: the plan shown, or stand-ins.
        if runner.returncode == 0 and not runner.cancelled and self.logic.lastPreviewNote:
            self.ui.previewStatusLabel.text = self.logic.lastPreviewNote

    def onPlanButton(self) -> None:
        if self.planTask.running:
            self.planTask.cancel()
            return
        try:
            runner = self.logic.plan(self.logic.trainingSet, self._settings(), start=False)
            self.planTask.log("Running: " + self.logic.lastCommand)
            self.planTask.start(runner, onDone=self._onPlanDone)
        except Exception as e:
            slicer.util.errorDisplay(f"The plan could not start: {e}")
            logging.exception("LWITraining plan failed to start")

    def _onPlanDone(self, runner) -> None:
        if runner.returncode == 0 and self.logic.lastPlan is not None:
            self._showPlan(self.logic.lastPlan, PLAN_DONE)
        elif not runner.cancelled:  # the error stays in the status line; no older plan under it
            self._showPlan(None, None)
        self._updateButtons()

    def _showPlan(self, event: Optional[Dict[str, Any]], status: Optional[str]) -> None:
        """Show a ``plan`` event's summary in the plan area (None: empty it)."""
        from LWITrainingLib.training_settings import plan_text

        self.ui.planTextEdit.plainText = plan_text(event) if event else ""
        self._planStatus = status
        if status is not None:
            self.ui.planStatusLabel.text = status

    def _planIsCurrent(self) -> bool:
        try:
            return self.logic.planIsCurrent(self.logic.trainingSet, self._settings())
        except ValueError:  # settings that cannot be read (the spacing text) make no plan current
            return False

    def onTrainButton(self) -> None:
        if self.task.running:
            self.task.cancel()  # the core's last checkpoint stays: Resume continues from it
            return
        self._start(resume=False)

    def onResumeButton(self) -> None:
        self._start(resume=True)

    def _parentModel(self) -> Optional[str]:
        """The model "Improve" starts from: the one trained last here, else LWI Segmentation's."""
        path = self.logic.lastModelPath
        if not path:
            try:
                path = self.logic.segmentationLogic().selectedModelPath
            except Exception:  # LWI Segmentation not loaded: only this session's model can be improved
                path = None
        return str(path) if path and os.path.isfile(str(path)) else None

    def _showImprovement(self, haveCases: bool) -> None:
        """The Improve button's text, and the parent model with the cases added since."""
        parent = self._parentModel() if haveCases else None
        if parent is None:
            self.ui.improveButton.enabled = False
            self.ui.improveInfoLabel.text = ""
            return
        try:
            info = self.logic.improvementInfo(parent, self.logic.trainingSet)
        except Exception as e:  # a cases problem or a file that is no model: said, not raised
            self.ui.improveButton.enabled = False
            self.ui.improveInfoLabel.text = str(e)
            return
        added = info.get("added") or []
        trained = info.get("trained_on")
        self.ui.improveButton.text = f"Improve {info['parent']} with the new cases"
        self.ui.improveButton.enabled = True
        self.ui.improveInfoLabel.text = (
            f"Parent model: {info['parent']}"
            + (f" (trained on {len(trained)} case(s))" if trained is not None else " (its training cases are not recorded)")
            + f"; cases added since: {', '.join(added) if added else 'none'}."
        )

    def onImproveButton(self) -> None:
        if self.task.running:
            self.task.cancel()
            return
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            parent = self._parentModel()
            parentName = self.logic.improvementInfo(parent)["parent"]
            name = p.modelName.strip()
            if not name or name == parentName:  # never replace the parent
                name = f"{parentName}-improved"
            conflict = self.logic.trainConflict(name, self._modelsFolder())
            if conflict and not slicer.util.confirmOkCancelDisplay(
                f"Improving replaces what is there: {conflict}. Replace it? (Cancel, then change the model name.)"
            ):
                return
            runner = self.logic.improve(
                self.logic.trainingSet, parent, name, settings=self._settings(), replace=bool(conflict),
                modelsFolder=self._modelsFolder(), start=False, onEvent=self._onEvent,
            )
            self.task.log("Running: " + self.logic.lastCommand)
            self.ui.stageLabel.text = "Starting..."
            self.task.start(runner, onDone=self._onDone)
        except Exception as e:
            slicer.util.errorDisplay(f"Improving the model could not start: {e}")
            logging.exception("LWITraining failed to start improving")

    def _start(self, resume: bool) -> None:
        try:
            if not self.logic.setupDependencies(askConfirmation=True):
                return
            p = self._parameterNode
            kwargs = dict(modelsFolder=self._modelsFolder(), start=False, onEvent=self._onEvent)
            if resume:
                runner = self.logic.resume(p.modelName, epochs=p.epochs, pretrainEpochs=p.pretrainEpochs, **kwargs)
            else:
                conflict = self.logic.trainConflict(p.modelName, self._modelsFolder())
                if conflict and not slicer.util.confirmOkCancelDisplay(
                    f"Training replaces what is there: {conflict}. Replace it? (Cancel, then change "
                    "the model name to keep it, or click Resume to continue the interrupted run.)"
                ):
                    return
                runner = self.logic.train(
                    self.logic.trainingSet, p.modelName, settings=self._settings(), replace=bool(conflict), **kwargs
                )
            self.task.log("Running: " + self.logic.lastCommand)
            self.ui.stageLabel.text = "Starting..."
            self.task.start(runner, onDone=self._onDone)
            self.ui.resumeButton.enabled = False
        except Exception as e:
            slicer.util.errorDisplay(f"Training could not start: {e}")
            logging.exception("LWITraining failed to start")

    def _onEvent(self, event: Dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.ui.stageLabel.text = self.logic.stageText(event)
        elif kind == "plan":  # what the core chose for the "auto" settings (its lines are in the log too)
            self._showPlan(event, PLAN_OF_TRAINING)
        elif kind == "warning":  # e.g. a label that is not being learned
            from LWITrainingLib.training_settings import warning_text

            self.task.log(warning_text(event))
            self.ui.stageLabel.text = warning_text(event)

    def _onDone(self, runner) -> None:
        if runner.cancelled:
            self.ui.stageLabel.text = "Cancelled: the last checkpoint is kept; Resume continues from it."
        elif runner.returncode == 0:
            self.ui.stageLabel.text = f"Model saved: {self.logic.lastModelPath}"
        else:
            self.ui.stageLabel.text = "Failed; Resume continues from the last checkpoint, if one was saved."
        self._updateButtons()

    def onSegmentButton(self) -> None:
        if self.segmentTask.running:
            self.segmentTask.cancel()
            return
        # The volume in the views (the button's label), not the case selector's.
        volume = self.logic.segmentationLogic().shownVolume()
        if volume is None:
            slicer.util.errorDisplay("Load or select a volume to segment.")
            return
        try:
            job = self.logic.startSegmentWithModel(
                volume, device=self._parameterNode.device,
                onImported=lambda node: self.segmentTask.log(f"Segmented {volume.GetName()}: {node.GetName()}."),
            )
            self.segmentTask.log("Running: " + self.logic.lastCommand)
            self.segmentTask.start(job, onDone=lambda job: self._updateButtons())
        except Exception as e:
            slicer.util.errorDisplay(f"Segmentation could not start: {e}")
            logging.exception("LWITraining segmentation failed to start")
