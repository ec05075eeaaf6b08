"""The self-test of the LWISegmentation module, run by Slicer: *Reload and Test* in developer mode
(``LWISegmentation.py`` hands this class to Slicer's ``ScriptedLoadableModule.runTest`` through
``LWICommon.selftest.loadSelfTest``) and CTest in an extension build (``CMakeLists.txt`` next to this
file). It needs a real Slicer; the same logic is tested without one by pytest (``Testing/slicer/``).
"""

from __future__ import annotations

import os

import slicer
import vtk
from LWICommon.selftest import coreStatus, runInCore
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LWISegmentation import LWISegmentationLogic


class LWISegmentationTest(ScriptedLoadableModuleTest):
    """Tests run by Slicer (Reload and Test, and the extension's CTest): the node <-> file round
    trip and the background process machinery (no torch needed), then, when the core's
    dependencies are installed, a tiny model (built in the core's Python) segments a synthetic
    volume (on the CPU, and again on the GPU when there is one), the Step-1 preview and Add to
    training set."""

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
    def _tinyModel(self, folder: str) -> str:
        """A tiny SegResNet bundle (labels liver, spleen) whose output favours liver, so every
        segmentation is non-empty whatever the random weights; built in the core's Python."""
        path = os.path.join(folder, "selftest.lwi.safetensors")
        runInCore(
            "from lwi.testing import build_tiny_bundle\n"
            f"build_tiny_bundle({path!r}, {{0: 'background', 1: 'liver', 2: 'spleen'}}, bias=[0.0, 5.0, 0.0],"
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

        ready, cuda = coreStatus()
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

        ready, _cuda = coreStatus()
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
