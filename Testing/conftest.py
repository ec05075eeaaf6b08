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
