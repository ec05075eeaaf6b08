"""The client side of the segmentation worker (``python -m lwi.worker``, protocol in lwi/worker.py).

Plain Python (no Qt, no torch). One :class:`WorkerClient` per Slicer session keeps a worker process
alive, so the model stays loaded on the GPU between segmentations. Each request is a
:class:`WorkerJob`, which behaves like :class:`LWICommon.process.ProcessRunner` (``start``, ``poll``,
``wait``, ``cancel``, ``error_message``, ``on_event``, ``on_finished``), so the module's
:class:`LWICommon.gui.TaskPanel` follows a job exactly as it follows a one-shot process.
"""

from __future__ import annotations

import collections
import itertools
import json
import queue
import subprocess
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional

from LWICommon.cli_args import python_executable
from LWICommon.process import (
    CancelDeadline,
    Event,
    RunEnd,
    kill_process_tree,
    poll_until_finished,
    popen_platform_kwargs,
    read_events,
    read_stderr_lines,
    terminate_process_tree,
)

WORKER_MODULE = "lwi.worker"


def worker_command(python: Optional[str] = None) -> List[str]:
    """``[python, "-m", "lwi.worker"]``."""
    return [python or python_executable(), "-m", WORKER_MODULE]


def segment_request(
    request_id: Any,
    model: str,
    input_path: str,
    output_path: str,
    device: str = "auto",
    options: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The ``segment`` request line for the worker (``options``: ``largest_component``, ``overlap``,
    ``sw_batch_size``, ``roi_size``, ``spacing_scale``, ``amp``, ``compress``)."""
    return {
        "id": request_id,
        "command": "segment",
        "model": str(model),
        "input": str(input_path),
        "output": str(output_path),
        "device": device,
        "options": dict(options or {}),
    }


class WorkerJob(RunEnd):
    """One request to the worker, followed like a :class:`~LWICommon.process.ProcessRunner`.

    ``returncode`` is 0 after a ``result`` event, 1 after an ``error`` event or when the worker died,
    :data:`~LWICommon.process.CANCELLED` after :meth:`cancel`.
    """

    def __init__(
        self,
        client: WorkerClient,
        request: Dict[str, Any],
        temp_dir: Optional[str] = None,
        keep_temp_dir: bool = False,
        on_event: Optional[Callable[[Event], None]] = None,
        on_finished: Optional[Callable[[WorkerJob], None]] = None,
    ):
        self.client = client
        self.request = request
        self.id = request["id"]
        self.temp_dir = temp_dir
        self.keep_temp_dir = keep_temp_dir
        self.on_event = on_event
        self.on_finished = on_finished
        self.returncode: Optional[int] = None
        self.cancelled = False
        self.result: Optional[Event] = None
        self.error: Optional[Event] = None
        self.last_progress: Optional[Event] = None
        self.stderr_tail: List[str] = []
        self._started = False
        self._finished = False
        self._cancel_deadline: Optional[float] = None

    @property
    def args(self) -> List[str]:
        return list(self.client.args)

    def start(self) -> WorkerJob:
        """Send the request (starting the worker if it is not running); returns immediately."""
        if self._started:
            raise RuntimeError("This request was already sent.")
        self._started = True
        self.client.submit(self)
        return self

    @property
    def running(self) -> bool:
        return self._started and not self._finished

    @property
    def finished(self) -> bool:
        return self._finished

    def poll(self) -> List[Event]:
        """Deliver this job's events read since the last call (and dispatch the other jobs' ones).

        After :meth:`cancel`, a worker that has not stopped the request within the grace period is
        ended here (its process tree), so cancelling never waits on the caller's thread.
        """
        events = self.client.poll().get(json.dumps(self.id), [])
        if self.cancelled and not self._finished and self._cancel_deadline is not None:
            if time.monotonic() >= self._cancel_deadline and self.client.alive:
                self._cancel_deadline = None
                self.client.terminate()
        return events

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[int]:
        """Block until the request is answered; returns :attr:`returncode`."""
        poll_until_finished(self, timeout, interval, f"The worker did not answer within {timeout} s.")
        return self.returncode

    def cancel(self, grace_seconds: float = 5.0, wait: bool = True) -> None:
        """Ask the worker to stop this request; if it does not within ``grace_seconds`` (a long
        preprocessing step), end the worker's process tree (the next request starts a new one).

        ``wait=False`` (the GUI) sends the request and returns at once; the following
        :meth:`poll` calls finish the job, ending the worker after the grace period if needed.
        """
        if self._finished:
            return
        self.cancelled = True
        if not (self._started and self.client.alive):
            self.poll()
            if not self._finished:
                self._finish(None)
            return
        if self._cancel_deadline is None:
            try:
                self.client.send({"id": f"cancel-{self.id}", "command": "cancel", "target": self.id})
            except (OSError, ValueError, RuntimeError):  # the worker died just now: poll reports it
                pass
            self._cancel_deadline = time.monotonic() + grace_seconds
        if wait:
            poll_until_finished(self, None, 0.02, "")
        else:
            self.poll()

    def command_name(self) -> str:
        return f"lwi {self.request.get('command', 'worker')}"

    # -- called by the client ---------------------------------------------------------------
    def _deliver(self, event: Event) -> None:
        if self._finished:
            return
        kind = event.get("event")
        if kind == "progress":
            self.last_progress = event
        if self.on_event is not None:
            self.on_event(event)
        if kind == "result":
            self.result = event
            self._finish(0)
        elif kind == "error":
            self.error = event
            self._finish(1)


class WorkerClient:
    """A worker process kept alive between requests.

    Args:
        python: the Python that runs the core (default: ``PythonSlicer`` in Slicer).
        env: the worker's environment (:func:`LWICommon.slicer_setup.coreEnvironment` in Slicer).
        cwd: its working directory.
    """

    def __init__(
        self,
        python: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        stderr_lines: int = 40,
    ):
        self.args = worker_command(python)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_tail: Deque[str] = collections.deque(maxlen=stderr_lines)
        self.log: Deque[Event] = collections.deque(maxlen=200)  # events not tied to a request
        self._events: queue.Queue = queue.Queue()
        self._jobs: Dict[str, WorkerJob] = {}
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._stdout_closed = threading.Event()
        self._kill: Optional[CancelDeadline] = None
        self.starts = 0  # how many worker processes this client started (a restart after a crash adds one)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.alive else None

    def next_id(self) -> int:
        return next(self._ids)

    def start(self) -> WorkerClient:
        """Start the worker process unless it is running."""
        if self.alive:
            return self
        self.stderr_tail.clear()
        self._stdout_closed = threading.Event()
        self._kill = None
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen_platform_kwargs(),
        )
        self.starts += 1
        proc = self.proc
        threading.Thread(target=self._read_stdout, args=(proc, self._stdout_closed), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(proc,), daemon=True).start()
        return self

    def send(self, request: Dict[str, Any]) -> None:
        """Write one request line to the worker."""
        if not self.alive:
            raise RuntimeError("The segmentation worker is not running.")
        with self._write_lock:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()

    def submit(self, job: WorkerJob) -> None:
        """Send a job's request, starting the worker if needed."""
        self.start()
        self._jobs[json.dumps(job.id)] = job
        try:
            self.send(job.request)
        except (OSError, ValueError, RuntimeError):  # the worker died just now
            pass  # poll() reports it as the job's failure

    def segment(
        self,
        model: str,
        input_path: str,
        output_path: str,
        device: str = "auto",
        options: Optional[Mapping[str, Any]] = None,
        temp_dir: Optional[str] = None,
        on_event: Optional[Callable[[Event], None]] = None,
        on_finished: Optional[Callable[[WorkerJob], None]] = None,
        start: bool = True,
    ) -> WorkerJob:
        """A segment request as a job (sent now unless ``start=False``)."""
        request = segment_request(self.next_id(), model, input_path, output_path, device, options)
        job = WorkerJob(self, request, temp_dir=temp_dir, on_event=on_event, on_finished=on_finished)
        return job.start() if start else job

    def request(self, command: str, timeout: float = 60.0, **fields: Any) -> Event:
        """Send a short request (``ping``) and wait for its final event."""
        job = WorkerJob(self, {"id": self.next_id(), "command": command, **fields}).start()
        job.wait(timeout)
        if job.error is not None or job.result is None:
            raise RuntimeError(job.error_message() or f"The worker did not answer {command}.")
        return job.result

    def poll(self) -> Dict[str, List[Event]]:
        """Dispatch the events read so far to their jobs; returns them grouped by job id (JSON).

        If the worker has died, every job still waiting fails with the worker's last words.
        """
        grouped: Dict[str, List[Event]] = {}
        if self._kill is not None and self.alive:
            self._kill.check()
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            key = json.dumps(event.get("id"))
            job = self._jobs.get(key)
            if job is None:
                self.log.append(event)
                continue
            grouped.setdefault(key, []).append(event)
            job._deliver(event)
            if job.finished:
                self._jobs.pop(key, None)
        # A dead worker's last events are read before its waiting jobs are failed.
        if self._jobs and self.proc is not None and self.proc.poll() is not None:
            if self._stdout_closed.wait(timeout=0.05) and self._events.empty():
                self._fail_pending(self.proc.returncode)
        return grouped

    def stop(self, timeout: float = 5.0, grace_seconds: float = 2.0) -> None:
        """Shut the worker down (asks politely, then ends its process tree). Waiting jobs fail."""
        if self.proc is None:
            return
        if self.alive:
            try:
                self.send({"id": "shutdown", "command": "shutdown"})
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout)
            except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            kill_process_tree(self.proc, grace_seconds)
            try:
                self.proc.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._stdout_closed.wait(timeout=grace_seconds)
        self.poll()
        self._fail_pending(self.proc.returncode)

    def terminate(self, grace_seconds: float = 2.0) -> None:
        """End the worker's process tree without waiting (politely, then forcibly from a later
        :meth:`poll` after ``grace_seconds``); its waiting jobs fail when :meth:`poll` sees it gone."""
        if self.alive and self._kill is None:
            terminate_process_tree(self.proc)
            self._kill = CancelDeadline(self.proc, grace_seconds)

    # -- internals -------------------------------------------------------------------------
    def _fail_pending(self, returncode: Optional[int]) -> None:
        for key, job in list(self._jobs.items()):
            self._jobs.pop(key, None)
            if not job.finished:
                job.stderr_tail = list(self.stderr_tail)
                job._finish(returncode if returncode not in (0, None) else 1)

    def _read_stdout(self, proc: subprocess.Popen, closed: threading.Event) -> None:
        read_events(proc.stdout, self._events.put)
        closed.set()

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        read_stderr_lines(proc.stderr, self.stderr_tail.append)

