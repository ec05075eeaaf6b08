"""Helpers shared by the LWISegmentation and LWITraining Slicer modules.

Three layers, so that as much as possible runs outside Slicer:

1. Plain Python (no Slicer, no Qt, no torch), tested with pytest anywhere:
   - :mod:`LWICommon.process`: run ``lwi ... --progress json`` without blocking, parse its JSON
     lines, cancel the whole process tree, report failures as one message.
   - :mod:`LWICommon.jobs`: the :class:`~LWICommon.jobs.Job` interface of background runs and the
     poller of jobs started from the Python console (a Qt timer in Slicer, ticked by the tests).
   - :mod:`LWICommon.cli_args`: the ``lwi`` command lines, the Python to run them with, their environment.
   - :mod:`LWICommon.dependencies`: what the core needs, what is missing, how to install it without
     replacing packages that Slicer ships.
   - :mod:`LWICommon.labels`: segment names, colours and standard terminology for a label map.
   - :mod:`LWICommon.core_path`: where the ``lwi`` core is (installed next to the modules, or the
     checkout's root).
   - :mod:`LWICommon.vocabulary`: the core's names (``lwi/names.py``: architectures, strategies,
     devices, file formats), loaded from its file without importing the core.
   - :mod:`LWICommon.files`: temporary file names and the models folder (one rule for both modules).
   - :mod:`LWITrainingLib.run_folder`: a model's training-run folder (cases, settings, checkpoints, Resume).
   - :mod:`LWISegmentationLib.worker`: the client of the segmentation worker (``python -m lwi.worker``).
   - :mod:`LWISegmentationLib.models`: the model list, described from each bundle's metadata (no torch).
   - :mod:`LWISegmentationLib.preview`, :mod:`LWITrainingLib.plots`, :mod:`LWISegmentationLib.training_set`,
     :mod:`LWICommon.cases`, :mod:`LWITrainingLib.training_settings`: what the panels compute.
2. MRML without Qt (imports ``slicer`` lazily; runs in Slicer and in the slicer-core test harness):
   - :mod:`LWICommon.mrml`: volume and segmentation nodes <-> the core's files.
   - :mod:`LWITrainingLib.plot_nodes`: the training curves as table and plot nodes.
   - :mod:`LWISegmentationLib.segmentation_logic`, :mod:`LWITrainingLib.training_logic`: everything the two
     modules do on the scene (their console API); the module files subclass them.
3. Qt (Slicer only): :mod:`LWICommon.gui` (task panels bound to widgets),
   :mod:`LWICommon.slicer_setup` (installing the dependencies) and :mod:`LWICommon.selftest` (finding
   the modules' self-tests in ``Testing/Python/``, running code in the core's Python for them).

Naming: code that Slicer users and Slicer code call (layers 2 and 3, the Logic methods, keyword
arguments such as ``onFinished``) is camelCase, as Slicer's own Python API is; plain-Python helpers
(layer 1) are snake_case, as the ``lwi`` core is.

The package is listed in the CMake SCRIPTS of LWISegmentation only; both modules install into the
same folder, so LWITraining imports it from there.
"""

from __future__ import annotations
