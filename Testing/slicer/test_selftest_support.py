"""What the modules' self-tests (``<Module>/Testing/Python/``, run in a real Slicer) take from the
installed code, ``LWICommon.selftest``: code run in the core's Python from Slicer's environment, the
probe of the core, and the tiny model the segmentation self-test builds there with the shared
``lwi.testing.build_tiny_bundle``. On a real MRML application (slicer-core) with real subprocesses."""

from __future__ import annotations

import sys
import types
import unittest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_run_in_core_returns_stdout_and_reports_the_failing_line(slicer_app):
    from LWICommon.selftest import runInCore

    assert runInCore("import lwi, sys; print(lwi.__name__); print(sys.argv[0])") == "lwi\n-c"
    with pytest.raises(RuntimeError, match="ZeroDivisionError: division by zero"):
        runInCore("print('partial output'); 1 / 0")


def test_core_status_sees_the_core_and_whether_torch_has_cuda(slicer_app):
    import torch
    from LWICommon.selftest import coreStatus

    assert coreStatus() == (True, torch.cuda.is_available())


def test_the_segmentation_self_tests_tiny_model_predicts_liver_whatever_the_input(
    slicer_app, tmp_path, monkeypatch
):
    """The self-test relies on every segmentation with its tiny model being non-empty: the shared
    builder's ``bias`` makes the random network answer "liver" everywhere."""
    import slicer
    import torch
    from LWICommon.selftest import loadSelfTest

    from lwi.bundle import load_bundle

    # What the test file imports from Slicer's Qt layer and from the module file, stood in for.
    stand_in = types.SimpleNamespace(ScriptedLoadableModuleTest=unittest.TestCase)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", stand_in)
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", stand_in, raising=False)
    monkeypatch.setitem(sys.modules, "LWISegmentation", types.SimpleNamespace(LWISegmentationLogic=None))
    monkeypatch.delitem(sys.modules, "LWISegmentationTest", raising=False)
    testClass = loadSelfTest(str(ROOT / "LWISegmentation" / "LWISegmentation.py"), "LWISegmentationTest")

    path = testClass("runTest")._tinyModel(str(tmp_path))
    adapter, metadata = load_bundle(path)
    assert [(e["value"], e["name"]) for e in metadata["labels"]] == [(1, "liver"), (2, "spleen")]
    torch.manual_seed(0)
    with torch.no_grad():
        for scale in (1.0, 100.0):
            logits = adapter(scale * torch.randn(2, 1, 16, 16, 16))
            assert bool((logits.argmax(1) == 1).all())
    monkeypatch.delitem(sys.modules, "LWISegmentationTest", raising=False)
