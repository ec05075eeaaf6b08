"""Tiny, untrained model bundles for tests, in one place: pytest's ``make_bundle`` fixture
(``Testing/conftest.py``) and the Slicer modules' self-tests, which call :func:`build_tiny_bundle` in
the core's Python (Slicer's own process never imports torch). Shipped with the core for that reason;
it needs neither pytest nor Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

TINY_ROI = (16, 16, 16)
#: A SegResNet small enough to build, save and run on a CPU in well under a second.
TINY_SEGRESNET: Dict[str, Any] = dict(
    init_filters=8, blocks_down=[1, 1], blocks_up=[1], norm=["GROUP", {"num_groups": 4}]
)
TINY_LABELS: Dict[int, str] = {0: "background", 1: "liver", 2: "left kidney"}
TINY_PREPROCESSING: Dict[str, Any] = {
    "orientation": "RAS",
    "spacing": [4.0, 4.0, 4.0],
    "modality": "CT",
    "ct_window": [-175, 250],
}
TINY_INFERENCE: Dict[str, Any] = {"overlap": 0.25, "sw_batch_size": 2}


def build_tiny_bundle(
    path: Union[str, Path],
    labels: Optional[Mapping[int, str]] = None,
    seed: int = 0,
    in_channels: int = 1,
    provenance: Optional[Dict[str, Any]] = None,
    inference: Optional[Dict[str, Any]] = None,
    preprocessing: Optional[Dict[str, Any]] = None,
    bias: Optional[Sequence[float]] = None,
) -> Path:
    """Write a real, untrained tiny model bundle (SegResNet, 16^3 ROI, 4 mm CT preprocessing by
    default) to ``path`` with ``labels`` (``{value: name}``, background included) and return the path.

    ``bias``: one value per output channel (background first), set as the output layer's bias, so
    that the random network predicts the favoured labels (a segmentation test then sees them).
    """
    import torch

    from lwi.architectures import build
    from lwi.bundle import save_bundle

    labels = dict(TINY_LABELS if labels is None else labels)
    torch.manual_seed(seed)
    adapter = build("segresnet", in_channels, max(labels) + 1, TINY_ROI, **TINY_SEGRESNET)
    if bias is not None:
        with torch.no_grad():
            adapter.output_bias().copy_(torch.tensor([float(b) for b in bias]))
    return save_bundle(
        path,
        adapter,
        labels,
        TINY_PREPROCESSING if preprocessing is None else preprocessing,
        TINY_INFERENCE if inference is None else inference,
        provenance,
    )
