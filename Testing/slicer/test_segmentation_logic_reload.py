"""The session's segmentation worker survives Reload: Slicer re-executes the module file, and the
module's onReload reloads LWICommon, before the old widget's cleanup() stops the worker (F8)."""

from __future__ import annotations

import importlib
import sys


def test_reloading_the_logic_keeps_the_worker_for_the_old_cleanup():
    # Imported here: other tests may have reloaded LWICommon (as Slicer's Reload does).
    segmentation_logic = importlib.import_module("LWISegmentationLib.segmentation_logic")
    WorkerClient = importlib.import_module("LWISegmentationLib.worker").WorkerClient
    client = WorkerClient(sys.executable)
    client.args = [sys.executable, "-c", "import sys; sys.stdin.read()"]  # a worker that waits for EOF
    segmentation_logic._worker = client.start()
    old_logic = segmentation_logic.SegmentationLogic()
    try:
        reloaded = importlib.reload(segmentation_logic)
        assert reloaded._worker is client
        old_logic.shutdownWorker()  # what the old widget's cleanup() does
        assert client.proc.poll() is not None, "the worker process was orphaned"
        assert reloaded._worker is None
    finally:
        if client.proc is not None and client.proc.poll() is None:
            client.proc.kill()
        segmentation_logic._worker = None
