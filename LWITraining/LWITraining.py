"""LWITraining: train a segmentation model with LWI initialisation, in a background process.

Slicer loads this file at start-up: it describes the module and hands Slicer the widget, logic and
parameter node of ``LWITrainingLib`` (importing that package makes the shared ``LWICommon``
importable, in a source checkout too). Nothing heavy is imported: training runs in a separate Python
process (``PythonSlicer -m lwi train ...``).
"""

from __future__ import annotations

from LWITrainingLib.logic import LWITrainingLogic
from LWITrainingLib.parameters import LWITrainingParameterNode
from LWITrainingLib.widget import LWITrainingWidget
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

#: The classes Slicer looks up in this file, by the module's name.
__all__ = ["LWITraining", "LWITrainingLogic", "LWITrainingParameterNode", "LWITrainingWidget"]

README_URL = "https://github.com/lwi-slicer/SlicerLWI#readme"
PAPER_CITATION = (
    "Kunhimon S., Shaker A., Naseer M., Khan S., Khan F. S. Learnable Weight Initialization for "
    "Volumetric Medical Image Segmentation. Artificial Intelligence in Medicine, 2024 (arXiv:2306.09320)."
)


class LWITraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LWI Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        # It segments and previews through LWI Segmentation's logic, and its models are used there.
        self.parent.dependencies = ["LWISegmentation"]
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


def __getattr__(name: str):
    """``LWITrainingTest``, the self-test in ``Testing/Python/LWITrainingTest.py``, read only when Slicer's
    *Reload and Test* asks this module for it (``ScriptedLoadableModule.runTest``): loading the
    module reads no test code (PEP 562 module attribute)."""
    if name == "LWITrainingTest":
        from LWICommon.selftest import loadSelfTest

        return loadSelfTest(__file__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
