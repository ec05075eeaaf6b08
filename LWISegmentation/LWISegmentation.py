"""LWISegmentation: segment the loaded volume with an LWI model, in a background process.

Slicer loads this file at start-up: it describes the module and hands Slicer the widget, logic and
parameter node of ``LWISegmentationLib`` (importing that package makes the shared ``LWICommon``
importable, in a source checkout too). Nothing heavy is imported: torch, MONAI and the ``lwi`` core
run in a separate Python process (``PythonSlicer -m lwi segment ...``).
"""

from __future__ import annotations

from LWISegmentationLib.logic import LWISegmentationLogic
from LWISegmentationLib.parameters import LWISegmentationParameterNode
from LWISegmentationLib.widget import LWISegmentationWidget
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

#: The classes Slicer looks up in this file, by the module's name.
__all__ = ["LWISegmentation", "LWISegmentationLogic", "LWISegmentationParameterNode", "LWISegmentationWidget"]

README_URL = "https://github.com/lwi-slicer/SlicerLWI#readme"
PAPER_CITATION = (
    "Kunhimon S., Shaker A., Naseer M., Khan S., Khan F. S. Learnable Weight Initialization for "
    "Volumetric Medical Image Segmentation. Artificial Intelligence in Medicine, 2024 (arXiv:2306.09320)."
)


class LWISegmentation(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("LWI Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LWI extension developers"]
        self.parent.helpText = (
            "Segment the selected volume with a model trained by the LWI Training module (or the "
            "<code>lwi</code> command). The network runs in a separate process, on the GPU when one is "
            f'available. See the <a href="{README_URL}">LWI documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Learnable Weight Initialization (LWI) is the method of: "
            + PAPER_CITATION
            + " Networks, losses and inference come from MONAI."
        )


def __getattr__(name: str):
    """``LWISegmentationTest``, the self-test in ``Testing/Python/LWISegmentationTest.py``, read only when Slicer's
    *Reload and Test* asks this module for it (``ScriptedLoadableModule.runTest``): loading the
    module reads no test code (PEP 562 module attribute)."""
    if name == "LWISegmentationTest":
        from LWICommon.selftest import loadSelfTest

        return loadSelfTest(__file__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
