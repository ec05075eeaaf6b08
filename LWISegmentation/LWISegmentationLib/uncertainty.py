"""Where the model is unsure: the uncertainty map of a segmentation as a slice-view overlay, its
per-case score, and ranking a folder of volumes least certain first (MONAI Label's active-learning
idea, without a server).

The core writes the map (``lwi segment --uncertainty``: the softmax entropy divided by log of the
number of classes, 0 certain .. 1 every class equally likely, on the input grid) and reports the
score (the mean of the map inside the predicted structures). Qt-free: runs in the slicer-core harness.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: The colour map of the overlay: a Slicer built-in (black = certain, through red and yellow to white).
COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
#: The node attribute holding a case's uncertainty score (on the map and on the segmentation node).
SCORE_ATTRIBUTE = "LWI.uncertaintyScore"
DEFAULT_OPACITY = 0.5


def load_map(path: str, inputVolume, score: Optional[float]):
    """Load the uncertainty map ``path`` as a volume node next to ``inputVolume``, coloured with
    :data:`COLOR_NODE_ID` over the fixed range [0, 1] (so maps of different cases compare), holding
    ``score`` in :data:`SCORE_ATTRIBUTE`; not linked to the (temporary) file."""
    from LWICommon import mrml

    name = f"{inputVolume.GetName()} LWI uncertainty"
    node = mrml.loadVolume(path, name)
    node.SetName(name)  # the name asked for, even while an older map of this volume is being replaced
    mrml.forgetFiles(node)
    mrml.placeNextTo(node, inputVolume)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(COLOR_NODE_ID)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    if score is not None:
        node.SetAttribute(SCORE_ATTRIBUTE, repr(float(score)))
    return node


def show_overlay(mapNode, opacity: float = DEFAULT_OPACITY) -> None:
    """Show ``mapNode`` as the foreground layer of every slice view at ``opacity`` (the volume stays
    the background)."""
    import slicer

    slicer.util.setSliceViewerLayers(foreground=mapNode, foregroundOpacity=float(opacity))


def set_opacity(opacity: float) -> None:
    """The overlay's opacity in every slice view (the panel's slider)."""
    import slicer

    for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
        composite.SetForegroundOpacity(float(opacity))


def score_of(node) -> Optional[float]:
    """The uncertainty score stored on a map or segmentation node (None when it has none)."""
    value = node.GetAttribute(SCORE_ATTRIBUTE) if node is not None else None
    return float(value) if value else None


def score_text(score: Optional[float]) -> str:
    """What the panel shows next to a result."""
    return "uncertainty n/a" if score is None else f"uncertainty {score:.3f}"


def rank(scores: Dict[str, Optional[float]]) -> List[Tuple[str, Optional[float]]]:
    """``(name, score)`` least certain first; a case without a score comes first (it was not scored)."""
    return sorted(scores.items(), key=lambda item: -(item[1] if item[1] is not None else float("inf")))


def ranked_folder(result: Dict[str, Any], images: Sequence[str]) -> List[Tuple[str, Optional[float]]]:
    """The ``lwi segment`` folder result's ``uncertainty`` (``{output path: score}``, least certain
    first) as ``(image file name, score)``: outputs are named after their images."""
    by_stem = {_stem(os.path.basename(p)): os.path.basename(p) for p in images}
    ranked = []
    for output, score in (result.get("uncertainty") or {}).items():
        name = by_stem.get(_stem(os.path.basename(output)), os.path.basename(output))
        ranked.append((name, score))
    return rank(dict(ranked))


def _stem(name: str) -> str:
    for suffix in (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
