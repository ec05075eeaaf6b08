"""Where commands write: checked before any work, locked while a run writes, cleaned up after a failure.

Every command declares what it reads (:class:`Input`) and what it writes (:class:`Output`, including
derived files such as ``.last`` checkpoints and the files of a folder output) and runs its work
inside :func:`writing`; every file is written by :func:`write_file` (docs/contracts.md, "What is
refused"):

* before the work, the declared paths are resolved (relative, ``..``, symlinks, hard links) and an
  output that is an input, or another output, is refused (:func:`check_collisions`), with or
  without ``--overwrite``;
* each location is checked (:func:`check_outputs`): a file output must not be a folder and a folder
  output not a file; a device, pipe or socket is never written; an existing output is refused unless
  ``--overwrite`` (or, for resumable files, ``--resume``); the folder it goes to must be writable
  (probed by creating a file, which also catches read-only file systems and root on a read-only
  mount); the free space must cover the estimated size;
* :func:`write_file` writes into a private temporary folder beside the target and renames the result
  (and its companion files, ``.mhd`` + ``.raw``) into place: a planted symlink is replaced, never
  followed, and a failed write leaves the earlier file as it was; inside :func:`writing` with
  ``all_or_nothing``, the renames wait until the whole command succeeded;
* training outputs hold a lock file (``<output>.lock``: pid, host, command, start) so a second run
  writing the same ``--out`` is refused with the other process named (a lock whose process is gone
  is taken over);
* when the work fails or is interrupted, every file and folder it created is removed, except
  resumable checkpoints, which are kept (and the message says so).

Files are written with the permissions of the user's umask (:func:`follow_umask`), as any other
program's files are, so label maps, previews and models can be shared alike.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

from lwi.errors import LWIError, NotResumable

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
        files: for a folder, the names (relative paths) of the files it will write there when known
            in advance; each is checked against the inputs and the other outputs like a file output.
        whole: for a folder, the command replaces it as a whole (an exported bundle): no input may
            lie anywhere inside it.
    """

    path: Path
    option: str
    folder: bool = False
    estimate: int = 0
    resumable: bool = False
    files: Tuple[str, ...] = ()
    whole: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.files = tuple(self.files)

    def file_paths(self) -> List[Path]:
        """Every file this output may write: the file and its companions, or a folder's ``files``."""
        if self.folder:
            return [p for name in self.files for p in (self.path / name, *companions(self.path / name))]
        return [self.path, *companions(self.path)]


@dataclass
class Input:
    """One file or folder a command reads; an output may never be it (see :func:`check_collisions`).

    Args:
        path: the file (or a folder, whose own path then may not be written).
        option: the option that names it, e.g. ``"--model"``, or where it comes from, e.g.
            ``"--data (dataset.json)"``.
    """

    path: Path
    option: str

    def __post_init__(self) -> None:
        self.path = Path(self.path)


def inputs_of(option: str, paths: Iterable[PathLike]) -> List[Input]:
    """``paths`` as :class:`Input` entries of ``option`` (a dataset's images, a folder's files)."""
    return [Input(Path(p), option) for p in paths]


#: Files a format writes beside the named one (header + data): checked, written and cleaned together.
COMPANIONS: Dict[str, Tuple[str, ...]] = {
    ".mhd": (".raw", ".zraw"),
    ".nhdr": (".raw", ".raw.gz"),
    ".hdr": (".img", ".img.gz"),
    ".img": (".hdr",),
}


def companions(path: PathLike) -> List[Path]:
    """The companion files of ``path`` (``scan.mhd`` -> ``scan.raw``, ``scan.zraw``); none for one-file formats."""
    path = Path(path)
    lower = path.name.lower()
    for suffix, others in COMPANIONS.items():
        if lower.endswith(suffix):
            stem = path.name[: -len(suffix)]
            return [path.with_name(stem + other) for other in others]
    return []


