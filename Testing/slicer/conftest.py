"""The ``slicer_app`` fixture: a real MRML scene with Slicer's application and module logics
(:mod:`harness`). Tests that use it skip only where slicer-core is not installed, i.e. on Python
3.9, for which it has no wheel; the test requirements install it everywhere else, so on CI they run."""

from __future__ import annotations

import os
import sys

import pytest

# slicer-core's package extends its __path__ with every "slicer" folder found on sys.path
# (pkgutil.extend_path) and imports every module there. Testing/ is on sys.path (its conftest), so
# this folder would be one: every test file here imported again as slicer.test_*, some of them
# importing each other half-initialised. Import it once, before any test file, without Testing/.
_TESTING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _TESTING]
try:
    import slicer  # noqa: F401
except ImportError:  # Python 3.9: no slicer-core wheel; the tests that need it skip
    pass
finally:
    sys.path[:] = _saved


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


@pytest.fixture
def slicer_modules(slicer_app, monkeypatch, tmp_path):
    """Both module files imported as Slicer imports them (the real packages, not reloaded stand-ins),
    on :func:`slicer_app`'s scene, with Slicer's Python layer of :mod:`scripted_layer`; each module's
    logic reachable through ``slicer.util.getModuleLogic``. The user's home is in ``tmp_path``."""
    import importlib
    import sys

    import scripted_layer

    scripted_layer.install(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("LWISegmentation", "LWITraining"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    segmentation = importlib.import_module("LWISegmentation")
    training = importlib.import_module("LWITraining")
    slicer_app.addPythonModule("LWISegmentation", segmentation.LWISegmentationLogic())
    slicer_app.addPythonModule("LWITraining", training.LWITrainingLogic())
    yield slicer_app
    from LWISegmentationLib.segmentation_logic import shutdownSharedWorker

    shutdownSharedWorker()
