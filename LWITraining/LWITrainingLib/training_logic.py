"""What LWI Training does, on the scene and without Qt (SlicerNNUnet's Logic/Widget split).

:class:`TrainingLogic` collects training cases from segmentation nodes or folders, runs ``lwi train``
in the background, draws its curves in plot nodes, publishes the model and hands it to LWI
Segmentation (reached through ``slicer.util.getModuleLogic``, as one Slicer module uses another).
The module file's ``LWITrainingLogic`` adds only the parameter node and the dependency installer.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


class TrainingLogic:
    """Everything LWI Training does, callable from the Python console without the GUI::

        logic = slicer.util.getModuleLogic("LWITraining")
        cases = logic.collectCasesFromNodes([(volume1, segmentation1), (volume2, segmentation2)])
        logic.addCases(cases)                       # the table: logic.trainingSet.table()
        print(logic.plan(logic.trainingSet, settings={"time_budget": "20m"}, wait=True)["summary"])
        logic.train(logic.trainingSet, "liver", settings={"time_budget": "20m"})   # in the background
        logic.segmentWithModel(volume3, wait=True)  # with the model just trained, once it is done
        print(logic.improvementInfo(logic.lastModelPath, logic.trainingSet))   # the parent, the cases added since
        logic.improve(logic.trainingSet, logic.lastModelPath, "liver-v2")       # from its weights, shorter

    Training runs ``lwi train`` in a background process (:class:`LWICommon.process.ProcessRunner`),
    polled on Slicer's main thread until it ends; ``wait=True`` blocks instead. Each model has a run
    folder (:mod:`LWITrainingLib.run_folder`), so a cancelled or failed run can be resumed.
    """

    def __init__(self) -> None:
        self.lastCommand = ""
        self.lastModelPath: Optional[str] = None
        self.runner = None
        self.planRunner = None
        self.lastPlan: Optional[Dict[str, Any]] = None  # the last ``plan`` event (lwi plan or lwi train)
        self._lastPlanKey: Optional[Tuple[Any, ...]] = None
        self.lastPreviewNote = ""  # where the last preview's "auto" network, ROI and spacing came from
        self.sources: List[Any] = []
        self.trainingSet = None
        self.curves = None
        self.plot = None
        self._stagingDir: Optional[str] = None
        self._previewVolume = None  # a folder case's image, loaded for its preview

    @property
    def chartNode(self):
        """The training plot's chart node (None before the first curve point)."""
        return self.plot.chartNode if self.plot is not None else None

    def segmentationLogic(self):
        """LWI Segmentation's logic, which segments and previews for this module."""
        import slicer

        return slicer.util.getModuleLogic("LWISegmentation")

    # -- folders -----------------------------------------------------------------------------
    def modelsFolder(self, folder: Optional[str] = None) -> str:
        """Where models go: ``folder`` if given, else the ``LWI/ModelsFolder`` application setting,
        else ``~/LWI/models``. Not created here (opening the panel must write nothing): training
        creates it."""
        from LWICommon import files

        return files.models_folder(folder)

    def runFolder(self, modelName: str, modelsFolder: Optional[str] = None) -> str:
        """The folder of a model's training run: its exported cases (``data/``) and checkpoints."""
        from LWITrainingLib import run_folder

        return run_folder.run_folder(self.modelsFolder(modelsFolder), modelName)

    def canResume(self, modelName: str, modelsFolder: Optional[str] = None) -> bool:
        """Whether an interrupted run of ``modelName`` left a checkpoint to continue from."""
        from LWITrainingLib import run_folder

        return run_folder.can_resume(self.runFolder(modelName, modelsFolder), modelName)

    def trainConflict(self, modelName: str, modelsFolder: Optional[str] = None) -> str:
        """What :meth:`train` of ``modelName`` would replace: a model of that name, an interrupted
        run that Resume could continue ("" when nothing)."""
        from LWICommon import files

        found = []
        path = files.model_path(self.modelsFolder(modelsFolder), modelName)
        if os.path.isfile(path):
            found.append(f"a model '{modelName}' exists ({path})")
        if self.canResume(modelName, modelsFolder):
            found.append(f"an interrupted training of '{modelName}' can be resumed")
        return " and ".join(found)

    def unusedModelName(self, baseName: str = "model", modelsFolder: Optional[str] = None) -> str:
        """``baseName``, or ``baseName-2``, ``-3``, ... : the first name :meth:`train` can use
        without replacing anything."""
        name, number = baseName, 1
        while self.trainConflict(name, modelsFolder) or os.path.exists(self.runFolder(name, modelsFolder)):
            number += 1
            name = f"{baseName}-{number}"
        return name

    # -- cases -------------------------------------------------------------------------------
    def _staging(self) -> str:
        import slicer
        from LWICommon import files

        if not self._stagingDir or not os.path.isdir(self._stagingDir):
            self._stagingDir = files.make_run_dir(slicer.app.temporaryPath, prefix="lwi-cases-")
        return self._stagingDir

    def collectCasesFromNodes(self, pairs: Optional[Sequence[Tuple[Any, Any]]] = None) -> List[Any]:
        """Training cases from the scene: ``pairs`` of (volume node, segmentation node), or every
        segmentation node with the volume it was drawn on (its reference geometry volume).

        Each case is written to files (image and a label map of its segments, on the volume's grid);
        returns :class:`LWICommon.cases.CaseSource` objects. A segmentation without a volume, or
        without segments, becomes a case with that problem. Nothing is added to the scene.
        """
        import slicer
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
            stem = f"{index:03d}-{files.safe_stem(name)}"
            imagePath = mrml.writeVolumeNode(volumeNode, os.path.join(folder, stem + ".nrrd"))
            labelPath = os.path.join(folder, stem + "-label.nrrd")
            names = mrml.segmentNames(segmentationNode)
            if names:
                names = mrml.writeSegmentsAsLabelmap(segmentationNode, volumeNode, labelPath)
            segments = {i + 1: n for i, n in enumerate(names)}
            sources.append(cases.CaseSource(name, imagePath, labelPath if names else None, segments, node=volumeNode))
        return sources

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
        """Forget the collected cases and delete the staged copies of scene cases (a training
        that started has its own copies in its run folder). Not while a plan reads them: cancel
        it first (RuntimeError)."""
        if self.planRunner is not None and self.planRunner.running:
            raise RuntimeError("A plan is reading the cases: cancel it before clearing them.")
        self.clearPreview()
        if self._stagingDir:
            shutil.rmtree(self._stagingDir, ignore_errors=True)
            self._stagingDir = None
        self.sources = []
        self.trainingSet = None

    # -- settings ----------------------------------------------------------------------------
    def settingsFromParameterNode(self, p):
        """The :class:`LWITrainingLib.training_settings.TrainingSettings` the panel shows."""
        from LWITrainingLib.training_settings import TrainingSettings, parse_spacing

        return TrainingSettings(
            architecture=p.architecture,
            strategy=p.strategy,
            pretrain_epochs=p.pretrainEpochs or None,  # 0: auto, the plan decides
            epochs=p.epochs or None,
            roi=(p.roiSize,) * 3 if p.roiSize else None,
            spacing=parse_spacing(p.targetSpacing),
            intensity=p.intensityPreset,
            device=p.device,
            model_name=p.modelName,
            learning_rate=p.learningRate or None,
            mask_ratio=p.maskRatio,
            cube_size=p.cubeSize or None,
            batch_size=p.batchSize or None,
            time_budget=getattr(p, "timeBudget", ""),
        )

    @staticmethod
    def _settings(settings, modelName: str):
        from LWITrainingLib.training_settings import TrainingSettings

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
        replace: bool = False,
    ):
        """Train a model called ``modelName`` on ``cases`` and save it in the models folder.

        Args:
            cases: a :class:`LWICommon.cases.TrainingSet`, a list of ``CaseSource`` (from
                :meth:`collectCasesFromNodes` / :meth:`collectCasesFromFolder`), or a dataset folder.
            settings: a ``TrainingSettings`` or a dict of its fields (``epochs``, ``pretrain_epochs``,
                ``architecture``, ``roi``, ``device``, ...); None: the defaults.
            modelsFolder: where the model goes (default: :meth:`modelsFolder`).
            wait: block until training ends; raises RuntimeError with the run's message on failure.
                Otherwise the run is polled on Slicer's main thread (:func:`LWICommon.jobs.pollInBackground`):
                the plot grows, and at the end the model is published and ``onFinished`` is called.
            onEvent: called with each progress/log event of the run.
            onFinished: called with the runner when the run is over (whatever the outcome).
            start: False returns the runner unstarted (the panel starts and polls it).
            plot: show the losses and validation Dice in a plot chart while training.
            replace: replace a model of that name and discard its interrupted run
                (:meth:`trainConflict`); otherwise such a name raises FileExistsError, and nothing
                is touched (:meth:`unusedModelName` gives a free one; :meth:`resume` continues).

        Returns the :class:`LWICommon.process.ProcessRunner`. Excluded cases are logged with their reasons.
        """
        from LWITrainingLib import run_folder

        settings = self._settings(settings, modelName)
        cases = self._trainingCases(cases)
        for row in cases.excluded:
            logging.warning(f"LWITraining: case {row.name} is left out: {'; '.join(row.problems)}")
        self._checkNotRunning()
        conflict = self.trainConflict(modelName, modelsFolder)
        if conflict and not replace:
            raise FileExistsError(
                f"Not trained: {conflict}. Choose another model name, Resume, or train with replace=True."
            )

        run = self.runFolder(modelName, modelsFolder)
        data = os.path.join(run, run_folder.DATA_FOLDER)
        if os.path.isdir(data):
            shutil.rmtree(data)
        os.makedirs(run, exist_ok=True)
        # Scene cases live in a temporary folder: copy their images; folder cases stay where they are.
        self._exportCases(cases, data, settings, copySceneImages=True)
        run_folder.write_settings(run, settings.to_dict(), modelsFolder)
        return self._launch(run, settings, modelsFolder, False, wait, onEvent, onFinished, start, plot, cases)

    def improve(self, cases, parentModel: str, modelName: str, settings=None, **kwargs):
        """Improve the finished model ``parentModel`` with ``cases`` (old and new) into ``modelName``:
        ``lwi train --from`` (its network, labels, preprocessing and weights; a shorter budget the plan
        chooses; validation only on cases it never trained on). Otherwise as :meth:`train` (same
        keyword arguments); :meth:`plan` with the same settings shows the improvement's plan."""
        return self.train(cases, modelName, self.improveSettings(parentModel, settings), **kwargs)

    def improveSettings(self, parentModel: str, settings=None):
        """``settings`` (a ``TrainingSettings``, a dict or None) set to improve ``parentModel``."""
        from LWITrainingLib.training_settings import TrainingSettings

        if settings is None:
            settings = TrainingSettings()
        elif isinstance(settings, dict):
            settings = TrainingSettings.from_dict(settings)
        self.improvementInfo(parentModel)  # a clear error now for a file that is no model
        settings.from_model = str(parentModel)
        return settings

    def improvementInfo(self, parentModel: str, cases=None) -> Dict[str, Any]:
        """What improving ``parentModel`` with ``cases`` means, from the model's header: ``parent``
        (its name), ``lineage`` (the models it descends from, oldest first), ``trained_on`` (the case
        names it trained on; None for a model that does not record them), ``held_out``, and with
        ``cases`` the ``added`` case names (trained on now, not by the parent). Case names are those
        the exported training folder gives (:meth:`caseNames`). Raises ValueError for no model."""
        from LWICommon import files

        prov = self.segmentationLogic().modelInfo(str(parentModel)).get("provenance") or {}
        trained = prov.get("training_cases")
        info: Dict[str, Any] = {
            "parent": files.model_name_from_path(str(parentModel)),
            "lineage": list(prov.get("lineage") or []),
            "trained_on": None if trained is None else sorted(trained),
            "held_out": sorted(prov.get("held_out") or []),
        }
        if cases is not None:
            names = self.caseNames(self._trainingCases(cases))
            held = set(info["held_out"])
            info["added"] = sorted(n for n in names if n not in set(trained or []) and n not in held)
        return info

    @staticmethod
    def caseNames(cases) -> List[str]:
        """The core's case names of the included cases once exported (:meth:`_exportCases`): a scene
        case is named after its volume (made file-safe), a folder case keeps its image's case name."""
        from LWICommon import cases as caselib
        from LWICommon.files import safe_stem

        names = []
        for row in cases.included:
            if row.source.origin == caselib.FOLDER:
                names.append(caselib._entry_name({"image": str(row.source.image)}))
            else:
                names.append(safe_stem(row.name, fallback="case"))
        return names

    @staticmethod
    def _trainingCases(cases):
        """``cases`` (a TrainingSet, a list of ``CaseSource`` or a dataset folder) as a
        :class:`LWICommon.cases.TrainingSet`; ValueError when no case can be trained on."""
        from LWICommon import cases as caselib

        if isinstance(cases, str):
            cases = caselib.match_cases(caselib.folder_cases(cases))
        elif not isinstance(cases, caselib.TrainingSet):
            cases = caselib.match_cases(list(cases or []))
        if not cases.included:
            reasons = "; ".join(f"{r.name}: {r.status()}" for r in cases.rows) or "no cases were given"
            raise ValueError(f"No case can be trained on ({reasons}).")
        return cases

    @staticmethod
    def _exportCases(cases, folder: str, settings, copySceneImages: bool) -> None:
        """Write the included cases into the dataset ``folder`` that ``lwi train`` or ``lwi plan``
        reads (scene cases first, as a run folder has them; folder cases' images referenced).

        Intensity "auto": the modality the cases' dataset folders declare when they agree (a CT folder
        stays CT, as ``lwi train --data`` on it would read it), else none (the core's MR default)."""
        from LWICommon import cases as caselib

        scene = [r for r in cases.included if r.source.origin != caselib.FOLDER]
        folderRows = [r for r in cases.included if r.source.origin == caselib.FOLDER]
        declared = {r.source.modality for r in cases.included if r.source.modality}
        modality = settings.intensity if settings.intensity != "auto" else (declared.pop() if len(declared) == 1 else None)
        for rows, copy in ((scene, copySceneImages), (folderRows, False)):
            if rows:
                part = caselib.TrainingSet(cases.labels, rows)
                caselib.export_cases(part, folder, modality=modality, copy_images=copy, name=settings.model_name)

    # -- the plan ----------------------------------------------------------------------------
    def plan(
        self,
        cases,
        settings=None,
        wait: bool = False,
        onFinished: Optional[Callable[[Any], None]] = None,
        start: bool = True,
        probe: bool = True,
    ):
        """The plan :meth:`train` would follow for ``cases`` with ``settings``, before training:
        network, spacing, ROI, batch, learning rate, both steps' iterations, the estimated time of
        each step, warnings and what a GPU would run instead.

        It is ``lwi plan`` with the options :meth:`train` passes to ``lwi train``
        (:func:`LWITrainingLib.training_settings.run_options`: "auto" settings are left to the plan), on
        the cases exported as :meth:`train` exports them, into a temporary folder removed at the end.
        The core times a few iterations on this machine (``probe``; False: no time estimates), which
        takes seconds: it runs in a background process (:class:`LWICommon.process.ProcessRunner`).

        Args:
            cases, settings: as :meth:`train`.
            wait: block, and return the ``plan`` event (docs/contracts.md: ``summary``, ``settings``,
                ``step1_iterations``, ``step2_iterations``, ``seconds``, ``warnings``, ...); raises
                RuntimeError with the run's message on failure.
            onFinished: called with the runner when the run is over (:attr:`lastPlan` is then set).
            start: False returns the runner unstarted (the panel starts and polls it).

        Returns the runner (or, with ``wait``, the plan event). :attr:`lastPlan` holds the last plan
        event, :meth:`planIsCurrent` tells whether it still is the plan of these cases and settings.
        """
        import slicer
        from LWICommon import files, jobs
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment
        from LWITrainingLib import training_settings

        settings = self._planSettings(settings)
        cases = self._trainingCases(cases)
        if self.planRunner is not None and self.planRunner.running:
            raise RuntimeError("A plan is already being made: cancel it first.")
        folder = files.make_run_dir(slicer.app.temporaryPath, prefix="lwi-plan-")
        data = os.path.join(folder, "data")
        try:
            self._exportCases(cases, data, settings, copySceneImages=False)  # the plan only reads them
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        args = training_settings.plan_args(settings, data, probe=probe)
        self.lastCommand = training_settings.cli_args.quote_command(args)
        key = self._planKey(cases, settings)

        def eventReceived(event) -> None:
            if event.get("event") == "plan":
                self.lastPlan, self._lastPlanKey = event, key

        self.planRunner = ProcessRunner(
            args, env=coreEnvironment(), cwd=folder, temp_dir=folder, on_event=eventReceived, on_finished=onFinished
        )
        if wait:
            self.planRunner.start()
            self.planRunner.wait()
            if self.planRunner.error_message():
                raise RuntimeError(self.planRunner.error_message())
            return self.lastPlan
        if start:
            jobs.pollInBackground(self.planRunner.start())
        return self.planRunner

    def planIsCurrent(self, cases, settings=None) -> bool:
        """Whether :attr:`lastPlan` is the plan of these cases and settings (False once either
        changed, or when there is no plan)."""
        if self.lastPlan is None or self._lastPlanKey is None:
            return False
        try:
            cases = self._trainingCases(cases)
            settings = self._planSettings(settings)
        except ValueError:  # no cases, or settings that cannot be used
            return False
        return self._planKey(cases, settings) == self._lastPlanKey

    def _planSettings(self, settings):
        """The settings of a plan: as :meth:`train`'s, whatever the model name (a plan has no output)."""
        return self._settings(settings, (getattr(settings, "model_name", None) or "").strip() or "model")

    @staticmethod
    def _planKey(cases, settings) -> Tuple[Any, ...]:
        """What a plan depends on: the run's options and the cases (files and labels)."""
        from LWITrainingLib.training_settings import run_options

        rows = tuple((r.source.image, r.source.label, tuple(sorted(r.remap.items()))) for r in cases.included)
        return (repr(sorted(run_options(settings).items())), rows, tuple(sorted(cases.labels.items())))

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
        checkpoint, with its own cases and settings; only the numbers of epochs may change. Runs in
        the background as :meth:`train` does."""
        from LWITrainingLib import run_folder
        from LWITrainingLib.training_settings import TrainingSettings

        if not self.canResume(modelName, modelsFolder):
            raise ValueError(f"There is no interrupted training of '{modelName}' to resume.")
        run = self.runFolder(modelName, modelsFolder)
        settings = TrainingSettings.from_dict(run_folder.read_settings(run))
        if epochs:
            settings.epochs = int(epochs)
        if pretrainEpochs:
            settings.pretrain_epochs = int(pretrainEpochs)
        return self._launch(run, settings, modelsFolder, True, wait, onEvent, onFinished, start, plot)

    def _checkNotRunning(self) -> None:
        if self.runner is not None and self.runner.running:
            raise RuntimeError("A training is already running: cancel it first.")

    def _launch(self, run, settings, modelsFolder, resume, wait, onEvent, onFinished, start, plot, cases=None):
        from LWICommon import files, jobs
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment
        from LWITrainingLib import run_folder, training_settings
        from LWITrainingLib.plots import TrainingCurves

        self._checkNotRunning()
        checkpoint = files.model_path(run, settings.model_name)
        finalPath = files.model_path(self.modelsFolder(modelsFolder), settings.model_name)
        args = training_settings.train_args(
            settings, os.path.join(run, run_folder.DATA_FOLDER), checkpoint, resume=resume, overwrite=not resume
        )
        self.lastCommand = training_settings.cli_args.quote_command(args)
        self.curves = TrainingCurves()

        def eventReceived(event) -> None:
            if event.get("event") == "plan":  # lwi train's own plan, before it trains
                self.lastPlan = event
                self._lastPlanKey = self._planKey(cases, settings) if cases is not None else None
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
        if wait:
            self.runner.start()
            self.runner.wait()
            if self.runner.error_message():
                raise RuntimeError(self.runner.error_message())
        elif start:
            # From the console nothing else polls the run: without this it would never end for Slicer.
            jobs.pollInBackground(self.runner.start())
        return self.runner

    def _publishModel(self, checkpoint: str, finalPath: str) -> None:
        """Copy the trained bundle into the models folder and select it in LWI Segmentation."""
        from LWITrainingLib import run_folder

        os.makedirs(os.path.dirname(finalPath), exist_ok=True)
        self.lastModelPath = run_folder.publish_model(checkpoint, finalPath)
        logging.info(f"LWITraining: model saved to {finalPath}")
        try:
            self.segmentationLogic().selectModel(finalPath)
        except Exception:  # the other module missing must not turn a finished training into a failure
            logging.exception("LWITraining: could not select the new model in LWI Segmentation")

    def cancel(self) -> None:
        """Stop the running training; the last checkpoint is kept, so :meth:`resume` continues from it."""
        if self.runner is not None:
            self.runner.cancel()

    def stageText(self, event: Dict[str, Any]) -> str:
        """``"Step 2: fine-tuning, epoch 12/300, ETA 3 min 10 s"`` for a progress event."""
        from LWICommon.process import format_duration
        from LWITrainingLib.plots import stage_title

        text = stage_title(event.get("stage"))
        if event.get("epoch") is not None and event.get("epochs"):
            text += f", epoch {event['epoch']}/{event['epochs']}"
        eta = format_duration(event.get("eta_seconds"))
        return text + (f", ETA {eta}" if eta else "")

    # -- plot --------------------------------------------------------------------------------
    def updatePlot(self, show: bool = True) -> None:
        """Copy :attr:`curves` into table nodes and draw them in one plot chart (losses and
        validation Dice against the run's epoch), shown in the layout when first made."""
        from LWITrainingLib.plot_nodes import TrainingPlot

        if self.curves is None:
            return
        if self.plot is None:
            self.plot = TrainingPlot()
        if self.plot.update(self.curves) and show:
            self.showChart(self.plot.chartNode)

    def showChart(self, chartNode) -> None:
        """Switch to a layout with a plot view showing ``chartNode`` (needs Slicer's views)."""
        import slicer

        if slicer.app.layoutManager() is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chartNode)

    # -- using the result --------------------------------------------------------------------
    def _previewInputs(self, case, settings):
        """(the case's volume node, the preview options) for a preview; sets :attr:`lastPreviewNote`.

        A scene case is previewed on its own volume node; a folder case's image is loaded once, as
        one node that the next preview, :meth:`clearPreview` and :meth:`clearCases` remove."""
        from LWICommon import mrml
        from LWITrainingLib.training_settings import preview_note

        settings = self._settings(settings, getattr(settings, "model_name", None) or "preview")
        # The plan's network, ROI and spacing for the "auto" settings, if the plan shown is still theirs.
        plan = self.lastPlan.get("settings") if self.planIsCurrent(self.trainingSet, settings) else None
        volumeNode = case
        if hasattr(case, "image"):
            volumeNode = getattr(case, "node", None)
            if volumeNode is None:
                if not case.image:
                    raise ValueError(f"The case {case.name} has no image.")
                self.clearPreview()
                volumeNode = self._previewVolume = mrml.loadVolume(case.image, f"{case.name} (training case)")
                mrml.forgetFiles(volumeNode)  # the scene does not own the case's file: never saved over it
        self.lastPreviewNote = preview_note(settings, plan)
        if self.lastPreviewNote:
            logging.info(f"LWITraining preview: {self.lastPreviewNote}")
        return volumeNode, settings.preview_options(plan)

    def clearPreview(self) -> None:
        """Remove the volume node loaded for the preview of a folder case, and the preview itself."""
        import slicer

        if self._previewVolume is not None:
            if slicer.mrmlScene.IsNodePresent(self._previewVolume):
                slicer.mrmlScene.RemoveNode(self._previewVolume)
            self._previewVolume = None
            self.segmentationLogic().clearPreview()

    def showPreview(self, case, settings=None):
        """The Step-1 shuffle/mask preview of a training case (a ``CaseSource`` or a volume node),
        with these training settings (arch, ROI, mask ratio, cube size, spacing, intensity), made by
        LWI Segmentation's preview. Settings left "auto" are the plan's when :attr:`lastPlan` is
        current for :attr:`trainingSet` and these settings (:meth:`planIsCurrent`), else stand-ins;
        :attr:`lastPreviewNote` says which. Blocks (console); the panel uses :meth:`startPreview`."""
        volumeNode, options = self._previewInputs(case, settings)
        return self.segmentationLogic().preview(volumeNode, options=options)

    def startPreview(self, case, settings=None):
        """:meth:`showPreview` as a background process, not started yet (the panel follows it)."""
        volumeNode, options = self._previewInputs(case, settings)
        segmentationLogic = self.segmentationLogic()
        runner = segmentationLogic.startPreview(volumeNode, options)
        self.lastCommand = segmentationLogic.lastCommand
        return runner

    def segmentWithModel(
        self,
        volumeNode,
        modelPath: Optional[str] = None,
        device: str = "auto",
        wait: bool = False,
        callback: Optional[Callable] = None,
    ):
        """Segment ``volumeNode`` with ``modelPath`` (default: the model trained last) through
        LWI Segmentation; returns the segmentation node (``wait``) or the running job (a failure
        in the background is logged, or passed to ``callback(node, error)``)."""
        return self.segmentationLogic().segment(
            volumeNode, self._modelToUse(modelPath), device=device, wait=wait, callback=callback
        )

    def startSegmentWithModel(
        self, volumeNode, modelPath: Optional[str] = None, device: str = "auto", onImported: Optional[Callable] = None
    ):
        """:meth:`segmentWithModel` as a job not started yet (the panel follows it)."""
        segmentationLogic = self.segmentationLogic()
        job = segmentationLogic.startSegmentation(
            volumeNode, self._modelToUse(modelPath), device=device, onImported=onImported
        )
        self.lastCommand = segmentationLogic.lastCommand
        return job

    def _modelToUse(self, modelPath: Optional[str]) -> str:
        modelPath = modelPath or self.lastModelPath
        if not modelPath:
            raise ValueError("No model has been trained yet in this session: give modelPath.")
        return str(modelPath)