# -- what is what: paths resolved before any comparison -------------------------------------------
def _key(path: Path) -> Tuple[str, Optional[Tuple[int, int]]]:
    """``(resolved path, (device, inode) when it exists)``: relative paths, ``..`` and symlinks resolve
    to the same path, and hard links share the inode."""
    real = os.path.realpath(os.path.abspath(path))
    if sys.platform in ("darwin", "win32"):  # case-insensitive by default there
        real = real.lower()
    try:
        st = os.stat(real)
    except OSError:
        return real, None
    return real, (st.st_dev, st.st_ino)


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` are one file (or would be once written): same resolved path or inode."""
    ka, kb = _key(Path(a)), _key(Path(b))
    return ka[0] == kb[0] or (ka[1] is not None and ka[1] == kb[1])


def check_collisions(inputs: Sequence[Input], outputs: Sequence[Output]) -> None:
    """Refuse, with one sentence naming both options and the file, any output that is one of the
    ``inputs`` or another output (after resolving relative paths, ``..``, symlinks and hard links).

    Checked with or without ``--overwrite``: no option makes a command replace what it reads, or
    write two results to one file.
    """
    read: List[Tuple[Tuple[str, Any], Input]] = []
    for inp in inputs:
        for path in (inp.path, *companions(inp.path)):
            if path == inp.path or os.path.lexists(path):
                read.append((_key(path), inp))
    written: List[Tuple[Tuple[str, Any], Output, Path]] = []
    for out in outputs:
        paths = out.file_paths() + ([out.path] if out.folder else [])
        for path in paths:
            key = _key(path)
            if out.folder and (path != out.path or out.whole):  # what the output owns holds no input
                for _, inp in read:
                    if key[0] != _key(inp.path)[0] and _key(inp.path)[0].startswith(key[0] + os.sep):
                        what = "is replaced as a whole" if path == out.path else f"would hold its own {path.name}"
                        raise LWIError(
                            f"{out.option} {out.path} {what}, but {inp.option} reads {inp.path} from there; "
                            f"choose another {out.option}."
                        )
            for other_key, inp in read:
                if key[0] == other_key[0] or (key[1] is not None and key[1] == other_key[1]):
                    same = "" if Path(path) == inp.path else f" ({inp.path})"
                    raise LWIError(
                        f"{out.option} {path} is what {inp.option} reads{same}: a command never writes over "
                        f"what it reads, even with --overwrite; choose another {out.option}."
                    )
            for other_key, other, other_path in written:
                if key[0] == other_key[0] or (key[1] is not None and key[1] == other_key[1]):
                    if other is out:
                        continue  # a folder output and its own files
                    raise LWIError(
                        f"{out.option} {path} is also written as {other.option} {other_path}: give each "
                        f"output its own file."
                    )
            written.append((key, out, path))


def _refuse_non_regular(path: Path, option: str) -> None:
    """Refuse a device node, pipe or socket (or a symlink to one) where a file is to be written."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there (or a dangling link, replaced like a file)
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "pipe" if stat.S_ISFIFO(mode) else "socket"
        raise LWIError(
            f"{option} {path} is a {kind}, not a regular file; LWI writes only regular files, even with "
            f"--overwrite, so choose a file name."
        )


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


def check_outputs(
    outputs: Sequence[Output],
    overwrite: bool = False,
    resume: bool = False,
    inputs: Sequence[Input] = (),
) -> None:
    """Refuse, with one sentence naming the option and the path, any output that cannot be written:
    one that is an input or another output (:func:`check_collisions`), a device, pipe or socket, a
    folder where a file goes (or the reverse), an existing file without ``overwrite``, an unwritable
    folder, or more than the free space.

    ``resume``: resumable outputs may exist (they are continued); the others may exist too, since a
    resumed run rewrites them.
    """
    check_collisions(inputs, outputs)
    need: Dict[int, Tuple[Path, int]] = {}  # file system -> (a folder on it, bytes to be written there)
    resumable = any(o.resumable for o in outputs)  # a run with a checkpoint: its outputs can be continued
    for out in outputs:
        path = out.path
        if out.folder:
            if path.exists() and not path.is_dir():
                raise LWIError(f"{out.option} {path} is a file, but a folder is needed there; choose another {out.option}.")
        elif path.is_dir():
            raise LWIError(f"{out.option} {path} is a folder; give a file name (inside it, or elsewhere).")
        for file in out.file_paths():
            _refuse_non_regular(file, out.option)
        existing = [p for p in out.file_paths() if os.path.lexists(p)]
        if out.folder and not existing and path.exists() and not _empty_folder(path):
            existing = [path]
        elif not out.folder and existing and existing[0] != path:
            existing = [path] if os.path.lexists(path) else existing  # a companion left without its header
        if existing and not overwrite and not resume:
            raise LWIError(
                f"{existing[0]} already exists; pass --overwrite to replace it"
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
    # The command's name only (lwi train): its whole command line would bury the sentence.
    command = " ".join(str(info.get("command") or "?").split()[:2])
    return f"process {info.get('pid')} on {info.get('host')} ({command}, started {when})"


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
                for path in out.file_paths():
                    self.files[path] = _mtime(path)
                self._missing_dirs(out.path.parent)

    def _missing_dirs(self, folder: Path) -> None:
        folder = Path(os.path.abspath(folder))
        while not os.path.lexists(folder) and folder != folder.parent:
            if folder not in self.created_dirs:
                self.created_dirs.append(folder)
            folder = folder.parent

    def written(self, out: Output) -> bool:
        now = _mtime(out.path)
        return now is not None and now != self.files.get(out.path)

    def remove_new(self, resume: bool = False, not_resumable: Optional[Path] = None) -> Tuple[List[Path], str]:
        """Remove what the work created, unless a resumable checkpoint is there to continue from:
        one this run wrote, or the one it resumed (``resume``). ``not_resumable``: a checkpoint the
        run found it cannot resume (kept as it was, never offered to ``--resume``).

        Returns ``(kept checkpoints, the sentence saying what happened to the files)``.
        """
        kept = [
            o.path for o in self.outputs
            if o.resumable and not o.folder and o.path.is_file() and (resume or self.written(o))
        ]
        if kept:
            unresumable = not_resumable is not None and any(same_file(p, not_resumable) for p in kept)
            if not unresumable and all(_readable_checkpoint(p) for p in kept):
                # The run's files belong together: resume needs the best model beside its state.
                return kept, (
                    f"The checkpoint {', '.join(map(str, kept))} is kept: run the same command with --resume "
                    "to continue."
                )
            kept = [p for p in kept if self.files.get(p) is not None]  # the user's files, damaged or not
            if kept:
                return kept, f"{', '.join(map(str, kept))} is left as it was (it cannot be resumed from)."
        removed: List[Path] = []
        replaced: List[Path] = []
        for out in self.outputs:
            if out.folder:
                if out.path.is_dir():
                    removed += [out.path / n for n in set(os.listdir(out.path)) - self.folder_entries[out.path]]
                continue
            for path in out.file_paths():
                before = self.files.get(path)
                if before is None and os.path.lexists(path):
                    removed.append(path)
                elif before is not None and _mtime(path) != before:
                    replaced.append(path)
            if out.path.parent.is_dir():  # the temporary folder or file of an interrupted write
                removed += list(out.path.parent.glob(f".{out.path.name}.*"))
        for path in removed:
            _remove(path)
        self.remove_created_dirs()
        new = [p for p in removed if not p.name.startswith(".")]
        if replaced:
            return [], (
                f"{', '.join(map(str, replaced))} had already been replaced by this run (--overwrite) and is kept"
                + ("; the other files it wrote were removed." if new else ".")
            )
        if new:
            return [], "What this run had written was removed."
        return [], "Nothing was written."

    def remove_created_dirs(self) -> None:
        for folder in sorted(self.created_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if empty: never a folder holding someone's files
            except OSError:
                pass


def _mtime(path: Path) -> Optional[int]:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return None


def _readable_checkpoint(path: Path) -> bool:
    """True when ``path`` is a complete LWI file (header readable, tensors within the file)."""
    from lwi.names import read_header_metadata

    try:
        read_header_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


# -- the one way a file is written ---------------------------------------------------------------
class _Staged:
    """A file (and its companions) written into a private temporary folder beside its target,
    waiting to be renamed into place."""

    def __init__(self, path: Path, folder: Path, option: str):
        self.path, self.folder, self.option = path, folder, option

    def commit(self) -> None:
        """Rename the written files into place, companions first and the named file last (a reader
        that finds the header finds its data), then remove stale companions of an earlier version."""
        produced = sorted(os.listdir(self.folder), key=lambda name: name == self.path.name)
        if self.path.name not in produced:
            raise LWIError(f"{self.option} {self.path} was not written (the writer produced no such file).")
        for name in produced:
            target = self.path.with_name(name)
            _refuse_non_regular(target, self.option)  # checked again: the folder may have changed meanwhile
            os.replace(self.folder / name, target)  # replaces a symlink itself, never what it points to
        for stale in companions(self.path):
            if stale.name not in produced and os.path.lexists(stale) and not stale.is_dir():
                stale.unlink()  # the data file of the version just replaced (.raw after a .zraw)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _Transaction:
    """The files written inside :func:`writing` with ``all_or_nothing``: renamed into place together
    when the whole command succeeded, discarded when it failed."""

    def __init__(self) -> None:
        self.staged: Dict[Path, _Staged] = {}

    def add(self, staged: _Staged) -> None:
        earlier = self.staged.pop(Path(os.path.abspath(staged.path)), None)
        if earlier is not None:
            earlier.discard()
        self.staged[Path(os.path.abspath(staged.path))] = staged

    def commit(self) -> None:
        for staged in self.staged.values():
            staged.commit()
        self.staged.clear()

    def discard(self) -> None:
        for staged in self.staged.values():
            staged.discard()
        self.staged.clear()


_TRANSACTION: contextvars.ContextVar[Optional[_Transaction]] = contextvars.ContextVar("lwi_outputs", default=None)


def write_file(path: PathLike, write: Callable[[Path], Any], option: str = "output") -> Path:
    """The one way LWI writes a file: ``write(temporary_path)`` writes it (any format, including one
    with companion files such as ``.mhd`` + ``.raw``) into a private temporary folder beside ``path``,
    whose files are then renamed into place.

    * A symlink at ``path`` is replaced, never written through; a device, pipe or socket is refused.
    * A failure (disk full, file too large, an error of the writer) removes the temporary folder and
      leaves whatever was at ``path`` as it was; an OS error becomes one sentence naming the file.
    * Inside :func:`together` (or :func:`writing` with ``all_or_nothing=True``) the rename waits until
      the block succeeded.

    New outputs (issues 24, 25) write through this and declare themselves as :class:`Output`.

    Args:
        path: the file to write.
        write: called with the temporary file's path (same name, in the temporary folder).
        option: the option naming the file, for messages.
    """
    path = Path(path)
    _refuse_non_regular(path, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    # ".<name>.XXXX": the temporary-file pattern a failed run's cleanup removes (_Snapshot.remove_new).
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent)))
    staged = _Staged(path, folder, option)
    try:
        write(folder / path.name)
        for name in os.listdir(folder):
            follow_umask(folder / name)
    except BaseException as exc:
        staged.discard()
        if isinstance(exc, OSError):
            raise LWIError(_write_failure(path, exc)) from None
        raise
    transaction = _TRANSACTION.get()
    if transaction is not None:
        transaction.add(staged)
        return path
    try:
        staged.commit()
    except OSError as exc:
        staged.discard()
        raise LWIError(_write_failure(path, exc)) from None
    return path


def _write_failure(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    earlier = "the earlier file is unchanged" if os.path.lexists(path) else "nothing was left there"
    return f"Could not write {path} ({reason[:1].lower() + reason[1:]}); {earlier}."


@contextmanager
def together() -> Iterator[None]:
    """The files :func:`write_file` writes inside this block are put in place together when the block
    succeeds, and discarded when it fails (an earlier version of each stays as it was). Inside an
    enclosing block (or ``writing(..., all_or_nothing=True)``) they join that one."""
    if _TRANSACTION.get() is not None:
        yield
        return
    transaction = _Transaction()
    token = _TRANSACTION.set(transaction)
    try:
        yield
    except BaseException:
        _TRANSACTION.reset(token)
        transaction.discard()
        raise
    _TRANSACTION.reset(token)
    try:
        transaction.commit()
    except BaseException:
        transaction.discard()
        raise


def write_failure_reason(folder: PathLike, words: str) -> str:
    """Why a writer that reports no OS error (ITK) failed: a full disk or the file-size limit when
    that is the case, else the writer's own ``words``."""
    try:
        if shutil.disk_usage(str(_existing_ancestor(Path(folder)))).free < SPACE_MARGIN_BYTES:
            return "no space left on device"
    except OSError:
        pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            return f"{words}; files are limited to {_mb(limit)} here (ulimit -f)"
    except (ImportError, OSError, ValueError):
        pass
    return words


def write_text(path: PathLike, text: str, option: str = "output") -> Path:
    """Write a text file (UTF-8) through :func:`write_file`."""
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), option)


def open_append(path: PathLike) -> Any:
    """Open a log or results file for appending, refusing a symlink or a non-regular file there (a
    planted link must not redirect the lines into another file)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(str(path), flags, 0o666)
    except OSError as exc:
        if os.path.islink(path):
            raise LWIError(f"{path} is a symlink; LWI appends only to regular files, so remove it.") from None
        raise LWIError(_write_failure(path, exc)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LWIError(f"{path} is not a regular file; LWI appends only to regular files, so remove it.")
    return os.fdopen(fd, "a", encoding="utf-8")


class Failed(LWIError):
    """A failure during writing, whose message already says what was removed or kept."""


@contextmanager
def writing(
    outputs: Sequence[Output],
    *,
    inputs: Sequence[Input] = (),
    overwrite: bool = False,
    resume: bool = False,
    lock: bool = False,
    all_or_nothing: bool = False,
) -> Iterator[None]:
    """Check ``outputs`` against ``inputs`` and the disk (see :func:`check_outputs`), lock the first
    one when ``lock``, run the body, and on any failure or interruption remove what the body created,
    or keep the resumable checkpoints and say so.

    ``all_or_nothing``: the files the body writes with :func:`write_file` appear only when the whole
    body succeeded (an earlier output replaced with ``--overwrite`` stays as it was when a later one
    fails); for commands without resumable checkpoints.

    The error that ended the body is re-raised, with the cleanup sentence added to its message.
    """
    snapshot = _Snapshot(outputs)
    held: Optional[Lock] = None
    try:
        check_collisions(inputs, outputs)  # first: the lock file must not be made for a refused run either
        if lock and outputs:  # one lock per run, on its main output
            held = Lock(outputs[0].path)
            try:
                held.acquire()
            except OSError:  # an unwritable folder: check_outputs says so in a sentence
                held = None
        check_outputs(outputs, overwrite=overwrite, resume=resume, inputs=inputs)
    except BaseException:
        if held is not None:
            held.release()
        snapshot.remove_created_dirs()
        raise
    try:
        with together() if all_or_nothing else nullcontext():
            yield
    except BaseException as exc:
        if held is not None:
            held.release()
        kept, note = snapshot.remove_new(resume, Path(exc.path) if isinstance(exc, NotResumable) else None)
        removed = note != "Nothing was written."
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
