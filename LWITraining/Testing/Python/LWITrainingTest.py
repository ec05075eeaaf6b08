"""The self-test of the LWITraining module, run by Slicer: *Reload and Test* in developer mode
(``LWITraining.py`` hands this class to Slicer's ``ScriptedLoadableModule.runTest`` through
``LWICommon.selftest.loadSelfTest``) and CTest in an extension build (``CMakeLists.txt`` next to this
file). It needs a real Slicer; the same logic is tested without one by pytest (``Testing/slicer/``).
"""

from __future__ import annotations

import os
from typing import Sequence

import slicer
from LWICommon.selftest import coreStatus
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from LWITraining import LWITrainingLogic


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
        self.assertEqual(parameterNode.strategy, "auto")  # the plan chooses lwi or scratch
        self.assertEqual(parameterNode.architecture, "auto")  # the plan decides (lwi plan)
        self.assertEqual(parameterNode.roiSize, 0)
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
        # Probe, never install (setupDependencies would download GBs); and no skipTest: Reload and
        # Test calls runTest directly and reports SkipTest as a failure.
        ready, _cuda = coreStatus()
        if not ready:
            self.delayDisplay("Skipped tiny training: the core's dependencies are not installed")
            return
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
        metadata = logic.segmentationLogic().modelInfo(logic.lastModelPath)
        names = sorted(entry["name"] for entry in metadata["labels"] if int(entry["value"]) != 0)
        self.assertEqual(names, ["liver", "spleen"])
        self.delayDisplay("Tiny training passed")
