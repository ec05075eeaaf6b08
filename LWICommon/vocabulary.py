"""The core's shared vocabulary for the Slicer modules, without importing ``lwi``: ``lwi/names.py``
(names, file formats, the bundle header reader), ``lwi/option_types.py`` (range types, durations),
``lwi/segment_options.py`` and ``lwi/training_options.py`` (the option tables) and ``lwi/records.py``
(settings as JSON).

The module files need the architecture, strategy and device names when Slicer loads them, before
the core's requirements (torch) are installed, and in a source checkout the core's folder is not on
Slicer's ``sys.path``. These files import only the standard library and each other (relatively), so
they are imported here as the package ``LWICommon._core`` whose folder is the core's (found like the
core itself, :func:`LWICommon.core_path.core_dir`): each name is defined once, in the core, and the
``lwi`` package (its ``__init__``, torch) is not imported.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from LWICommon.core_path import CORE_PACKAGE, core_dir

_PACKAGE = "LWICommon._core"


def _load(name: str) -> ModuleType:
    """``lwi/<name>.py`` as the module ``LWICommon._core.<name>``."""
    if _PACKAGE not in sys.modules:
        root = core_dir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if root is None:
            raise ImportError(f"The LWI core (lwi/{name}.py) is not installed next to the LWI modules.")
        package = ModuleType(_PACKAGE, "The LWI core's standard-library files (LWICommon.vocabulary).")
        package.__path__ = [os.path.join(root, CORE_PACKAGE)]  # a package without running lwi/__init__.py
        sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.{name}")


#: ``lwi.names``: ARCHITECTURE_NAMES, STRATEGY_NAMES, DEVICE_CHOICES, MODALITIES, MODEL_SUFFIX, ...
names = _load("names")
#: ``lwi.option_types``: whole, number, duration, format_duration, ...
option_types = _load("option_types")
#: ``lwi.segment_options``: SEGMENT_OPTIONS, to_args, ...
segment_options = _load("segment_options")
#: ``lwi.training_options``: TRAINING_OPTIONS, check_value, problems, ...
training_options = _load("training_options")
#: ``lwi.records``: settings dataclasses to JSON and back.
records = _load("records")
