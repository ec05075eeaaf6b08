"""LWI Segmentation's panel: binds the .ui widgets to the parameter node and calls the logic."""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Optional

import slicer
import vtk
from LWISegmentationLib.logic import LWISegmentationLogic
from LWISegmentationLib.parameters import LWISegmentationParameterNode
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class LWISegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: holds no computation, calls :class:`LWISegmentationLogic`."""

    BROWSE = "Browse..."

    def __init__(self, parent=None, logic: Optional[LWISegmentationLogic] = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic  # Slicer passes none: setup() makes it
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

        if self.logic is None:
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
        self.ui.uncertaintyOpacitySlider.connect("valueChanged(double)", self.onUncertaintyOpacity)
        self.ui.rankButton.connect("clicked(bool)", self.onRankButton)
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
        """Reload the helper packages too (Slicer's Reload executes only the module file again), then
        the module."""
        from LWICommon.gui import reloadPackage

        reloadPackage("LWICommon")
        reloadPackage("LWISegmentationLib")
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
        from LWICommon.gui import isUnsetPath

        p = self._parameterNode
        if p and isUnsetPath(p.modelPath) and self.ui.modelPathLineEdit.currentPath:
            # The connector writes Path()'s "." on every update (after it: this observer came later).
            self.ui.modelPathLineEdit.currentPath = ""
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
                uncertainty=bool(p.showUncertainty),
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
        score = self.logic.uncertaintyScore(segmentationNode)
        self.ui.uncertaintyLabel.text = "" if score is None else f"{segmentationNode.GetName()}: uncertainty {score:.3f}"
        if score is not None:
            self.logic.setUncertaintyOpacity(self.ui.uncertaintyOpacitySlider.value)
        if result.get("seconds") is not None:
            reused = " (model already loaded)" if result.get("reused_model") else ""
            self.task.log(f"Segmented on {result.get('device')} in {result['seconds']:.1f} s{reused}.")

    # -- uncertainty ----------------------------------------------------------------------
    def onUncertaintyOpacity(self, value: float) -> None:
        self.logic.setUncertaintyOpacity(value)

    def onRankButton(self) -> None:
        """Segment the chosen folder's volumes and list them least certain first (blocks)."""
        p = self._parameterNode
        folder = self.ui.rankFolderButton.directory
        try:
            if not p or not str(p.modelPath) or not folder or not self.logic.setupDependencies(askConfirmation=True):
                return
            ranked = self.logic.rankFolder(folder, str(p.modelPath), device=p.device)
            self.task.log("Ran: " + self.logic.lastCommand)
            self.task.log("Least certain first (correct these first): " + ", ".join(
                f"{name} {score:.3f}" if score is not None else f"{name} n/a" for name, score in ranked
            ))
            self.ui.uncertaintyLabel.text = f"Least certain: {ranked[0][0]}" if ranked else "No volume in the folder."
        except Exception as e:
            slicer.util.errorDisplay(f"Ranking the folder failed: {e}")
            logging.exception("LWISegmentation: ranking failed")

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
        from LWISegmentationLib.preview import new_seed, preview_options

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
        from LWISegmentationLib.preview import summary

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
