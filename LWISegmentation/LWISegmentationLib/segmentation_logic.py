"""What LWI Segmentation does, on the scene and without Qt (SlicerNNUnet's Logic/Widget split).

:class:`SegmentationLogic` holds everything of the module that touches MRML: segmenting a volume
node through the worker process, the Step-1 preview, "Add to training set". The module file's
``LWISegmentationLogic`` adds only what needs Slicer's Qt side (the parameter node, installing the
dependencies). Being Qt-free, the whole class runs in the slicer-core test harness.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Callable, Optional

# The worker process of this Slicer session, shared by every logic object (the widget's and the
# console's), so the model is loaded once per session. Kept when this file is executed again
# (Reload reloads LWICommon), so the old widget's cleanup() still finds the worker to stop it.
_worker = globals().get("_worker")


def sharedWorker():
    """The session's :class:`LWISegmentationLib.worker.WorkerClient` (started on first use)."""
    global _worker
    if _worker is None:
        import slicer
        from LWICommon import cli_args
        from LWICommon.slicer_setup import coreEnvironment
        from LWISegmentationLib.worker import WorkerClient

        _worker = WorkerClient(cli_args.python_executable(), env=coreEnvironment(), cwd=slicer.app.temporaryPath)
    return _worker


def shutdownSharedWorker() -> None:
    """End the session's worker process (frees its GPU memory); the next segmentation starts a new one."""
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None


def _checkStillInScene(*nodes) -> None:
    """Raise before a result is imported next to a node that left the scene (closed or deleted
    while the run went on): its ID could by now name an unrelated node."""
    import slicer

    for node in nodes:
        if node is not None and not slicer.mrmlScene.IsNodePresent(node):
            raise RuntimeError(f"{node.GetName()} was removed from the scene while the run was going on.")


def _logFailure(result, error: Optional[str]) -> None:
    """The callback of background runs started without one: their failure goes to Slicer's log."""
    if error:
        logging.error(f"LWI: {error}")


