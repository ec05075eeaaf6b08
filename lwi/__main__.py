"""``python -m lwi`` is the same as the ``lwi`` command (Slicer starts it this way with PythonSlicer)."""

from lwi.cli import main

raise SystemExit(main())
