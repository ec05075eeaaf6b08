"""Where the ``lwi`` core is, seen from a module folder (plain Python, no imports of the core)."""

from __future__ import annotations

import os
from typing import Optional

#: The core's package name (``python -m lwi``).
CORE_PACKAGE = "lwi"


def core_dir(module_dir: str) -> Optional[str]:
    """The folder that contains the ``lwi`` package, for ``PYTHONPATH``.

    Installed extension: the core is installed next to the modules (``module_dir/lwi``). Source
    checkout (module folder added to Slicer's module paths): the repository root, one level up.
    """
    for candidate in (module_dir, os.path.dirname(os.path.abspath(module_dir))):
        if os.path.isfile(os.path.join(candidate, CORE_PACKAGE, "__init__.py")):
            return os.path.abspath(candidate)
    return None
