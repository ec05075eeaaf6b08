"""What the modules' self-tests need from the installed code: finding them, and running code in the
core's Python.

The self-test of module ``M`` is the class ``MTest`` (a ``ScriptedLoadableModuleTest``) in
``M/Testing/Python/MTest.py``, outside the module file, as in Slicer's own modules. CTest runs that
file directly (``slicer_add_python_unittest`` in ``Testing/Python/CMakeLists.txt``). *Reload and Test*
runs ``ScriptedLoadableModule.runTest``, which looks ``MTest`` up as an attribute of the module file
(``Base/Python/slicer/ScriptedLoadableModule.py``): the module file answers that lookup with
:func:`loadSelfTest`, lazily, so loading a module at Slicer's start-up reads no test code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Tuple

from LWICommon import cli_args
from LWICommon.process import no_window_kwargs

#: Where a module's self-test lives, relative to the module file's folder.
SELF_TEST_FOLDER = os.path.join("Testing", "Python")


def selfTestPath(moduleFile: str, className: str) -> str:
    """The file of the self-test class ``className`` of the module file ``moduleFile``."""
    return os.path.join(os.path.dirname(os.path.abspath(moduleFile)), SELF_TEST_FOLDER, className + ".py")


def loadSelfTest(moduleFile: str, className: str) -> type:
    """The class ``className`` from the module's ``Testing/Python/<className>.py``, read from its
    file on every call so that *Reload and Test* runs the test as it is now.

    Raises AttributeError (what a module's ``__getattr__`` must raise) when the file is not there:
    an installed extension ships no tests; they run from the source checkout or the build tree."""
    path = selfTestPath(moduleFile, className)
    if not os.path.isfile(path):
        raise AttributeError(f"{className}: no self-test at {path} (tests are not installed)")
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec")  # from the source: a cached .pyc could be stale
    module = types.ModuleType(className)
    module.__file__ = path
    sys.modules[className] = module
    exec(code, module.__dict__)
    return getattr(module, className)


def runInCore(code: str, timeout: float = 600) -> str:
    """Run ``code`` in the core's Python (PythonSlicer, the core on its path) and return its stdout;
    RuntimeError with the last line of stderr when it fails. torch stays out of Slicer's process."""
    from LWICommon.slicer_setup import coreEnvironment

    python = cli_args.python_executable(current=sys.executable)
    done = subprocess.run(
        [python, "-c", code],
        env=coreEnvironment(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        **no_window_kwargs(),
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else "failed")
    return done.stdout.strip()


def coreStatus() -> Tuple[bool, bool]:
    """``(ready, cuda)``: whether the core's dependencies import in the core's Python, and whether
    torch sees a CUDA GPU there. Probes only: never installs anything."""
    try:
        return True, runInCore("import monai, torch; print(int(torch.cuda.is_available()))") == "1"
    except Exception:
        return False, False
