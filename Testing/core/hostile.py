"""Hostile inputs for the robustness tests: tiny images, models and DICOM series, and the checks every
refused command must pass (non-zero exit, one sentence last, no traceback, nothing changed or left)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
CATCH_ALL = "Unexpected error"
SHAPE = (24, 24, 16)  # the shared phantom's size: small enough for many subprocesses at once


def lwi(*args: str, cwd: Optional[Path] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m lwi ARGS`` as a user runs it (one thread: the CI machine is small)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "LWISegmentation")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lwi", *map(str, args)], capture_output=True, text=True, encoding="utf-8",
        env=env, cwd=cwd, timeout=timeout,
    )


def file_state(path: Path) -> str:
    """What is at ``path``: a folder, a symlink and its target, a device/pipe/socket (never read: a
    pipe would block) with its inode, or a regular file's sha256 and inode (a replaced file differs)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return f"link -> {os.readlink(path)}"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if not stat.S_ISREG(st.st_mode):
        return f"special {stat.S_IFMT(st.st_mode)} inode {st.st_ino}"
    return f"{hashlib.sha256(path.read_bytes()).hexdigest()} inode {st.st_ino}"


def snapshot(*roots: Path) -> Dict[str, str]:
    """``{path: state}`` of everything under ``roots`` (see :func:`file_state`), links not followed."""
    found: Dict[str, str] = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            continue
        found[str(root)] = file_state(root)
        if root.is_dir() and not root.is_symlink():
            for path in sorted(root.rglob("*")):
                found[str(path)] = file_state(path)
    return found


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_refused(proc: subprocess.CompletedProcess, before: Dict[str, str], roots: Iterable[Path],
                   expect: Sequence[str] = ()) -> str:
    """The contract of every refusal: non-zero exit, the last stderr line one sentence (not the
    catch-all, not a progress bar), no traceback, and every file under ``roots`` as it was."""
    line = last_line(proc.stderr)
    context = f"exit {proc.returncode}; stderr tail:\n{proc.stderr[-1500:]}"
    assert proc.returncode != 0, context
    assert "Traceback" not in proc.stderr, context
    assert CATCH_ALL not in proc.stderr, context
    lines = [x for x in proc.stderr.replace("\r", "\n").splitlines() if x.strip()]
    errors = [i for i, x in enumerate(lines) if x.startswith("lwi ") and ": error: " in x]
    assert errors, context
    # The error is the end: its sentence, or a dataset's list of problems, one sentence per line.
    tail = lines[errors[-1]:]
    assert all(x.startswith("  - ") for x in tail[1:]), context
    line = " ".join(tail)
    assert all(x.rstrip().endswith((".", ":")) for x in tail) and tail[-1].rstrip().endswith("."), context
    assert "it/s" not in line and "%|" not in line, context
    for text in expect:
        assert text.lower() in line.lower(), f"{text!r} not in the last line: {line}\n{context}"
    assert snapshot(*roots) == before, f"files changed or left behind\n{context}"
    return line


def write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def volume(shape=(20, 20, 16), spacing=(2.0, 2.0, 2.0), seed: int = 0, dtype=np.float32) -> sitk.Image:
    """A small noisy image ``shape`` = (x, y, z)."""
    rng = np.random.default_rng(seed)
    array = (rng.normal(100, 30, size=tuple(reversed(shape)))).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def dicom_series(folder: Path, image: sitk.Image, positions: Optional[List[float]] = None,
                 series_uid: str = "1.2.826.0.1.3680043.2.1125.1") -> Path:
    """Write ``image`` as a DICOM series (one file per slice) with SimpleITK; ``positions`` overrides
    the slice positions along z (missing or uneven slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    size = image.GetSize()
    positions = positions if positions is not None else [i * image.GetSpacing()[2] for i in range(size[2])]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i, z in enumerate(positions):
        piece = image[:, :, i % size[2]]
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0020|0013": str(i + 1),
            "0020|0032": f"0\\0\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{image.GetSpacing()[1]}\\{image.GetSpacing()[0]}",
            "0018|0050": str(image.GetSpacing()[2]),
            "0008|0018": f"{series_uid}.{i + 1}",
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{i:03d}.dcm"))
        writer.Execute(piece)
    return folder


@dataclass
class Kit:
    """Inputs shared by a module's cases (read-only for them; hashed before and after all runs)."""

    root: Path
    model: Path
    image: Path
    data: Path


def kit_files(root: Path, make_bundle: Callable[..., Path]) -> Dict[str, Path]:
    """A tiny model, a phantom image and a 3-case phantom dataset under ``root``: :class:`Kit`'s files."""
    image, _ = make_phantom(7, shape=SHAPE)
    return {"root": root, "model": make_bundle(root / "model.lwi.safetensors", PHANTOM_LABELS),
            "image": write(image, root / "ct.nii.gz"), "data": write_phantom_dataset(root / "data", 3, shape=SHAPE)}


@dataclass
class Case:
    """One command that must be refused: its arguments, the folders that must be left exactly as they
    were, words its last line must hold and must not hold (case-insensitive), the folder it runs in,
    and why it is skipped on this machine (empty: it runs)."""

    args: List[Any]
    roots: List[Path]
    expect: Tuple[str, ...] = ()
    absent: Tuple[str, ...] = ()
    cwd: Optional[Path] = None
    skip: str = ""


class Cases(Dict[str, Callable[[Path, Any], Case]]):
    """A module's refused commands by name: ``@CASES.add(name)`` registers a builder ``(folder, kit) -> Case``."""

    def add(self, name: str) -> Callable[[Callable[[Path, Any], Case]], Callable[[Path, Any], Case]]:
        def register(builder: Callable[[Path, Any], Case]) -> Callable[[Path, Any], Case]:
            self[name] = builder
            return builder

        return register

    def run(self, kit: Any, tmp_path_factory: Any) -> Dict[str, Any]:
        """Build every case in a folder of its own, hash what it must keep, then run all of them as
        real subprocesses in parallel (one thread each). Returns ``{"shared": kit snapshot, "cases":
        {name: (case, snapshot before, completed process or None when skipped)}}``."""
        shared = snapshot(kit.root)
        prepared = {}
        for name, builder in self.items():
            made = builder(tmp_path_factory.mktemp(name.replace(" ", "_")[:40]), kit)
            prepared[name] = (made, snapshot(*made.roots))
        runnable = {name: made for name, (made, _) in prepared.items() if not made.skip}
        with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
            futures = {name: pool.submit(lwi, *made.args, cwd=made.cwd) for name, made in runnable.items()}
            results = {name: future.result() for name, future in futures.items()}
        return {"shared": shared, "cases": {n: (m, b, results.get(n)) for n, (m, b) in prepared.items()}}


def check_refused(outcome: Tuple[Case, Dict[str, str], Optional[subprocess.CompletedProcess]]) -> None:
    """:func:`assert_refused` on one outcome of :meth:`Cases.run`, with the case's unwanted words."""
    made, before, proc = outcome
    if made.skip:
        pytest.skip(made.skip)
    line = assert_refused(proc, before, made.roots, made.expect)
    for text in made.absent:
        assert text.lower() not in line.lower(), line
