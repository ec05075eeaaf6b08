"""What both LWI modules use (LWISegmentation and LWITraining have their own code in their Libs).

Three layers, so that as much as possible runs outside Slicer:

1. Plain Python (no Slicer, no Qt, no torch), tested with pytest anywhere:
   - :mod:`LWICommon.process`: run ``lwi ... --progress json`` without blocking, parse its JSON
     lines, cancel the whole process tree, report failures as one message.
   - :mod:`LWICommon.jobs`: the :class:`~LWICommon.jobs.Job` interface of background runs and the
     poller of jobs started from the Python console, waiting through a ticker (Slicer's timer, or
     the plain ticker the tests run).
   - :mod:`LWICommon.cli_args`: the ``lwi`` command lines, the Python to run them with, their environment.
   - :mod:`LWICommon.dependencies`: what the core needs, what is missing, how to install it without
     replacing packages that Slicer ships.
   - :mod:`LWICommon.labels`: segment names, colours and standard terminology for a label map.
   - :mod:`LWICommon.cases`: training cases from folders and scene nodes, matched by segment name.
   - :mod:`LWICommon.core_path`: where the ``lwi`` core is (installed next to the modules, or the
     checkout's root).
   - :mod:`LWICommon.vocabulary`: the core's names (``lwi/names.py``: architectures, strategies,
     devices, file formats), loaded from its file without importing the core.
   - :mod:`LWICommon.files`: temporary file names and the models folder (one rule for both modules).
2. MRML without Qt (imports ``slicer`` lazily; runs in Slicer and in the slicer-core test harness):
   :mod:`LWICommon.mrml`: volume and segmentation nodes <-> the core's files.
3. Qt (Slicer only): :mod:`LWICommon.gui` (task panels bound to widgets, Reload of a package),
   :mod:`LWICommon.slicer_setup` (installing the dependencies) and :mod:`LWICommon.selftest` (finding
   the modules' self-tests in ``Testing/Python/``, running code in the core's Python for them).

Naming: code that Slicer users and Slicer code call (layers 2 and 3, the Logic methods, keyword
arguments such as ``onFinished``) is camelCase, as Slicer's own Python API is; plain-Python helpers
(layer 1) are snake_case, as the ``lwi`` core is.

A sibling of the module folders with its own CMake list (``WITH_SUBDIR``, as Slicer's DICOMLib):
installed next to the module files; in a source checkout each module's Lib loads it from here.
"""

from __future__ import annotations
