"""The core's shared vocabulary for the Slicer modules, without importing ``lwi``: ``lwi/names.py``
(names, file formats), ``lwi/segment_options.py`` (the segmentation options and their flags) and
``lwi/records.py`` (settings as JSON).

The module files need the architecture, strategy and device names when Slicer loads them, before
the core's requirements (torch) are installed, and in a source checkout the core's folder is not on
Slicer's ``sys.path``. These files import only the standard library, so they are loaded here
from their files (found like the core itself, :func:`LWICommon.core_path.core_dir`): the names are
defined once, in the core, and the ``lwi`` package is not imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType

from LWICommon.core_path import CORE_PACKAGE, core_dir


def _load(name: str) -> ModuleType:
    """``lwi/<name>.py`` as the module ``LWICommon._core_<name>``."""
    module_name = f"LWICommon._core_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    root = core_dir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root is None:
        raise ImportError(f"The LWI core (lwi/{name}.py) is not installed next to the LWI modules.")
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(root, CORE_PACKAGE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


#: ``lwi.names``: ARCHITECTURE_NAMES, STRATEGY_NAMES, DEVICE_CHOICES, MODALITIES, MODEL_SUFFIX, ...
names = _load("names")
#: ``lwi.segment_options``: SEGMENT_OPTIONS, to_args, ...
segment_options = _load("segment_options")
#: ``lwi.records``: settings dataclasses to JSON and back.
records = _load("records")
