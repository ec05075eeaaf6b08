"""A long-lived segmentation worker: ``python -m lwi.worker``.

The Slicer module starts one per session and sends it requests, so the second volume pays neither
for starting Python and torch nor for loading the model onto the GPU again. The protocol is one JSON
object per line on stdin (requests) and stdout (events); tqdm bars and stray prints go to stderr.

Requests (``id`` is any JSON value chosen by the client and echoed in every event of the request)::

    {"id": 1, "command": "segment", "model": M, "input": IMAGE, "output": LABELMAP,
     "device": "auto", "options": {"largest_component": false, "overlap": 0.5, "sw_batch_size": 4,
                                   "roi_size": [96, 96, 96], "spacing_scale": 1.0, "amp": true,
                                   "compress": true, "uncertainty_path": null}}
    {"id": 2, "command": "ping"}
    {"id": 3, "command": "cancel", "target": 1}      (stops request 1 at its next window batch)
    {"id": 4, "command": "shutdown"}

Events: ``{"event": "ready", "protocol": 1, "pid": ...}`` once at start; then, per request,
``progress`` and ``log`` events and exactly one final ``result`` or ``error`` (``"cancelled": true``
for a cancelled request), each with the request's ``id``. A ``segment`` result holds ``output``,
``device``, ``seconds``, ``load_seconds`` (0 when the loaded model was reused), ``reused_model`` and
the model's ``labels``, and with an ``uncertainty_path`` option ``uncertainty`` (the map's path) and
``uncertainty_score`` (:func:`lwi.inference.uncertainty_score`). The model stays loaded between requests and is reloaded when the model file
(path or contents), the device or the window size changes. The worker exits on ``shutdown`` or when
stdin closes (the client, e.g. Slicer, went away).
"""

from __future__ import annotations

import gc
import json
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any, Dict, Optional, TextIO, Tuple

from lwi import segment_options
from lwi.errors import LWIError
from lwi.progress import Progress

PROTOCOL_VERSION = 1

#: Per-request options a ``segment`` request may carry: the keys of :mod:`lwi.segment_options`
#: (Segmenter arguments, plus writing options), the same the ``lwi segment`` flags set.
SEGMENTER_OPTIONS = segment_options.SEGMENTER_KEYS
WRITE_OPTIONS = segment_options.WRITE_KEYS


class Cancelled(Exception):
    """Raised inside a request when the client cancelled it."""


class _RequestProgress(Progress):
    """Progress whose JSON events carry the request id and that stops the request on cancel."""

    def __init__(self, worker: Worker, request_id: Any):
        super().__init__("json", stream=worker.out)
        self._worker = worker
        self._id = request_id

    def emit(self, event: str, **fields: Any) -> None:
        self._worker.send(event, self._id, **fields)

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        self.emit("log", message=message)

    def update(self, done: int, total: int, **fields: Any) -> None:
        if self._worker.cancel_requested(self._id):
            raise Cancelled()
        super().update(done, total, **fields)


