"""Ctrl-C and SIGTERM (a GUI's Cancel, a cluster's time limit): acknowledged at once, obeyed at a safe point.

While a training loop runs (:func:`stoppable`), the first Ctrl-C or SIGTERM is answered on stderr at
once ("stopping after this iteration, writing the checkpoint") and only sets a flag; the loop checks
:func:`stop_requested` after every iteration, writes its checkpoint and raises ``KeyboardInterrupt``,
so ``--resume`` continues exactly there. A second signal, or one outside a training loop
(preprocessing, segmentation), raises ``KeyboardInterrupt`` right away; atomic writes and
:func:`lwi.outputs.writing` then leave no partial file.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator

_state: Dict[str, Any] = {"loops": 0, "requested": False}


def _handle(signum: int, frame: Any) -> None:  # noqa: ARG001
    if _state["loops"] > 0 and not _state["requested"]:
        _state["requested"] = True
        what = "SIGTERM received" if signum == signal.SIGTERM else "Ctrl-C"
        _say(f"{what}: stopping after this iteration, writing the checkpoint (Ctrl-C again to stop at once).")
        return
    raise KeyboardInterrupt


def _say(message: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - a message must never break the stop
        pass


@contextmanager
def handling() -> Iterator[None]:
    """Route Ctrl-C and SIGTERM to the handler above while the body runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def stoppable() -> Iterator[None]:
    """Mark a loop that stops at its next iteration boundary when a stop is requested."""
    _state["loops"] += 1
    try:
        yield
    finally:
        _state["loops"] -= 1
        requested = _state["requested"]
        if _state["loops"] == 0:
            _state["requested"] = False
    if requested:  # the request came as the loop ended: stop here rather than start the next stage
        raise KeyboardInterrupt


def stop_requested() -> bool:
    """True once Ctrl-C or SIGTERM asked the running loop to stop."""
    return bool(_state["requested"])
