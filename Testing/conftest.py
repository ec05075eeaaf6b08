"""Fixtures shared by several test files."""

from __future__ import annotations

import pytest
import torch

from lwi.testing import build_tiny_bundle


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread while a module's tests run: on the small shared CPUs of CI, two threads per
    process oversubscribe the cores and make tiny 3D networks many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def make_bundle():
    """The tiny-bundle builder (:func:`lwi.testing.build_tiny_bundle`), for tests that write model files."""
    return build_tiny_bundle
