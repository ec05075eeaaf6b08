"""The ``slicer_app`` fixture: a real MRML scene with Slicer's application and module logics
(:mod:`harness`). Tests that use it skip only where slicer-core cannot be installed (Python < 3.10);
the test requirements install it everywhere else, so on CI they run."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def slicer_app(tmp_path):
    """A fresh :class:`harness.SlicerCoreApp` per test (``slicer.mrmlScene`` etc. point at it)."""
    if sys.version_info >= (3, 10):
        pytest.importorskip("slicer", reason="slicer-core is in the test requirements")
    else:
        pytest.skip("slicer-core needs Python >= 3.10")
    from harness import SlicerCoreApp

    app = SlicerCoreApp(temporaryPath=str(tmp_path / "slicer-temp"))
    (tmp_path / "slicer-temp").mkdir(exist_ok=True)
    try:
        yield app
    finally:
        app.close()
