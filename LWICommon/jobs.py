"""Background jobs as the modules see them: one interface, and polling for jobs started from the
Python console (plain Python; Qt only in :class:`QtTicker`, imported lazily).

:class:`Job` is what :class:`LWICommon.process.ProcessRunner` (an ``lwi`` sub-command) and
:class:`LWISegmentationLib.worker.WorkerJob` (a request to the segmentation worker) both offer, and all that
:class:`LWICommon.gui.TaskPanel` and the logic classes rely on. Their events and their end
(``on_finished``: importing results, publishing a model) are delivered only by ``poll()``, on the
caller's thread. The GUI polls from its TaskPanel; a job started from the console is handed to
:func:`pollInBackground`, whose timer polls it on Slicer's main thread until it is over.
"""

from __future__ import annotations

import logging
import time
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


class Ticker(Protocol):
    """What waits for background jobs: calls ``tick`` again and again, on the caller's thread, from
    :meth:`start` until :meth:`stop`."""

    def start(self, tick: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class QtTicker:
    """Slicer's event loop calls ``tick`` every ``intervalMsec`` (a ``qt.QTimer``): the only part of
    the polling that needs Slicer."""

    def __init__(self, intervalMsec: int = POLL_INTERVAL_MSEC) -> None:
        import qt

        self._timer = qt.QTimer()
        self._timer.setInterval(intervalMsec)
        self._tick: Optional[Callable[[], None]] = None

    def start(self, tick: Callable[[], None]) -> None:
        if self._tick is None:
            self._tick = tick
            self._timer.connect("timeout()", tick)
        if not self._timer.isActive():
            self._timer.start()

    def stop(self) -> None:
        self._timer.stop()


class PlainTicker:
    """Without an event loop (Python without Qt, slicer-core, scripts): the ticks run when
    :meth:`runUntilStopped` is called, on the caller's thread, as Slicer's timer would run them."""

    def __init__(self, intervalMsec: int = POLL_INTERVAL_MSEC) -> None:
        self.interval = intervalMsec / 1000.0
        self.active = False
        self._tick: Optional[Callable[[], None]] = None

    def start(self, tick: Callable[[], None]) -> None:
        self._tick, self.active = tick, True

    def stop(self) -> None:
        self.active = False

    def runUntilStopped(self, timeout: Optional[float] = None) -> None:
        """Tick until stopped; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("The background jobs did not end in time.")
            self._tick()
            if self.active:
                time.sleep(self.interval)


def makeTicker(intervalMsec: int = POLL_INTERVAL_MSEC) -> Ticker:
    """A :class:`QtTicker` where Qt is (Slicer), else a :class:`PlainTicker`."""
    try:
        import qt  # noqa: F401
    except ImportError:
        return PlainTicker(intervalMsec)
    return QtTicker(intervalMsec)


class BackgroundPoller:
    """Polls the jobs it holds until each is over; :meth:`tick` is one round, run by its
    :class:`Ticker` while jobs are held."""

    def __init__(self, ticker: Optional[Ticker] = None) -> None:
        self.jobs: List[Job] = []
        self._ticker = ticker

    @property
    def ticker(self) -> Ticker:
        """The ticker given, else :func:`makeTicker`'s, made on first use (importing needs no Qt)."""
        if self._ticker is None:
            self._ticker = makeTicker()
        return self._ticker

    def add(self, job: Job) -> Job:
        if job not in self.jobs:
            self.jobs.append(job)
        self.ticker.start(self.tick)
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
        if not self.jobs and self._ticker is not None:
            self._ticker.stop()


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
