"""The ``slicer_app`` fixture: a real MRML scene with Slicer's application and module logics
(:mod:`harness`). Tests that use it skip only where slicer-core is not installed, i.e. on Python
3.9, for which it has no wheel; the test requirements install it everywhere else, so on CI they run."""

from __future__ import annotations

import pytest


@pytest.fixture
def slicer_app(tmp_path):
    """A fresh :class:`harness.SlicerCoreApp` per test (``slicer.mrmlScene`` etc. point at it)."""
    pytest.importorskip("slicer", reason="slicer-core (Python >= 3.10) is not installed")
    from harness import SlicerCoreApp

    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    app = SlicerCoreApp(temporaryPath=str(temporary))
    try:
        yield app
    finally:
        app.close()
