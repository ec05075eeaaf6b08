"""First use inside Slicer (LWICommon.slicer_setup): the core importable in Slicer's own process from
a source checkout, and the dependency check and install, each in a fresh Python laid out as
Slicer's: only the module folder on ``sys.path``, ``slicer`` and the PyTorch extension's
``PyTorchUtils`` stood in for. The ``PyTorchUtils`` stand-in behaves as fepegar/SlicerPyTorch's
``PyTorchUtils.py`` does: ``torchInstalled()`` finds torch's metadata and then imports torch;
``installTorch()`` installs and imports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import dependencies  # noqa: E402

_PRELUDE = """
import json, sys, types
# Slicer puts each module's folder on sys.path, nothing else of the repository; the venv's editable
# install of the core must not make `import lwi` work by accident.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and "__editable__" not in p]
sys.path[:0] = [{fakes!r}, {module_dir!r}]
import LWISegmentationLib  # noqa: F401  (as the module file does: makes the sibling LWICommon importable)
calls = []
slicer = types.ModuleType("slicer")
def pip_install(args):
    calls.append(("pip", args))
    if {reenter!r}:  # pip's output pumps the event loop: the user clicks Apply again
        from LWICommon.slicer_setup import installDependencies
        calls.append(("nested", installDependencies(askConfirmation=False)))
    if {installs!r}:
        import shutil
        for name in {installs!r}:
            shutil.rmtree({fakes!r} + "/" + name)
        import importlib; importlib.invalidate_caches()
slicer.util = types.SimpleNamespace(pip_install=pip_install, confirmOkCancelDisplay=lambda text: True)
sys.modules["slicer"] = slicer
sys.modules["slicer.util"] = slicer.util
"""

_PYTORCH_UTILS = '''
import importlib.util, json, os, sys

CALLS = os.environ["LWI_TEST_CALLS"]


def _record(what):
    with open(CALLS, "a") as f:
        f.write(json.dumps(what) + "\\n")


class PyTorchUtilsLogic:
    @staticmethod
    def torchInstalled():
        _record("torchInstalled")
        if importlib.util.find_spec("torch") is None:
            return False
        import torch  # noqa: F401  (what SlicerPyTorch does)
        return True

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None, torchvisionVersionRequirement=None):
        _record(["installTorch", torchVersionRequirement])
        import torch
        return torch
'''


def _dist_info(folder: Path, name: str, version: str) -> str:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return info.name


def _run(tmp_path: Path, code: str, reenter: bool = False, installs=(), fakes_setup=None):
    fakes = tmp_path / "fakes"
    fakes.mkdir(exist_ok=True)
    (fakes / "PyTorchUtils.py").write_text(_PYTORCH_UTILS)
    calls = tmp_path / "calls.jsonl"
    prelude = _PRELUDE.format(
        fakes=str(fakes), module_dir=str(ROOT / "LWISegmentation"), reenter=reenter, installs=list(installs)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LWI_TEST_CALLS"] = str(calls)
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    extension = [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()] if calls.exists() else []
    return json.loads(proc.stdout.strip().splitlines()[-1]), extension


_INSTALL = """
from LWICommon.slicer_setup import installDependencies
try:
    result = installDependencies(askConfirmation=False)
except RuntimeError as exc:
    result = str(exc)
print(json.dumps({"result": result, "calls": calls, "torch_imported": "torch" in sys.modules}))
"""


def test_the_core_is_importable_in_slicers_process_from_a_source_checkout(tmp_path):
    report, _ = _run(
        tmp_path,
        """
        import importlib.util
        before = importlib.util.find_spec("lwi") is not None
        from LWICommon.slicer_setup import ensureCoreImportable
        added = ensureCoreImportable()
        from LWICommon.labels import segment_specs
        specs = segment_specs([{"value": 1, "name": "liver"}])  # reads the core's label table
        import lwi
        print(json.dumps({"before": before, "added": added, "lwi": lwi.__file__, "specs": len(specs),
                          "torch": "torch" in sys.modules}))
        """,
    )
    assert report["before"] is False  # as Slicer loads the modules from the repository
    assert report["added"] == str(ROOT)
    assert report["lwi"] == str(ROOT / "lwi" / "__init__.py") and report["specs"] == 1
    assert report["torch"] is False


def test_installed_torch_is_checked_from_its_metadata_without_importing_it(tmp_path):
    assert dependencies.missing_requirements() == [], "this test needs the core's requirements installed"
    report, extension = _run(tmp_path, _INSTALL)
    assert report["result"] is True and report["calls"] == []
    assert report["torch_imported"] is False and extension == []


def test_pip_keeps_the_installed_torch_build(tmp_path):
    fakes = tmp_path / "fakes"
    old_monai = _dist_info(fakes, "monai", "1.0.0")  # too old: pip must install monai
    report, extension = _run(tmp_path, _INSTALL, installs=[old_monai])
    assert report["result"] is True and extension == []  # torch is fine: no PyTorch Utils call
    (kind, args), = report["calls"]
    assert kind == "pip" and "monai>=1.5" in args.split()
    assert f"torch=={metadata.version('torch')}" in args.split()  # pip cannot swap the torch build
    assert report["torch_imported"] is False


def test_too_old_torch_goes_through_pytorch_utils_not_pip(tmp_path):
    _dist_info(tmp_path / "fakes", "torch", "2.0.1")  # what an older extension left installed
    report, extension = _run(tmp_path, _INSTALL)
    assert extension == [["installTorch", ">=2.1"]]
    assert "2.0.1" in report["result"] and "PyTorch Utils" in report["result"]
    assert report["calls"] == []  # pip never ran with the old torch


def test_a_second_click_during_an_install_does_not_start_a_second_pip(tmp_path):
    fakes = tmp_path / "fakes"
    old_monai = _dist_info(fakes, "monai", "1.0.0")
    report, _ = _run(tmp_path, _INSTALL, reenter=True, installs=[old_monai])
    assert [c[0] for c in report["calls"]] == ["pip", "nested"]
    assert report["calls"][1][1] is False and report["result"] is True


def test_pins_and_torch_check_without_slicer():
    versions = {"numpy": "1.26.4", "torch": "2.5.1+cu121", "torchvision": "0.20.1+cu121"}
    args = dependencies.pip_install_requirements(["monai>=1.5"], versions.get)
    assert args[0] == "monai>=1.5" and {"torch==2.5.1+cu121", "torchvision==0.20.1+cu121", "numpy==1.26.4"} <= set(args)
    assert dependencies.torch_problem(versions.get) is None
    assert dependencies.torch_problem({"torch": "2.0.1"}.get) == "2.0.1 installed"
    assert dependencies.torch_problem({}.get) == "missing"
    question = dependencies.describe_missing("2.0.1 installed", [])
    assert "PyTorch >=2.1" in question and "2.0.1 installed" in question


@pytest.mark.skipif(os.name == "nt", reason="the fakes folder layout is POSIX here")
def test_fakes_shadow_the_real_distributions(tmp_path):
    """The tests above rely on the first distribution found on sys.path winning."""
    _dist_info(tmp_path / "fakes", "torch", "2.0.1")
    report, _ = _run(tmp_path, 'from importlib import metadata\nprint(json.dumps(metadata.version("torch")))\n')
    assert report == "2.0.1"
