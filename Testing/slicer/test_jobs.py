"""The poller of background jobs started from the Python console (LWICommon.jobs), on real processes:
what Slicer's timer does every 200 ms, ticked here by hand."""

from __future__ import annotations

import sys
import time

from LWICommon import jobs
from LWICommon.process import ProcessRunner

SCRIPT = "import json; print(json.dumps({'event': 'progress', 'fraction': 1.0}), flush=True)"


def _tick_until(poller: jobs.BackgroundPoller, done, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline
        poller.tick()
        time.sleep(0.02)


def test_polled_jobs_end_deliver_their_events_and_are_forgotten():
    poller = jobs.BackgroundPoller()
    events, finished = [], []
    runner = ProcessRunner([sys.executable, "-c", SCRIPT], on_event=events.append, on_finished=finished.append)
    assert poller.add(runner.start()) is runner
    _tick_until(poller, lambda: not poller.jobs)
    assert runner.finished and not runner.running and runner.returncode == 0
    assert [e.get("fraction") for e in events if e.get("event") == "progress"] == [1.0]
    assert finished == [runner]


def test_a_failing_callback_does_not_stop_the_other_jobs():
    poller = jobs.BackgroundPoller()

    def broken(job) -> None:
        raise RuntimeError("a callback bug")

    done = []
    first = ProcessRunner([sys.executable, "-c", SCRIPT], on_finished=broken).start()
    second = ProcessRunner([sys.executable, "-c", "import time; time.sleep(0.5)"], on_finished=done.append).start()
    poller.add(first)
    poller.add(second)
    _tick_until(poller, lambda: not poller.jobs)
    assert first.finished and second.finished and done == [second]


def test_with_callback_reports_the_result_or_the_loading_error():
    calls = []
    runner = ProcessRunner([sys.executable, "-c", SCRIPT])
    runner.on_finished = jobs.withCallback(lambda job: None, lambda result, error: calls.append((result, error)), ["node"])
    runner.start().wait()
    assert calls == [("node", None)]

    calls.clear()

    def failing_import(job) -> None:
        raise ValueError("bad label map")

    runner = ProcessRunner([sys.executable, "-c", SCRIPT])
    runner.on_finished = jobs.withCallback(failing_import, lambda result, error: calls.append((result, error)), [])
    runner.start().wait()
    assert calls == [(None, "The results could not be loaded: bad label map")]
