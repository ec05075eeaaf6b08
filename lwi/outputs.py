"""Where commands write: checked before any work, locked while a run writes, cleaned up after a failure.

Every command that writes describes its outputs as :class:`Output` entries and runs its work inside
:func:`writing`:

* before the work, each location is checked (:func:`check_outputs`): a file output must not be a
  folder and a folder output not a file; an existing output is refused unless ``--overwrite`` (or,
  for resumable files, ``--resume``); the folder it goes to must be writable (probed by creating a
  file, which also catches read-only file systems and root on a read-only mount); the free space must
  cover the estimated size;
* training outputs hold a lock file (``<output>.lock``: pid, host, command, start) so a second run
  writing the same ``--out`` is refused with the other process named (a lock whose process is gone
  is taken over);
* when the work fails or is interrupted, every file and folder it created is removed, except
  resumable checkpoints, which are kept (and the message says so).

Files are written with the permissions of the user's umask (:func:`follow_umask`), as any other
program's files are, so label maps, previews and models can be shared alike.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from lwi.errors import LWIError

PathLike = Union[str, "os.PathLike[str]"]

#: Free space kept on top of the estimate, for the file system's own needs and temporary copies.
SPACE_MARGIN_BYTES = 16 * 1024 * 1024


@dataclass
class Output:
    """One thing a command will write.

    Args:
        path: the file or folder.
        option: the command-line option that names it (for messages), e.g. ``"--output"``.
        folder: True when ``path`` is a folder the command writes files into.
        estimate: bytes the command expects to write there (0 = negligible).
        resumable: a checkpoint that ``--resume`` continues; kept when the run fails.
    """

    path: Path
    option: str
    folder: bool = False
    estimate: int = 0
    resumable: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: PathLike) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (always 0600) the mode any new file would get."""
    os.chmod(path, 0o666 & ~current_umask())


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path) -> Optional[str]:
    """None when a file can be created in ``folder``, else the reason (the OS's words)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".lwi-write-test-", dir=str(folder))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(probe)
    return None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def check_outputs(outputs: Sequence[Output], overwrite: bool = False, resume: bool = False) -> None:
    """Refuse, with one sentence naming the option and the path, any output that cannot be written.

    ``resume``: resumable outputs may exist (they are continued); the others may exist too, since a
    resumed run rewrites them.
    """
    need: Dict[int, Tuple[Path, int]] = {}  # file system -> (a folder on it, bytes to be written there)
    resumable = any(o.resumable for o in outputs)  # a run with a checkpoint: its outputs can be continued
    for out in outputs:
        path = out.path
        if out.folder:
            if path.exists() and not path.is_dir():
                raise LWIError(f"{out.option} {path} is a file, but a folder is needed there; choose another {out.option}.")
        elif path.is_dir():
            raise LWIError(f"{out.option} {path} is a folder; give a file name (inside it, or elsewhere).")
        if path.exists() and not overwrite and not resume and not (out.folder and _empty_folder(path)):
            raise LWIError(
                f"{path} already exists; pass --overwrite to replace it"
                + (", --resume to continue that run" if resumable else "")
                + f", or choose another {out.option}."
            )
        ancestor = _existing_ancestor(path if out.folder else path.parent)
        if not ancestor.is_dir():
            raise LWIError(f"{out.option} {path} cannot be created: {ancestor} is a file, not a folder.")
        reason = _probe_writable(ancestor)
        if reason is not None:
            raise LWIError(
                f"{out.option} {path} cannot be written: {ancestor} is not writable ({reason}); "
                f"choose another {out.option}."
            )
        if out.estimate:
            device = os.stat(ancestor).st_dev
            need[device] = (ancestor, need.get(device, (ancestor, 0))[1] + int(out.estimate))
    for folder, estimate in need.values():
        check_space(folder, estimate)


def check_space(folder: PathLike, estimate: int) -> None:
    """Refuse when the file system of ``folder`` has less free space than ``estimate`` bytes (plus a margin)."""
    folder = _existing_ancestor(Path(folder))
    free = shutil.disk_usage(str(folder)).free
    if free < estimate + SPACE_MARGIN_BYTES:
        raise LWIError(
            f"Not enough free space in {folder}: about {_mb(estimate)} will be written and {_mb(free)} are free; "
            "free some space or write elsewhere."
        )


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# -- locks ------------------------------------------------------------------------------------------
def lock_path(path: PathLike) -> Path:
    """The lock file of an output (file or folder): ``<output>.lock`` beside it."""
    path = Path(os.path.abspath(path))
    return path.with_name(path.name + ".lock")


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there: ask Windows whether it still runs
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


def _describe_holder(info: Dict[str, object]) -> str:
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(started))) if isinstance(started, (int, float)) else "?"
    return f"process {info.get('pid')} on {info.get('host')} ({info.get('command')!s}, started {when})"


class Lock:
    """An exclusive lock on an output, held by this process while a run writes it."""

    def __init__(self, output: PathLike, command: Optional[str] = None):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.command = command or " ".join(["lwi"] + sys.argv[1:])
        self.held = False

    def acquire(self) -> Lock:
        """Take the lock, or raise :class:`LWIError` naming the process that holds it."""
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    raise LWIError(
                        f"{self.output} is being written by another LWI run: {_describe_holder(holder)}; "
                        f"wait for it to end, or choose another output (if that run is gone, delete {self.path})."
                    ) from None
                try:
                    self.path.unlink()  # the holder is gone (or the file is unreadable): take over
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
            self.held = True
            return self
        raise LWIError(f"Could not take the lock {self.path}; another run may be starting on {self.output}.")

    def _holder(self) -> Optional[Dict[str, object]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # A lock being written this very moment reads as empty: give its writer a moment.
            time.sleep(0.2)
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _stale(holder: Dict[str, object]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False  # another machine's run (shared storage): trust it
        return not _pid_alive(pid)

    def release(self) -> None:
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- cleanup ---------------------------------------------------------------------------------------
class _Snapshot:
    """What existed at the outputs before the work, to remove only what the work created."""

    def __init__(self, outputs: Sequence[Output]):
        self.outputs = list(outputs)
        self.files: Dict[Path, Optional[int]] = {}
        self.folder_entries: Dict[Path, Set[str]] = {}
        self.created_dirs: List[Path] = []
        for out in self.outputs:
            if out.folder:
                self.folder_entries[out.path] = set(os.listdir(out.path)) if out.path.is_dir() else set()
                self._missing_dirs(out.path)
            else:
                self.files[out.path] = out.path.stat().st_mtime_ns if out.path.exists() else None
                self._missing_dirs(out.path.parent)

    def _missing_dirs(self, folder: Path) -> None:
        folder = Path(os.path.abspath(folder))
        while not folder.exists() and folder != folder.parent:
            if folder not in self.created_dirs:
                self.created_dirs.append(folder)
            folder = folder.parent

    def written(self, out: Output) -> bool:
        if not out.path.exists():
            return False
        before = self.files.get(out.path)
        return before is None or out.path.stat().st_mtime_ns != before

    def remove_new(self) -> Tuple[List[Path], bool]:
        """Remove what the work created, unless a resumable checkpoint is there to continue from.

        Returns ``(kept checkpoints, whether anything was removed)``.
        """
        kept = [o.path for o in self.outputs if o.resumable and not o.folder and o.path.exists()]
        if kept:
            return kept, False  # the run's files belong together: resume needs the best model beside its state
        removed = []
        for out in self.outputs:
            if out.folder:
                if out.path.is_dir():
                    removed += [out.path / n for n in set(os.listdir(out.path)) - self.folder_entries[out.path]]
                continue
            if self.files.get(out.path) is None and out.path.exists():
                removed.append(out.path)
            if out.path.parent.is_dir():  # a temporary file of an interrupted atomic write
                removed += list(out.path.parent.glob(f".{out.path.name}.*"))
        for path in removed:
            _remove(path)
        self.remove_created_dirs()
        return [], bool(removed)

    def remove_created_dirs(self) -> None:
        for folder in sorted(self.created_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if empty: never a folder holding someone's files
            except OSError:
                pass


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


class Failed(LWIError):
    """A failure during writing, whose message already says what was removed or kept."""


@contextmanager
def writing(
    outputs: Sequence[Output],
    *,
    overwrite: bool = False,
    resume: bool = False,
    lock: bool = False,
) -> Iterator[None]:
    """Check ``outputs`` (see :func:`check_outputs`), lock the first one when ``lock``, run the body,
    and on any failure or interruption remove what the body created, or keep the resumable
    checkpoints and say so.

    The error that ended the body is re-raised, with the cleanup sentence added to its message.
    """
    snapshot = _Snapshot(outputs)
    held: Optional[Lock] = None
    try:
        if lock and outputs:  # one lock per run, on its main output
            held = Lock(outputs[0].path)
            try:
                held.acquire()
            except OSError:  # an unwritable folder: check_outputs says so in a sentence
                held = None
        check_outputs(outputs, overwrite=overwrite, resume=resume)
    except BaseException:
        if held is not None:
            held.release()
        snapshot.remove_created_dirs()
        raise
    try:
        yield
    except BaseException as exc:
        if held is not None:
            held.release()
        kept, removed = snapshot.remove_new()
        if kept:
            note = f"The checkpoint {', '.join(map(str, kept))} is kept: run the same command with --resume to continue."
        elif removed:
            note = "What this run had written was removed."
        else:
            note = "Nothing was written."
        if isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(note) from None
        if isinstance(exc, OSError):
            raise Failed(f"{os_error_sentence(exc).rstrip('.')}. {note}") from None
        if isinstance(exc, LWIError) and (kept or removed):  # else its message stands as it is
            raise Failed(f"{str(exc).rstrip('.')}. {note}") from None
        raise
    finally:
        if held is not None:
            held.release()


def os_error_sentence(exc: OSError) -> str:
    """An operating-system error (disk full, permission denied, ...) as one sentence naming the file."""
    where = f" {exc.filename}" if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"Could not write or read{where}: {reason[:1].lower() + reason[1:]}."
