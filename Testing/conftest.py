"""Fixtures shared by several test files."""

from __future__ import annotations

import os

import pytest
import torch

from lwi.testing import build_tiny_bundle

MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core, at most :data:`MAX_WORKERS` (each worker holds torch, MONAI and
    slicer-core in memory, and the tests' own subprocesses need cores too)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _share_cores() -> None:
    """In a worker of a parallel run, the worker's share of the cores for torch's own threads: two
    threads per worker on two cores would oversubscribe them and make tiny 3D networks many times slower."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_share_cores()


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
