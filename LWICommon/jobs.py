"""Background jobs as the modules see them: one interface, and polling for jobs started from the
Python console (plain Python; Qt only for the timer, imported lazily).

:class:`Job` is what :class:`LWICommon.process.ProcessRunner` (an ``lwi`` sub-command) and
:class:`LWISegmentationLib.worker.WorkerJob` (a request to the segmentation worker) both offer, and all that
:class:`LWICommon.gui.TaskPanel` and the logic classes rely on. Their events and their end
(``on_finished``: importing results, publishing a model) are delivered only by ``poll()``, on the
caller's thread. The GUI polls from its TaskPanel; a job started from the console is handed to
:func:`pollInBackground`, whose timer polls it on Slicer's main thread until it is over.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Protocol

#: How often the console jobs are polled (as the TaskPanel does).
POLL_INTERVAL_MSEC = 200


class Job(Protocol):
    """A background run: start it, poll it from the main thread, wait for it or cancel it."""

    on_event: Optional[Callable[[Dict[str, Any]], None]]
    on_finished: Optional[Callable[[Any], None]]
    returncode: Optional[int]
    cancelled: bool
    result: Optional[Dict[str, Any]]

    def start(self) -> Job: ...

    def poll(self) -> List[Dict[str, Any]]: ...

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[int]: ...

    # wait=False: send the request and return; later polls end the run (the GUI never waits).
    def cancel(self, grace_seconds: float = 3.0, wait: bool = True) -> None: ...

    def error_message(self) -> Optional[str]: ...

    @property
    def running(self) -> bool: ...

    @property
    def finished(self) -> bool: ...


class BackgroundPoller:
    """Polls the jobs it holds until each is over; :meth:`tick` is one round.

    In Slicer a ``qt.QTimer`` calls :meth:`tick` every :data:`POLL_INTERVAL_MSEC` while jobs are
    held. Without Qt (tests on slicer-core) nothing calls it by itself: the caller ticks.
    """

    def __init__(self) -> None:
        self.jobs: List[Job] = []
        self._timer = None

    def add(self, job: Job) -> Job:
        if job not in self.jobs:
            self.jobs.append(job)
        self._startTimer()
        return job

    def tick(self) -> None:
        """Poll every held job once; forget those that are over."""
        for job in list(self.jobs):
            try:
                job.poll()
            except Exception:  # a failing callback must not stop the other jobs' polling
                logging.exception("LWI: polling a background job failed")
            if job.finished:
                self.jobs.remove(job)
        if not self.jobs and self._timer is not None:
            self._timer.stop()

    def _startTimer(self) -> None:
        try:
            import qt
        except ImportError:
            return
        if self._timer is None:
            self._timer = qt.QTimer()
            self._timer.setInterval(POLL_INTERVAL_MSEC)
            self._timer.connect("timeout()", self.tick)
        if not self._timer.isActive():
            self._timer.start()


#: The one poller of the Slicer session (both modules); kept when Reload executes this file again,
#: so jobs started before the reload are still polled.
poller: BackgroundPoller = globals().get("poller") or BackgroundPoller()


def pollInBackground(job: Job) -> Job:
    """Have ``job`` polled on the main thread until it is over (a job started from the console)."""
    return poller.add(job)


def withCallback(onFinished: Optional[Callable], callback: Callable, results: list) -> Callable:
    """``onFinished`` (which loads the results into ``results``), then ``callback(result, error)``."""

    def finished(job) -> None:
        try:
            if onFinished is not None:
                onFinished(job)
        except Exception as exc:
            logging.exception("Loading the results failed")
            callback(None, f"The results could not be loaded: {exc}")
            return
        callback(results[0] if results else None, job.error_message())

    return finished
