"""Progress reporting shared by every long-running command.

Two audiences: a person at a terminal gets tqdm bars on stderr; a program (the Slicer modules,
users' scripts) passes ``--progress json`` and reads one JSON object per line on stdout. Every
object has an ``event`` field: ``"progress"`` while working, ``"log"`` for a message, ``"warning"``
for something the user must act on, ``"plan"`` for a training plan, then exactly one final
``"result"`` or ``"error"``.
"""

from __future__ import annotations

import json
import math
import sys
import time
import weakref
from typing import Any, Optional, TextIO

from tqdm import tqdm


def clean_fields(value: Any) -> Any:
    """Make a value JSON-safe: tensors and numpy scalars to floats, NaN/inf to None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return None if (math.isnan(value) or math.isinf(value)) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): clean_fields(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_fields(v) for v in value]
    return value


_OPEN: weakref.WeakSet = weakref.WeakSet()  # reporters with a bar on screen


def close_all() -> None:
    """Close every open progress bar, so that what is printed next (an error) is the last line seen."""
    for progress in list(_OPEN):
        progress.close()


class Progress:
    """Reports progress as tqdm bars (stderr) and, in JSON mode, JSON lines (stdout).

    Args:
        mode: ``"tqdm"`` (bars only), ``"json"`` (JSON lines on stdout and bars on stderr) or
            ``"none"`` (silent, for library use and tests).
        stream: where JSON lines go (stdout by default).
    """

    def __init__(self, mode: str = "tqdm", stream: Optional[TextIO] = None):
        if mode not in ("tqdm", "json", "none"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stdout
        self._bar: Optional[tqdm] = None
        self._start = time.monotonic()
        self._stage: Optional[str] = None
        self._initial = 0
        # Whole-run accounting across stages (``lwi train``: Step 1 then Step 2), see plan().
        self._run_total: Optional[int] = None
        self._offset: Optional[int] = None

    # -- JSON lines -------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        """Write one JSON object (in JSON mode only)."""
        if self.mode != "json":
            return
        obj = {"event": event, **clean_fields(fields)}
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    def log(self, message: str) -> None:
        """A human message: on stderr always (unless silent), and as a ``log`` event in JSON mode."""
        if self.mode != "none":
            tqdm.write(message, file=sys.stderr)
        self.emit("log", message=message)

    def warn(self, message: str, **fields: Any) -> None:
        """A warning the user must see: ``Warning: ...`` on stderr (unless silent) and a ``warning``
        event with ``message`` and ``fields`` (e.g. ``kind``, ``labels``) in JSON mode."""
        if self.mode != "none":
            tqdm.write(f"Warning: {message}", file=sys.stderr)
        self.emit("warning", message=message, **fields)

    # -- bars -------------------------------------------------------------------------------
    def plan(self, total: Optional[int]) -> None:
        """Declare the steps of the whole run when it has several stages (``None`` to forget it).

        Stages started with ``offset=`` then report ``fraction`` and ``eta_seconds`` of the whole run
        (their own share goes into ``stage_fraction``), so a GUI shows one bar from start to end.
        """
        self._run_total = total

    def start(
        self, stage: str, total: int, unit: str = "it", initial: int = 0, offset: Optional[int] = None
    ) -> None:
        """Begin a stage of ``total`` steps (closes the previous stage's bar).

        ``initial``: steps already done (a resumed run), so the ETA uses only the rate seen now.
        ``offset``: steps of the planned run (see :meth:`plan`) finished before this stage; stages
        started without one (e.g. preprocessing) report their own fraction.
        """
        self.close()
        self._stage = stage
        self._start = time.monotonic()
        self._initial = initial
        self._offset = offset
        if self.mode != "none":
            self._bar = tqdm(
                total=total, initial=initial, desc=stage, unit=unit, file=sys.stderr, dynamic_ncols=True
            )
            _OPEN.add(self)

    def update(self, done: int, total: int, **fields: Any) -> None:
        """Report that ``done`` of ``total`` steps of the current stage are finished.

        ``fields`` (epoch, epochs, iteration, losses, dice, ...) go into the JSON line; the fraction
        done and the ETA in seconds are computed here so every command reports them alike.
        """
        elapsed = time.monotonic() - self._start
        fraction = done / total if total else 1.0
        rate_done = done - self._initial  # steps done in this process: the only honest rate
        seconds_per_step = elapsed / rate_done if rate_done > 0 else None
        eta = seconds_per_step * (total - done) if seconds_per_step is not None else None
        extra = {}
        if self._run_total and self._offset is not None:
            extra["stage_fraction"] = fraction
            run_done = self._offset + done
            fraction = min(1.0, run_done / self._run_total)
            eta = seconds_per_step * max(0, self._run_total - run_done) if seconds_per_step is not None else None
        if self._bar is not None:
            self._bar.n = done
            short = {k: v for k, v in fields.items() if isinstance(v, float)}
            if short:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in short.items()}, refresh=False)
            self._bar.refresh()
        self.emit("progress", stage=self._stage, **fields, **extra, fraction=fraction, eta_seconds=eta)

    def close(self) -> None:
        """Close the current bar (it stays on screen, ended by a newline)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        _OPEN.discard(self)

    # -- the end ----------------------------------------------------------------------------
    def result(self, **fields: Any) -> None:
        """The final success object."""
        self.close()
        self.emit("result", **fields)

    def error(self, message: str) -> None:
        """The final failure object."""
        self.close()
        self.emit("error", message=message)
