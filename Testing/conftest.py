"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread while a module's tests run: on the small shared CPUs of CI, two threads per
    process oversubscribe the cores and make tiny 3D networks many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


TINY_ROI = (16, 16, 16)
#: A SegResNet small enough to build, save and run on a CPU in well under a second.
TINY_SEGRESNET = dict(init_filters=8, blocks_down=[1, 1], blocks_up=[1], norm=["GROUP", {"num_groups": 4}])
TINY_LABELS = {0: "background", 1: "liver", 2: "left kidney"}
TINY_PREPROCESSING = {"orientation": "RAS", "spacing": [4.0, 4.0, 4.0], "modality": "CT", "ct_window": [-175, 250]}
TINY_INFERENCE = {"overlap": 0.25, "sw_batch_size": 2}


def build_tiny_bundle(
    path,
    labels=None,
    seed: int = 0,
    in_channels: int = 1,
    provenance=None,
    inference=None,
):
    """Write a real, untrained tiny model bundle (SegResNet, 16^3 ROI, 4 mm CT preprocessing) to
    ``path`` with ``labels`` (``{value: name}``, background included) and return the path."""
    from lwi.architectures import build
    from lwi.bundle import save_bundle

    labels = dict(TINY_LABELS if labels is None else labels)
    torch.manual_seed(seed)
    adapter = build("segresnet", in_channels, max(labels) + 1, TINY_ROI, **TINY_SEGRESNET)
    return save_bundle(
        path, adapter, labels, TINY_PREPROCESSING, TINY_INFERENCE if inference is None else inference, provenance
    )


@pytest.fixture(scope="session")
def make_bundle():
    """The tiny-bundle builder (:func:`build_tiny_bundle`), for tests that write model files."""
    return build_tiny_bundle
