"""Run an ``lwi ... --progress json`` command in the background and follow it.

Plain Python (no Qt): the Slicer widgets call :meth:`ProcessRunner.poll` from a ``qt.QTimer``, so the
GUI never blocks; scripts and tests can call :meth:`ProcessRunner.wait` instead.

The child runs in its own process group (POSIX: a new session; Windows: a new process group), so
Cancel ends the whole tree: PythonSlicer is a launcher whose real Python is a child, and data loader
workers are grandchildren.
"""

from __future__ import annotations

import collections
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence

Event = Dict[str, Any]

#: Exit code reported for a run the user cancelled (a shell would show 128 + SIGTERM).
CANCELLED = -15


def parse_line(line: str) -> Optional[Event]:
    """One stdout line as an event dict.

    JSON objects with an ``event`` field are returned as they are; any other non-empty line (a
    stray print, a warning) becomes ``{"event": "log", "message": line}``; blank lines give None.
    """
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            return obj
    return {"event": "log", "message": text}


def format_duration(seconds: Optional[float]) -> str:
    """Short human duration: ``"45 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``; ``""`` when unknown
    (the core's :func:`lwi.option_types.format_duration`, to the second)."""
    from LWICommon.vocabulary import option_types

    return option_types.format_duration(seconds, precise=True)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def progress_fraction(event: Event) -> Optional[float]:
    """The fraction done (0-1) a progress event reports, or None."""
    fraction = _number(event.get("fraction"))
    if fraction is None:
        done, total = _number(event.get("iteration")), _number(event.get("iterations"))
        if done is not None and total:
            fraction = done / total
    if fraction is None:
        return None
    return min(1.0, max(0.0, fraction))


def progress_text(event: Event) -> str:
    """One status line for a progress event, e.g. ``"pretrain: epoch 3/10, loss 0.412, ETA 2 min 10 s"``."""
    parts: List[str] = []
    head = str(event.get("stage") or "working")
    epoch, epochs = event.get("epoch"), event.get("epochs")
    if epoch is not None and epochs:
        head += f": epoch {epoch}/{epochs}"
    elif epoch is not None:
        head += f": epoch {epoch}"
    parts.append(head)
    for key in sorted(event):
        value = _number(event[key])
        if value is not None and ("loss" in key or key.startswith("dice")):
            parts.append(f"{key.replace('_', ' ')} {value:.3g}")
    eta = format_duration(_number(event.get("eta_seconds")))
    if eta:
        parts.append(f"ETA {eta}")
    return ", ".join(parts)


def event_log_line(event: Event) -> Optional[str]:
    """The line an event adds to the user's log, or None for events shown only as progress."""
    kind = event.get("event")
    if kind == "log":
        return str(event.get("message", ""))
    if kind == "error":
        return "Error: " + str(event.get("message", ""))
    if kind == "result":
        fields = {k: v for k, v in event.items() if k != "event"}
        return "Done." + (" " + json.dumps(fields, sort_keys=True) if fields else "")
    return None


def failure_message(
    returncode: Optional[int],
    error_event: Optional[Event] = None,
    stderr_tail: Sequence[str] = (),
    cancelled: bool = False,
    command: str = "lwi",
) -> Optional[str]:
    """One clear message for the user about how a run ended, or None when it succeeded.

    The ``error`` event of the JSON protocol is the best explanation; without one (a crash, a
    killed process) the last lines of stderr are shown with the exit code.
    """
    if cancelled:
        return f"{command} was cancelled."
    if returncode == 0 and error_event is None:
        return None
    if error_event is not None and error_event.get("message"):
        return f"{command} failed: {error_event['message']}"
    tail = [line for line in stderr_tail if line.strip()][-5:]
    how = f"exit code {returncode}" if returncode is not None else "no exit code"
    if returncode is not None and returncode < 0:
        try:
            how = f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            pass
    message = f"{command} stopped unexpectedly ({how})."
    if tail:
        message += "\nLast output:\n" + "\n".join(tail)  # the sentence stays a line of its own
    return message


