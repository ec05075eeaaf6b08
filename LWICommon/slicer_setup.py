"""First-use setup inside Slicer, shared by both modules (needs Slicer; imports it lazily).

torch comes from the PyTorch extension's ``PyTorchUtils`` (it installs the CUDA build that matches
the driver); the core's other requirements come from pip, with the packages Slicer ships and the
installed torch pinned so they are never replaced (:mod:`LWICommon.dependencies` decides what to
install). Checks read package metadata only: torch is never imported into Slicer's process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Dict, Optional

from LWICommon import cli_args, core_path, dependencies

#: True while an installation runs: pip's output pumps Slicer's event loop (processEvents), so a
#: second click on Apply/Train would otherwise start a second pip into the same site-packages.
_installing = False


def installDependencies(askConfirmation: bool = True) -> bool:
    """Make sure torch and the core's other requirements are installed; ask once before installing.

    Returns True when everything is there, False if the user declined or an installation is
    already running; raises RuntimeError with one clear sentence when it cannot be done.
    """
    global _installing
    if _installing:
        return False
    torchProblem = dependencies.torch_problem()
    missing = dependencies.missing_requirements()
    if torchProblem is None and not missing:
        return True
    import slicer

    conflicts = dependencies.shipped_conflicts(missing)
    if conflicts:
        raise RuntimeError(
            "LWI needs newer versions of packages that Slicer ships ("
            + "; ".join(conflicts)
            + "): use a newer Slicer."
        )
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        dependencies.describe_missing(torchProblem, missing)
    ):
        return False
    _installing = True
    try:
        if torchProblem is not None:
            _installTorch()
        args = dependencies.pip_install_requirements(missing)
        if args:
            slicer.util.pip_install(" ".join(args))
    finally:
        _installing = False
    stillMissing = dependencies.missing_requirements()
    if stillMissing:
        raise RuntimeError("These packages could not be installed: " + ", ".join(stillMissing) + ".")
    return True


def _installTorch() -> None:
    """Install (or upgrade) torch through the PyTorch extension, which picks the build for the GPU."""
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(
            "LWI needs the PyTorch extension: install it from the Extensions Manager and restart Slicer."
        ) from None
    _, torchSpecifier = dependencies.split_requirement(dependencies.TORCH_REQUIREMENT)
    # installTorch imports torch once at its end; only here, when torch was missing or too old.
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=torchSpecifier) is None:
        raise RuntimeError("PyTorch could not be installed: use the PyTorch Utils module to install it.")
    if dependencies.torch_problem() is not None:
        raise RuntimeError(
            f"PyTorch {dependencies.installed_version('torch')} is installed but LWI needs "
            f"{dependencies.TORCH_REQUIREMENT}: update it in the PyTorch Utils module and restart Slicer."
        )


def moduleDir() -> str:
    """The folder of the Slicer modules that holds ``LWICommon``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def coreEnvironment() -> Dict[str, str]:
    """The environment of core subprocesses: Slicer's start-up environment (the PythonSlicer launcher
    sets up Slicer's own paths) with the bundled core first on PYTHONPATH."""
    import slicer

    return cli_args.subprocess_env(core_path.core_dir(moduleDir()), slicer.util.startupEnvironment())


def ensureCoreImportable() -> Optional[str]:
    """Make ``import lwi`` work in Slicer's own process (the few helpers that read the core's
    torch-free tables: label names, dataset layouts). Installed, the core sits next to the modules;
    in a source checkout (module folders added to Slicer's module paths) it is the repository root,
    which Slicer does not put on ``sys.path``. Returns the folder added, or None."""
    if importlib.util.find_spec(core_path.CORE_PACKAGE) is not None:
        return None
    folder = core_path.core_dir(moduleDir())
    if folder and folder not in sys.path:
        sys.path.append(folder)  # appended: it must not shadow anything Slicer has
        return folder
    return None
