"""LWI Segmentation's own helpers: its logic (the console API), the worker client, the model list,
the preview and "Add to training set".

Importing this package makes ``LWICommon`` importable first. Installed or built, LWICommon is a
folder next to the module files, on the ``sys.path`` entry that Slicer appends for every extension
module; in a source checkout added through *Additional module paths* only the module's own folder is
appended (``qSlicerScriptedLoadableModuleFactory``), so the checkout's sibling ``LWICommon/`` is loaded
from its location, without changing ``sys.path``. The same lines are in both modules' Lib
(Testing/slicer/test_module_imports.py checks they are identical).
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("LWICommon") is None:  # pragma: no cover - a source checkout in Slicer
    _checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _folder = os.path.join(_checkout, "LWICommon")
    _spec = importlib.util.spec_from_file_location(
        "LWICommon", os.path.join(_folder, "__init__.py"), submodule_search_locations=[_folder]
    )
    sys.modules["LWICommon"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["LWICommon"])