class Worker:
    """The request loop. ``out`` receives the protocol (stdout); everything else goes to stderr."""

    def __init__(self, out: TextIO):
        self.out = out
        self._lock = threading.Lock()
        self._requests: queue.Queue = queue.Queue()
        self._cancelled: set = set()
        self._current: Any = None
        self._segmenter = None
        self._key: Optional[Tuple[Any, ...]] = None

    # -- output ---------------------------------------------------------------------------
    def send(self, event: str, request_id: Any = None, **fields: Any) -> None:
        """Write one event line (thread-safe: the stdin reader answers ``cancel`` itself)."""
        from lwi.progress import clean_fields

        obj: Dict[str, Any] = {"event": event}
        if request_id is not None:
            obj["id"] = request_id
        obj.update(clean_fields(fields))
        with self._lock:
            self.out.write(json.dumps(obj) + "\n")
            self.out.flush()

    # -- input ----------------------------------------------------------------------------
    def read_requests(self, stream: TextIO) -> None:
        """Reader thread: queue requests, answer ``cancel`` at once; EOF stops the worker."""
        for line in iter(stream.readline, ""):
            text = line.strip()
            if not text:
                continue
            try:
                request = json.loads(text)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.send("error", None, message=f"The request {text[:200]!r} is not a JSON object; send one per line.")
                continue
            if request.get("command") == "cancel":
                target = request.get("target")
                with self._lock:
                    self._cancelled.add(json.dumps(target))
                self.send("result", request.get("id"), command="cancel", target=target)
                continue
            self._requests.put(request)
        # The client is gone: stop what is running and leave.
        with self._lock:
            self._cancelled.add(json.dumps(self._current))
        self._requests.put(None)

    def cancel_requested(self, request_id: Any) -> bool:
        with self._lock:
            return json.dumps(request_id) in self._cancelled

    # -- the model --------------------------------------------------------------------------
    def segmenter_for(self, model: str, device: str, options: Dict[str, Any], progress: Progress):
        """A segmenter for this request, reusing the loaded model when file, device and ROI match.

        Returns ``(segmenter, load_seconds, reused)``.
        """
        from lwi.inference import Segmenter

        path = os.path.realpath(model)
        if not os.path.isfile(path):
            raise LWIError(f"The model file {model} does not exist.")
        stat = os.stat(path)
        roi = options.get("roi_size")
        key = (path, stat.st_mtime_ns, stat.st_size, str(device or "auto"), tuple(roi) if roi else None)
        load_seconds, reused = 0.0, key == self._key
        if not reused:
            self.unload()
            progress.log(f"Loading the model {os.path.basename(path)}.")
            t0 = time.monotonic()
            self._segmenter = Segmenter(path, device=device or "auto", roi_size=roi)
            self._key = key
            load_seconds = time.monotonic() - t0
        base = self._segmenter
        # A light segmenter per request shares the loaded network (no copy) but has its own
        # progress and window options.
        kwargs = {k: options[k] for k in SEGMENTER_OPTIONS if options.get(k) is not None}
        kwargs.setdefault("roi_size", base.roi_size)
        segmenter = Segmenter.from_model(base.model, base.metadata, device=base.device, progress=progress, **kwargs)
        return segmenter, load_seconds, reused

    def unload(self) -> None:
        """Free the loaded model (and its GPU memory)."""
        if self._segmenter is None:
            return
        device = self._segmenter.device
        self._segmenter, self._key = None, None
        gc.collect()
        if device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- requests -------------------------------------------------------------------------
    def handle(self, request: Dict[str, Any]) -> bool:
        """Answer one request; returns False when the worker should exit."""
        request_id, command = request.get("id"), request.get("command")
        if command == "shutdown":
            self.unload()
            self.send("result", request_id, command="shutdown")
            return False
        if command == "ping":
            loaded = self._key[0] if self._key else None
            device = str(self._segmenter.device) if self._segmenter is not None else None
            self.send("result", request_id, command="ping", protocol=PROTOCOL_VERSION, model=loaded, device=device)
            return True
        if command != "segment":
            self.send("error", request_id, message=f"Unknown command {command!r}; use segment, ping, cancel or shutdown.")
            return True
        self._current = request_id
        try:
            self.segment(request_id, request)
        except Cancelled:
            self.send("error", request_id, message="The segmentation was cancelled.", cancelled=True)
        except LWIError as exc:
            self.send("error", request_id, message=str(exc))
        except Exception as exc:  # keep serving: one bad volume must not end the session
            traceback.print_exc(file=sys.stderr)
            self.send("error", request_id, message=f"Unexpected error ({type(exc).__name__}): {exc}.")
        finally:
            self._current = None
            with self._lock:
                self._cancelled.discard(json.dumps(request_id))
        return True

    def segment(self, request_id: Any, request: Dict[str, Any]) -> None:
        from lwi.inference import segment_file
        from lwi.outputs import Input, Output, check_collisions, writing

        for field in ("model", "input", "output"):
            value = request.get(field)
            if not value:
                raise LWIError(f"The segment request has no {field!r}.")
            if not isinstance(value, str):
                raise LWIError(f"The segment request's {field!r} must be a path (text), not {value!r}.")
        if not isinstance(request.get("device") or "auto", str):
            raise LWIError(f"The segment request's 'device' must be text such as auto or cpu, not {request['device']!r}.")
        try:  # every option of its type and range, as lwi segment's parser checks them
            options = segment_options.check_values(request.get("options"))
        except ValueError as exc:
            raise LWIError(str(exc)) from None
        # The output may be neither the image nor the model (resolved: links, hard links, ..).
        check_collisions([Input(request["input"], "input"), Input(request["model"], "model")],
                         [Output(request["output"], "output")])
        progress = _RequestProgress(self, request_id)
        t0 = time.monotonic()
        segmenter, load_seconds, reused = self.segmenter_for(request["model"], request.get("device"), options, progress)
        if self.cancel_requested(request_id):
            raise Cancelled()
        # The output's folder is checked before the work and a failure leaves nothing there; the client
        # chooses a fresh output per request, so an existing file is replaced (as before).
        declared = [Output(request["output"], "output")]
        if options.get("uncertainty_path"):
            declared.append(Output(options["uncertainty_path"], "uncertainty_path"))
        with writing(declared, overwrite=True):
            result = segment_file(
                segmenter,
                request["input"],
                request["output"],
                largest_component=bool(options.get("largest_component", False)),
                compress=bool(options.get("compress", True)),
                uncertainty_path=options.get("uncertainty_path"),
            )
        self.send(
            "result",
            request_id,
            command="segment",
            output=str(request["output"]),
            device=result.device,
            seconds=time.monotonic() - t0,
            load_seconds=load_seconds,
            reused_model=reused,
            labels=segmenter.metadata.get("labels", []),
            uncertainty=options.get("uncertainty_path"),
            uncertainty_score=result.uncertainty_score,
        )

    def serve(self, stdin: TextIO) -> int:
        """Run until ``shutdown`` or end of input."""
        self.send("ready", None, protocol=PROTOCOL_VERSION, pid=os.getpid())
        threading.Thread(target=self.read_requests, args=(stdin,), daemon=True).start()
        while True:
            request = self._requests.get()
            if request is None or not self.handle(request):
                self.unload()
                return 0


def main() -> int:
    """Entry point of ``python -m lwi.worker``: the protocol on stdout, all else on stderr."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # a library's print() must not break the protocol
    return Worker(protocol).serve(sys.stdin)


if __name__ == "__main__":
    raise SystemExit(main())
