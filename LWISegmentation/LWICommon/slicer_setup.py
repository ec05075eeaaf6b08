"""First-use setup inside Slicer, shared by both modules (needs Slicer; imports it lazily).

torch comes from the PyTorch extension's ``PyTorchUtils`` (it installs the CUDA build that matches
the driver); the core's other requirements come from pip, with the packages Slicer ships pinned so
they are never replaced (:mod:`LWICommon.dependencies` decides what to install).
"""

from __future__ import annotations

import os
from typing import Dict

from LWICommon import cli_args, core_path, dependencies


def installDependencies(askConfirmation: bool = True) -> bool:
    """Make sure torch and the core's other requirements are installed; ask once before installing.

    Returns True when everything is there, False if the user declined; raises RuntimeError with
    one clear sentence when it cannot be done.
    """
    import slicer

    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(
            "LWI needs the PyTorch extension: install it from the Extensions Manager and restart Slicer."
        ) from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    torchMissing = not torchLogic.torchInstalled()
    missing = dependencies.missing_requirements()
    if not torchMissing and not missing:
        return True
    conflicts = dependencies.shipped_conflicts(missing)
    if conflicts:
        raise RuntimeError(
            "LWI needs newer versions of packages that Slicer ships ("
            + "; ".join(conflicts)
            + "): use a newer Slicer."
        )
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(
        dependencies.describe_missing(torchMissing, missing)
    ):
        return False
    if torchMissing:
        _, torchSpecifier = dependencies.split_requirement(dependencies.TORCH_REQUIREMENT)
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=torchSpecifier) is None:
            raise RuntimeError("PyTorch could not be installed: use the PyTorch Utils module to install it.")
    args = dependencies.pip_install_requirements(missing)
    if args:
        slicer.util.pip_install(" ".join(args))
    stillMissing = dependencies.missing_requirements()
    if stillMissing:
        raise RuntimeError("These packages could not be installed: " + ", ".join(stillMissing) + ".")
    return True


def coreEnvironment() -> Dict[str, str]:
    """The environment of core subprocesses: Slicer's start-up environment (the PythonSlicer launcher
    sets up Slicer's own paths) with the bundled core first on PYTHONPATH."""
    import slicer

    moduleDir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return cli_args.subprocess_env(core_path.core_dir(moduleDir), slicer.util.startupEnvironment())
