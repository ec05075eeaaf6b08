"""The core's shared vocabulary (``lwi/names.py``) for the Slicer modules, without importing ``lwi``.

The module files need the architecture, strategy and device names when Slicer loads them, before
the core's requirements (torch) are installed, and in a source checkout the core's folder is not on
Slicer's ``sys.path``. ``lwi/names.py`` imports only the standard library, so it is loaded here
from its file (found like the core itself, :func:`LWICommon.cli_args.core_dir`): the names are
defined once, in the core, and the ``lwi`` package is not imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

from LWICommon.cli_args import CORE_PACKAGE, core_dir

_MODULE_NAME = "LWICommon._core_names"


def _load() -> ModuleType:
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    root = core_dir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root is None:
        raise ImportError("The LWI core (lwi/names.py) is not installed next to the LWI modules.")
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, os.path.join(root, CORE_PACKAGE, "names.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


#: ``lwi.names``: ARCHITECTURE_NAMES, STRATEGY_NAMES, DEVICE_CHOICES, MODALITIES, MODEL_SUFFIX, ...
names = _load()