def no_window_kwargs() -> Dict[str, Any]:
    """Arguments for any child of the GUI application: on Windows, no console window flashes up
    (PythonSlicer and taskkill are console programs; Slicer's GUI has no console to share)."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}


def popen_platform_kwargs() -> Dict[str, Any]:
    """Popen arguments that put the child in its own process group and hide console windows."""
    if os.name == "nt":
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
            subprocess, "CREATE_NO_WINDOW", 0
        )
        return {"creationflags": flags}
    return {"start_new_session": True}


def kill_tree_command(pid: int) -> List[str]:
    """The Windows command that ends a process and all its descendants."""
    return ["taskkill", "/T", "/F", "/PID", str(pid)]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_process_tree(proc: subprocess.Popen) -> None:
    """Ask ``proc`` and every process in its group to end, and return at once (never waits: it is
    called from Slicer's main thread). Windows: ``taskkill /T /F``, started and not waited for."""
    if os.name == "nt":
        try:
            subprocess.Popen(
                kill_tree_command(proc.pid),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                **no_window_kwargs(),
            )
        except OSError:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # start_new_session makes the child its group's leader
    except ProcessLookupError:
        pass


def force_kill_process_tree(proc: subprocess.Popen) -> None:
    """End ``proc`` and its group forcibly, at once (after :func:`terminate_process_tree`'s grace)."""
    if os.name == "nt":
        if proc.poll() is None:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_process_tree(proc: subprocess.Popen, grace_seconds: float = 3.0) -> None:
    """End ``proc`` and every process in its group: politely first, then forcibly. Blocks up to
    ``grace_seconds`` (scripts, shutdown); the GUI uses the non-blocking ``cancel(wait=False)``."""
    terminate_process_tree(proc)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so it does not linger as a zombie member of the group
        if (proc.returncode is not None) if os.name == "nt" else not _group_alive(proc.pid):
            return
        time.sleep(0.05)
    force_kill_process_tree(proc)


class CancelDeadline:
    """When a cancelled process tree that was asked to end gets killed: :meth:`check` from each
    poll forces it after the grace period, so no cancel ever waits on the GUI thread."""

    def __init__(self, proc: subprocess.Popen, grace_seconds: float):
        self.proc = proc
        self.deadline = time.monotonic() + grace_seconds
        self.forced = False

    def check(self) -> None:
        if not self.forced and time.monotonic() >= self.deadline:
            self.forced = True
            force_kill_process_tree(self.proc)


def read_events(stream: Any, put: Callable[[Event], None]) -> None:
    """Pass each JSON event line of a binary stdout pipe to ``put`` until the pipe closes."""
    stream = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    for line in iter(stream.readline, ""):
        event = parse_line(line)
        if event is not None:
            put(event)
    stream.close()


def read_stderr_lines(stream: Any, append: Callable[[str], None]) -> None:
    """Pass each non-empty line of a binary stderr pipe to ``append`` until the pipe closes."""
    # tqdm redraws its bar with carriage returns: split on newlines only, and keep the last
    # state of each line.
    stream = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="\n")
    for line in iter(stream.readline, ""):
        text = line.rstrip("\n").split("\r")[-1].strip()
        if text:
            append(text)
    stream.close()


def poll_until_finished(run: Any, timeout: Optional[float], interval: float, timeout_message: str) -> None:
    """Call ``run.poll()`` every ``interval`` seconds until ``run.finished``; TimeoutError after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not run.finished:
        run.poll()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(timeout_message)
        time.sleep(interval)


class RunEnd:
    """The end of a run shared by :class:`ProcessRunner` and the worker's jobs: the one-sentence
    error, the temporary folder's removal and the single ``on_finished`` call.

    Subclasses set ``returncode``, ``cancelled``, ``error``, ``stderr_tail``, ``temp_dir``,
    ``keep_temp_dir``, ``on_finished`` and ``_finished``, and define ``command_name()``.
    """

    def error_message(self) -> Optional[str]:
        """None after success; otherwise one sentence (or a few lines) saying what went wrong."""
        return failure_message(
            self.returncode, self.error, list(self.stderr_tail), self.cancelled, self.command_name()
        )

    def cleanup(self) -> None:
        """Remove the run's temporary folder (safe to call more than once)."""
        if self.temp_dir and os.path.isdir(self.temp_dir):
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _finish(self, returncode: Optional[int]) -> None:
        self._finished = True
        self.returncode = CANCELLED if self.cancelled else returncode
        try:
            if self.on_finished is not None:
                self.on_finished(self)
        finally:
            if self.cancelled or not self.keep_temp_dir:
                self.cleanup()