class SegmentationLogic:
    """Everything LWI Segmentation does, callable from the Python console without the GUI::

        logic = slicer.util.getModuleLogic("LWISegmentation")
        [m.name for m in logic.listModels()]                 # the trained models
        seg = logic.segment(volumeNode, "/path/liver.lwi.safetensors", device="cuda")   # blocks
        logic.segment(volumeNode, model, callback=lambda node, error: print(node, error))  # background
        logic.makePreview(volumeNode, numSubvolumes=6, maskRatio=0.4, cubeSize=16)
        logic.addToTrainingSet(volumeNode, seg, model)

    Segmentation runs in a worker process (``python -m lwi.worker``) that stays alive for the
    session, so the model stays loaded on the GPU between volumes.
    """

    def __init__(self) -> None:
        self.lastCommand = ""
        self.lastResult = None
        self.selectedModelPath: Optional[str] = None
        self.lastUncertainty = None  # the uncertainty map node of the last segmentation that asked for one
        self._uncertaintyMaps: dict = {}  # input volume ID -> its map (a new segmentation replaces it)
        #: Folders of the models selected in this session (LWI Training's models folder when the
        #: user picked another one): listed with the default models folder.
        self.modelFolders: list = []
        self._previewNodes: list = []
        self._labelOutlines: list = []  # (slice node, its UseLabelOutline before the preview)

    def selectModel(self, modelPath: str) -> None:
        """Make ``modelPath`` the module's model (LWI Training calls this with a new model); the
        other models of its folder are listed from now on too."""
        self.selectedModelPath = str(modelPath)
        folder = os.path.dirname(os.path.abspath(self.selectedModelPath))
        if folder not in self.modelFolders:
            self.modelFolders.append(folder)

    def shownVolume(self):
        """The volume shown in the slice views (background layer), else the scene's first volume
        that is not a label map."""
        import slicer

        for compositeNode in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            volumeID = compositeNode.GetBackgroundVolumeID()
            node = slicer.mrmlScene.GetNodeByID(volumeID) if volumeID else None
            if node is not None and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode"):
                return node
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if not node.IsA("vtkMRMLLabelMapVolumeNode"):
                return node
        return None

    # -- models ---------------------------------------------------------------------------
    def listModels(self, folders=None, extra=()) -> list:
        """The models the user trained (the models folder LWI Training publishes to:
        :func:`LWICommon.files.models_folder`, and the folders of the models selected in this
        session, :attr:`modelFolders`; or ``folders`` if given) and the ``extra`` files,
        as :class:`LWISegmentationLib.models.ModelEntry` (``.name``, ``.path``, ``.labels``,
        ``.architecture``, ``.strategy``, ``.validation_dice``, ``.description()``)."""
        from LWICommon import files
        from LWISegmentationLib import models

        if folders is None:
            folders = [files.models_folder()] + [f for f in self.modelFolders if f != files.models_folder()]
        return models.list_models(folders, extra)

    def modelInfo(self, modelPath: str) -> dict:
        """A model bundle's metadata (labels, architecture, preprocessing, provenance), read from the
        file's header without loading the weights. Raises ValueError for a file that is no model."""
        from LWISegmentationLib.models import read_bundle_metadata

        return read_bundle_metadata(str(modelPath))

    # -- segmentation ---------------------------------------------------------------------
    def segment(
        self,
        inputVolume,
        modelPath: str,
        device: str = "auto",
        outputSegmentation=None,
        show3D: bool = True,
        callback: Optional[Callable] = None,
        options: Optional[dict] = None,
        timeout: Optional[float] = None,
        wait: Optional[bool] = None,
        uncertainty: bool = False,
    ):
        """Segment ``inputVolume`` with the model file ``modelPath``.

        Without ``callback`` (the default) this blocks and returns the segmentation node: one
        named, coloured segment per label, on the input's grid, placed next to the input, in
        ``outputSegmentation`` if given (its segments are replaced) or else in a new node. Raises
        RuntimeError with the run's message on failure.

        With ``callback`` it returns at once with the running job (``.cancel()`` stops it) and calls
        ``callback(segmentationNode, None)`` on success or ``callback(None, errorMessage)`` when
        it fails or is cancelled; the events are delivered while Slicer's event loop runs.

        ``wait=False`` without a callback also returns the running job at once (it is polled while
        Slicer's event loop runs; the result is imported when it is done).

        ``options``: ``largest_component``, ``overlap``, ``sw_batch_size``, ``roi_size``,
        ``spacing_scale``, ``amp`` (see ``lwi segment --help``).

        ``uncertainty``: also load the uncertainty map (:mod:`LWISegmentationLib.uncertainty`) as a
        volume next to the input (:attr:`lastUncertainty`), shown over it in the slice views; its
        score is on both nodes (:meth:`uncertaintyScore`).
        """
        from LWICommon import jobs

        if wait is None:
            wait = callback is None
        imported = []
        job = self.startSegmentation(
            inputVolume, modelPath, device, outputSegmentation, show3D, imported.append, options, uncertainty
        )
        if not wait:
            # Without a callback a failure would pass unnoticed: it goes to the log.
            job.on_finished = jobs.withCallback(job.on_finished, callback or _logFailure, imported)
            job.start()
            return jobs.pollInBackground(job)
        job.start()
        job.wait(timeout)
        if job.error_message():
            raise RuntimeError(job.error_message())
        return imported[0] if imported else None

    def startSegmentation(
        self,
        inputVolume,
        modelPath: str,
        device: str = "auto",
        outputSegmentation=None,
        show3D: bool = True,
        onImported: Optional[Callable] = None,
        options: Optional[dict] = None,
        uncertainty: bool = False,
    ):
        """The segmentation as a job that is not started yet (the GUI starts it in a TaskPanel).

        The input volume is written to a temporary file with its exact geometry (the node is not
        modified); the worker writes the label map; on success it is imported and
        ``onImported(segmentationNode)`` is called.
        """
        import slicer
        from LWICommon import cli_args, files, mrml
        from LWICommon.labels import segment_specs

        if inputVolume is None:
            raise ValueError("Select an input volume.")
        modelPath = str(modelPath)
        metadata = self.modelInfo(modelPath)  # a clear error now, not after the worker started
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        inputPath = mrml.writeVolumeNode(inputVolume, files.input_volume_path(runDir, inputVolume.GetName()))
        outputPath = files.output_labelmap_path(runDir, inputVolume.GetName())
        uncertaintyPath = os.path.join(runDir, "uncertainty.nrrd") if uncertainty else None
        if uncertaintyPath:
            options = {**(options or {}), "uncertainty_path": uncertaintyPath}
        self.lastCommand = cli_args.quote_command(
            cli_args.segment_command(modelPath, inputPath, outputPath, device=device, options=options)
        )

        def onFinished(job) -> None:
            self.lastResult = job.result
            if job.returncode != 0 or job.cancelled:
                return
            _checkStillInScene(inputVolume, outputSegmentation)
            labels = (job.result or {}).get("labels") or metadata.get("labels", [])
            segmentationNode = mrml.importLabelmap(
                outputPath, segment_specs(labels), inputVolume, outputSegmentation, show3D=show3D
            )
            if uncertaintyPath:
                self._showUncertainty(uncertaintyPath, inputVolume, segmentationNode, (job.result or {}).get("uncertainty_score"))
            if onImported is not None:
                onImported(segmentationNode)

        return sharedWorker().segment(
            modelPath, inputPath, outputPath, device=device, options=options, temp_dir=runDir,
            on_finished=onFinished, start=False,
        )

    # -- uncertainty ----------------------------------------------------------------------
    def _showUncertainty(self, path: str, inputVolume, segmentationNode, score) -> None:
        """Load the map of a finished segmentation, replacing this input's previous map, and show it."""
        from LWICommon import mrml
        from LWISegmentationLib import uncertainty

        mrml.removeNodes([self._uncertaintyMaps.pop(inputVolume.GetID(), None)])
        self.lastUncertainty = uncertainty.load_map(path, inputVolume, score)
        self._uncertaintyMaps[inputVolume.GetID()] = self.lastUncertainty
        if score is not None:
            segmentationNode.SetAttribute(uncertainty.SCORE_ATTRIBUTE, repr(float(score)))
        uncertainty.show_overlay(self.lastUncertainty)

    @staticmethod
    def uncertaintyScore(node) -> Optional[float]:
        """The uncertainty score of a segmentation (or map) node made with ``uncertainty=True``
        (higher = less certain), else None."""
        from LWISegmentationLib import uncertainty

        return uncertainty.score_of(node)

    @staticmethod
    def setUncertaintyOpacity(opacity: float) -> None:
        """The opacity of the uncertainty overlay in the slice views (0 hides it)."""
        from LWISegmentationLib import uncertainty

        uncertainty.set_opacity(opacity)

    def rankFolder(self, folder: str, modelPath: str, device: str = "auto", outputFolder: Optional[str] = None):
        """Segment every image of ``folder`` (``lwi segment`` on the folder, with uncertainty maps) and
        return ``[(image file name, score)]`` least certain first: the order in which to correct them.
        Label maps and maps go to ``outputFolder`` (default: a new temporary folder), as
        ``labels/`` and ``uncertainty/``. Blocks; raises RuntimeError with the run's message."""
        import slicer
        from LWICommon import cli_args, files
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment
        from LWISegmentationLib import uncertainty

        self.modelInfo(modelPath)
        out = outputFolder or files.make_run_dir(slicer.app.temporaryPath, prefix="lwi-rank-")
        os.makedirs(out, exist_ok=True)
        args = cli_args.segment_command(
            str(modelPath), folder, os.path.join(out, "labels"), device=device,
            options={"uncertainty_path": os.path.join(out, "uncertainty")},
        )
        self.lastCommand = cli_args.quote_command(args)
        runner = ProcessRunner(args, env=coreEnvironment(), cwd=out).start()
        runner.wait()
        if runner.error_message():
            raise RuntimeError(runner.error_message())
        return uncertainty.ranked_folder(runner.result or {}, sorted(os.listdir(folder)))

    def shutdownWorker(self) -> None:
        """End the session's worker process (frees its GPU memory); the next segmentation starts
        a new one."""
        shutdownSharedWorker()

    # -- Step-1 preview -------------------------------------------------------------------
    def makePreview(
        self,
        inputVolume,
        numSubvolumes: Optional[int] = None,
        maskRatio: float = 0.4,
        cubeSize: int = 16,
        seed: Optional[int] = None,
        modelPath: Optional[str] = None,
        device: str = "auto",
        show3D: bool = True,
        callback: Optional[Callable] = None,
    ):
        """Show what LWI Step 1 makes of ``inputVolume``: the shuffled view (background) and the
        shuffled-and-masked view (foreground) in the slice views, the sub-volumes as outlined
        labels (their boundaries), and the masked view as a volume rendering in 3D (``show3D``).

        ``numSubvolumes`` None: as the model ``modelPath`` (whose preprocessing is also used), or
        6 (UNETR at 96^3). ``seed`` None: a new random draw. Blocks and returns
        ``{"shuffled": node, "shuffled_masked": node, "subvolumes": node, "info": preview.json}``;
        with ``callback`` it returns the running process and calls ``callback(preview, error)``.
        A new preview replaces the previous preview's nodes; the input volume is not modified.
        """
        from LWISegmentationLib.preview import preview_options

        options = preview_options(numSubvolumes, maskRatio, cubeSize, seed, modelPath, device)
        return self.preview(inputVolume, options, show3D=show3D, callback=callback)

    def preview(self, inputVolume, options: Optional[dict] = None, show3D: bool = True, callback: Optional[Callable] = None):
        """:meth:`makePreview` with ``lwi preview`` options as they are (``subvolumes``, ``model``,
        ``arch``, ``roi``, ``mask_ratio``, ``cube_size``, ``spacing``, ``modality``, ``seed``,
        ``device``); LWI Training shows its training settings this way."""
        from LWICommon import jobs

        result = []
        runner = self.startPreview(inputVolume, options, show3D, result.append)
        if callback is not None:
            runner.on_finished = jobs.withCallback(runner.on_finished, callback, result)
            runner.start()
            return jobs.pollInBackground(runner)
        runner.start()
        runner.wait()
        if runner.error_message():
            raise RuntimeError(runner.error_message())
        return result[0]

    def startPreview(
        self, inputVolume, options: Optional[dict] = None, show3D: bool = True, onLoaded: Optional[Callable] = None
    ):
        """The ``lwi preview`` process for :meth:`preview`, not started yet (the GUI starts it)."""
        import slicer
        from LWICommon import cli_args, files, mrml
        from LWICommon.process import ProcessRunner
        from LWICommon.slicer_setup import coreEnvironment
        from LWISegmentationLib import preview

        if inputVolume is None:
            raise ValueError("Select an input volume.")
        options = {k: v for k, v in (options or {}).items() if v is not None}
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        inputPath = mrml.writeVolumeNode(inputVolume, files.input_volume_path(runDir, inputVolume.GetName()))
        outDir = os.path.join(runDir, "preview")
        args = cli_args.preview_command(inputPath, outDir, options)
        self.lastCommand = cli_args.quote_command(args)

        def onFinished(runner) -> None:
            if runner.returncode != 0 or runner.cancelled:
                return
            _checkStillInScene(inputVolume)
            loaded = self.showPreview(preview.read_preview(outDir), inputVolume, show3D)
            if onLoaded is not None:
                onLoaded(loaded)

        return ProcessRunner(args, env=coreEnvironment(), cwd=runDir, temp_dir=runDir, on_finished=onFinished)

    def loadPreview(self, info: dict, inputVolume) -> dict:
        """Load the views of an ``lwi preview`` folder (``info`` from
        :func:`LWISegmentationLib.preview.read_preview`) next to ``inputVolume`` (same folder, same parent
        transform), replacing the previous preview's nodes. The nodes keep no link to the
        temporary files, so Save Data writes them."""
        from LWICommon import mrml

        self.clearPreview()  # this module's own nodes from the previous draw
        name = inputVolume.GetName()
        paths = info["paths"]
        shuffled = mrml.loadVolume(paths["shuffled"], f"{name} LWI shuffled")
        masked = mrml.loadVolume(paths["shuffled_masked"], f"{name} LWI shuffled+masked")
        subvolumes = mrml.loadVolume(paths["subvolumes"], f"{name} LWI sub-volumes", labelmap=True)
        self._previewNodes = [shuffled, masked, subvolumes]
        for node in self._previewNodes:
            mrml.forgetFiles(node)
            mrml.placeNextTo(node, inputVolume)
        return {"shuffled": shuffled, "shuffled_masked": masked, "subvolumes": subvolumes, "info": info}

    def showPreview(self, info: dict, inputVolume, show3D: bool = True) -> dict:
        """:meth:`loadPreview`, then show the views: shuffled as background, masked as foreground,
        the sub-volumes as outlined labels, and the masked view as a volume rendering (``show3D``)."""
        import slicer

        loaded = self.loadPreview(info, inputVolume)
        slicer.util.setSliceViewerLayers(
            background=loaded["shuffled"], foreground=loaded["shuffled_masked"], label=loaded["subvolumes"],
            foregroundOpacity=0.5, labelOpacity=1.0, fit=True,
        )
        # Outlined labels draw the sub-volume boundaries without hiding the image (until clearPreview).
        for sliceNode in slicer.util.getNodesByClass("vtkMRMLSliceNode"):
            self._labelOutlines.append((sliceNode, bool(sliceNode.GetUseLabelOutline())))
            sliceNode.SetUseLabelOutline(True)
        if show3D:
            volumeRendering = slicer.modules.volumerendering.logic()
            displayNode = volumeRendering.CreateDefaultVolumeRenderingNodes(loaded["shuffled_masked"])
            volumeRendering.CopyDisplayToVolumeRenderingDisplayNode(displayNode)
            displayNode.SetVisibility(True)
        return loaded

    def clearPreview(self) -> None:
        """Remove the preview's volumes and give the slice views back their own label outline setting."""
        from LWICommon import mrml

        mrml.removeNodes(self._previewNodes)
        self._previewNodes = []
        for sliceNode, outline in self._labelOutlines:
            sliceNode.SetUseLabelOutline(outline)
        self._labelOutlines = []

    # -- training set ---------------------------------------------------------------------
    def addToTrainingSet(
        self,
        volumeNode,
        segmentationNode,
        modelPath: str,
        folder: Optional[str] = None,
        caseName: Optional[str] = None,
    ):
        """Store ``volumeNode`` and its (corrected) ``segmentationNode`` as a labelled case in the
        training folder (default ``~/LWI/training-cases``, the data folder to pick in LWI
        Training). Segments are matched to the model's labels by name (case, spaces, ``_`` and
        ``-`` ignored) and written with the model's label values; others count as background.
        Neither node is modified and nothing is left in the scene. Returns
        :class:`LWISegmentationLib.training_set.AddedCase` (``.message()`` says what was done); raises
        ValueError when nothing matches.
        """
        import slicer
        from LWICommon import files, mrml
        from LWISegmentationLib import training_set

        if volumeNode is None or segmentationNode is None:
            raise ValueError("Select the volume and its segmentation.")
        metadata = self.modelInfo(modelPath)
        labels = training_set.model_labels(metadata.get("labels", []))
        if not folder or folder == ".":
            folder = files.default_training_folder()
        modality = (metadata.get("preprocessing") or {}).get("modality")
        runDir = files.make_run_dir(slicer.app.temporaryPath)
        try:
            imagePath = mrml.writeVolumeNode(volumeNode, files.input_volume_path(runDir, volumeNode.GetName()))
            labelPath = os.path.join(runDir, "segmentation.nrrd")
            names = mrml.writeSegmentsAsLabelmap(segmentationNode, volumeNode, labelPath)
            return training_set.add_to_training_set(
                folder,
                caseName or volumeNode.GetName(),
                imagePath,
                labelPath,
                training_set.segment_names_in_order(names),
                labels,
                modality=modality,
            )
        finally:
            shutil.rmtree(runDir, ignore_errors=True)
