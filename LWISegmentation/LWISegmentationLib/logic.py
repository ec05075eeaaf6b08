"""LWI Segmentation's module logic: :class:`SegmentationLogic` (everything on the scene, also from the
Python console) with Slicer's parameter node and the dependency installer."""

from __future__ import annotations

import pathlib

from LWISegmentationLib.parameters import LWISegmentationParameterNode
from LWISegmentationLib.segmentation_logic import SegmentationLogic
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic


class LWISegmentationLogic(ScriptedLoadableModuleLogic, SegmentationLogic):
    """The module's logic: :class:`LWISegmentationLib.segmentation_logic.SegmentationLogic` (everything on the
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
