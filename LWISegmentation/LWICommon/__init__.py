"""Helpers shared by the LWISegmentation and LWITraining Slicer modules.

Everything here except :mod:`LWICommon.mrml` and :mod:`LWICommon.gui` is plain Python: it imports
neither Slicer nor Qt nor torch, so it is tested with pytest outside Slicer. The package is listed in
the CMake SCRIPTS of LWISegmentation only; both modules install into the same folder, so LWITraining
imports it from there.

- :mod:`LWICommon.process`: run ``lwi ... --progress json`` without blocking, parse its JSON lines,
  cancel the whole process tree, report failures as one message.
- :mod:`LWICommon.cli_args`: the ``lwi`` command lines, the Python to run them with, their environment.
- :mod:`LWICommon.dependencies`: what the core needs, what is missing, how to install it without
  replacing packages that Slicer ships.
- :mod:`LWICommon.labels`: segment names, colours and standard terminology for a label map.
- :mod:`LWICommon.core_path`: where the ``lwi`` core is (installed next to the modules, or the
  checkout's root).
- :mod:`LWICommon.vocabulary`: the core's names (``lwi/names.py``: architectures, strategies,
  devices, file formats), loaded from its file without importing the core.
- :mod:`LWICommon.files`: temporary file names and the models folder (one rule for both modules).
- :mod:`LWICommon.worker`: the client of the segmentation worker (``python -m lwi.worker``) that
  keeps the model loaded between segmentations.
- :mod:`LWICommon.models`: the model list, described from each bundle's metadata (no torch).
- :mod:`LWICommon.preview`: the Step-1 preview's options and geometry.
- :mod:`LWICommon.training_set`: "Add to training set": segments mapped by name to the model's labels.
- :mod:`LWICommon.mrml`: node <-> file round trip (needs Slicer; imports it lazily).
- :mod:`LWICommon.gui`: binds a running process to a progress bar, a status label, a log and an
  Apply/Cancel button (needs Qt; imports it lazily).
"""

from __future__ import annotations
