"""Slicer imports every module file at start-up (and its generic tests import them without a main
window): the module files and their helper package must import nothing heavy. Each import runs in
a fresh Python with torch, MONAI and the core made unimportable and Slicer, Qt, CTK and VTK stubbed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import importlib, importlib.abc, json, sys, types

    BLOCKED = ("torch", "monai", "lwi")
    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())

    class Stub(types.ModuleType):
        # Any attribute is a class, so `from slicer import vtkMRMLScalarVolumeNode` and base classes work.
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {"__init__": lambda self, *a, **k: None})
            setattr(self, name, value)
            return value

    def stub(name):
        module = Stub(name)
        sys.modules[name] = module
        return module

    for name in ("qt", "ctk", "vtk", "slicer", "slicer.ScriptedLoadableModule", "slicer.util", "slicer.i18n"):
        stub(name)
    pnw = stub("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls=None: cls
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    sys.modules["slicer"].ScriptedLoadableModule = sys.modules["slicer.ScriptedLoadableModule"]
    sys.modules["slicer"].util = sys.modules["slicer.util"]
    sys.modules["slicer"].i18n = sys.modules["slicer.i18n"]
    sys.modules["slicer"].parameterNodeWrapper = pnw

    sys.path[:0] = sys.argv[2:]
    if sys.argv[1].startswith("LWICommon"):  # as in Slicer: a module's Lib makes LWICommon importable
        importlib.import_module("LWISegmentationLib")
    module = importlib.import_module(sys.argv[1])
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"heavy": heavy, "attempts": attempts, "file": module.__file__}))
    """
)

TARGETS = [
    "LWISegmentation",
    "LWITraining",
    "LWICommon",
    "LWICommon.process",
    "LWICommon.cli_args",
    "LWICommon.dependencies",
    "LWICommon.labels",
    "LWICommon.files",
    "LWICommon.vocabulary",
    "LWICommon.core_path",
    "LWISegmentationLib.models",
    "LWITrainingLib.training_settings",
    "LWICommon.mrml",
    "LWICommon.jobs",
    "LWITrainingLib.plot_nodes",
    "LWITrainingLib.run_folder",
    "LWISegmentationLib.segmentation_logic",
    "LWICommon.selftest",
    "LWITrainingLib.training_logic",
    "LWICommon.gui",
    "LWICommon.slicer_setup",
    "LWISegmentationLib.parameters",
    "LWISegmentationLib.logic",
    "LWISegmentationLib.widget",
    "LWITrainingLib.parameters",
    "LWITrainingLib.logic",
    "LWITrainingLib.widget",
]


@pytest.mark.parametrize("target", TARGETS)
def test_module_import_pulls_in_no_torch_monai_or_core(target, tmp_path):
    paths = [str(ROOT / "LWISegmentation"), str(ROOT / "LWITraining")]
    # Run from an empty folder so the repository's own lwi/ is not importable by accident.
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, target, *paths],
        cwd=tmp_path,
        capture_output=True,
        text=True, encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["attempts"] == []
    assert str(Path(report["file"]).resolve()).startswith(str(ROOT))


def test_the_blocker_really_blocks(tmp_path):
    """The check above would pass vacuously if blocking did not work: importing torch must fail."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD.replace("module = importlib.import_module(sys.argv[1])", "import torch"),
            "x",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True, encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr
