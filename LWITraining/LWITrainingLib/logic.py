"""LWI Training's module logic: :class:`TrainingLogic` (everything on the scene, also from the Python
console) with Slicer's parameter node and the dependency installer."""

from __future__ import annotations

from LWITrainingLib.parameters import LWITrainingParameterNode
from LWITrainingLib.training_logic import TrainingLogic
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic


class LWITrainingLogic(ScriptedLoadableModuleLogic, TrainingLogic):
    """The module's logic: :class:`LWITrainingLib.training_logic.TrainingLogic` (everything on the scene,
    also from the Python console) plus the parameter node and the dependency installer."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from LWICommon.slicer_setup import ensureCoreImportable

        ensureCoreImportable()  # case layouts and label names come from the core, in this process
        TrainingLogic.__init__(self)

    def getParameterNode(self):
        return LWITrainingParameterNode(super().getParameterNode())

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Make sure torch and the core's requirements are installed (asks once); False if declined."""
        from LWICommon.slicer_setup import installDependencies

        return installDependencies(askConfirmation)