class ProcessRunner(RunEnd):
    """A background ``lwi`` process whose JSON progress lines are read without blocking.

    Args:
        args: the command line (see :mod:`LWICommon.cli_args`).
        env: its environment (None: inherit).
        cwd: its working directory.
        temp_dir: a folder owned by this run (inputs written for it, its outputs); removed when the
            run is cancelled, and after ``on_finished`` returns unless ``keep_temp_dir``.
        on_event: called from :meth:`poll` with each event, in order.
        on_finished: called once from :meth:`poll` (or :meth:`wait`) when the run is over, with the
            runner; read :attr:`returncode`, :attr:`result` and :meth:`error_message` there.
        stderr_lines: how many trailing stderr lines to keep for error messages.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        temp_dir: Optional[str] = None,
        keep_temp_dir: bool = False,
        on_event: Optional[Callable[[Event], None]] = None,
        on_finished: Optional[Callable[[ProcessRunner], None]] = None,
        stderr_lines: int = 40,
    ):
        self.args = [str(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.temp_dir = temp_dir
        self.keep_temp_dir = keep_temp_dir
        self.on_event = on_event
        self.on_finished = on_finished
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.cancelled = False
        self.result: Optional[Event] = None
        self.error: Optional[Event] = None
        self.last_progress: Optional[Event] = None
        self.stderr_tail: Deque[str] = collections.deque(maxlen=stderr_lines)
        self._events: queue.Queue = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._finished = False
        self._exit_seen_at: Optional[float] = None
        self._kill: Optional[CancelDeadline] = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> ProcessRunner:
        """Start the process and its reader threads; returns immediately."""
        if self.proc is not None:
            raise RuntimeError("This process was already started.")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen_platform_kwargs(),
        )
        for target, stream in ((self._read_stdout, self.proc.stdout), (self._read_stderr, self.proc.stderr)):
            thread = threading.Thread(target=target, args=(stream,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the run is over and reported."""
        return self.proc is not None and not self._finished

    @property
    def finished(self) -> bool:
        return self._finished

    def poll(self) -> List[Event]:
        """Deliver the events read since the last call; report the end of the run once."""
        events = self._drain()
        if self._kill is not None and not self._finished:
            self._kill.check()
        if not self._finished and self.proc is not None and self.proc.poll() is not None:
            if self.cancelled and os.name != "nt" and _group_alive(self.proc.pid):
                # The leader is gone but a cancelled run's grandchildren (data loaders) are not.
                force_kill_process_tree(self.proc)
            # The pipes close when the process exits; a grandchild that inherited them could keep
            # them open, so stop waiting for the readers after a few seconds (without blocking).
            if self._exit_seen_at is None:
                self._exit_seen_at = time.monotonic()
            for thread in self._threads:
                thread.join(timeout=0.05)
            readers_done = not any(t.is_alive() for t in self._threads)
            if readers_done or time.monotonic() - self._exit_seen_at > 5.0:
                events += self._drain()
                self._finish(self.proc.returncode)
        return events

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> Optional[int]:
        """Block until the run is over (for scripts and tests); returns :attr:`returncode`."""
        poll_until_finished(self, timeout, interval, f"{self.command_name()} did not finish within {timeout} s.")
        return self.returncode

    def cancel(self, grace_seconds: float = 3.0, wait: bool = True) -> None:
        """Stop the whole process tree (politely, then forcibly after ``grace_seconds``), then report
        the run as cancelled and remove its temporary folder.

        ``wait=False`` (the GUI) only sends the request and returns at once: the next
        :meth:`poll` calls force the kill after the grace period and report the end as usual.
        """
        if self._finished:
            return
        self.cancelled = True
        if self.proc is None:  # never started
            self._finish(CANCELLED)
            return
        if self._kill is None and self.proc.poll() is None:
            terminate_process_tree(self.proc)
            self._kill = CancelDeadline(self.proc, grace_seconds)
        if wait:
            poll_until_finished(self, None, 0.05, "")
        else:
            self.poll()

    def command_name(self) -> str:
        """``"lwi segment"`` for ``[python, "-m", "lwi", "segment", ...]``, else the program name."""
        args = self.args
        if len(args) >= 4 and args[1] == "-m":
            return f"{args[2]} {args[3]}"
        return os.path.basename(args[0]) if args else "process"

    # -- internals -------------------------------------------------------------------------
    def _read_stdout(self, stream) -> None:
        read_events(stream, self._events.put)

    def _read_stderr(self, stream) -> None:
        read_stderr_lines(stream, self.stderr_tail.append)

    def _drain(self) -> List[Event]:
        events: List[Event] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            kind = event.get("event")
            if kind == "progress":
                self.last_progress = event
            elif kind == "result":
                self.result = event
            elif kind == "error":
                self.error = event
            events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        return events


def model_info(
    model_path: str,
    env: Optional[Mapping[str, str]] = None,
    python: Optional[str] = None,
    timeout: float = 120.0,
) -> Event:
    """A model's metadata from ``lwi info MODEL --json`` (a short, blocking subprocess).

    Raises RuntimeError with the command's own error sentence when it fails.
    """
    from LWICommon.cli_args import info_command

    proc = subprocess.run(
        info_command(model_path, python=python),
        **no_window_kwargs(),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"lwi info failed with exit code {proc.returncode}.")
    return json.loads(proc.stdout)
