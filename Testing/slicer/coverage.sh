#!/usr/bin/env bash
# The line coverage of the Slicer modules outside the Qt binding (docs/slicer-modules.md, "What the
# tests cover"): the Lib packages, LWICommon and the module files, by the tests that use a real
# scene (slicer-core) or plain Python, without Slicer or Qt stand-ins. Left out of the figure: the
# widget.py files and LWICommon/gui.py (the Qt binding), and the tests that stand in for Slicer's
# Qt layer (the panels, the TaskPanel, the import stubs, the installer's fake PyTorchUtils).
# Run from the repository root with the test requirements and coverage installed.
set -euo pipefail
data="${COVERAGE_FILE:-.coverage-slicer}"
python -m coverage run --data-file="$data" --source=LWICommon,LWISegmentation,LWITraining \
  --omit='*/widget.py,*/Testing/*,LWICommon/gui.py' -m pytest Testing/slicer -q -p no:cacheprovider \
  --deselect Testing/slicer/test_module_panels.py --deselect Testing/slicer/test_module_imports.py \
  --deselect Testing/slicer/test_slicer_setup.py \
  -k "not task_panel and not tiny_model_predicts_liver" "$@"
python -m coverage report --data-file="$data"
