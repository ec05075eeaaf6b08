"""Segmenting a folder of images: one model per device, reading and writing overlapped with compute.

``lwi segment --input FOLDER`` runs :func:`segment_folder`. On one device the images go through one
:class:`Pipeline` in this process; with several (``--devices cuda:0 cuda:1``, ``--devices all``) one
worker process per device builds its :class:`~lwi.inference.Segmenter` once and takes images from
one shared queue, so a fast GPU simply takes more of them. In every worker the next image is read
in a background thread while the current one is segmented, and label maps are written in another
background thread; the network never waits for the disk. Results do not depend on the number of
devices: each image is segmented by the same code with the same model.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from lwi.errors import LWIError
from lwi.progress import Progress


@dataclass(frozen=True)
class Job:
    """One image of the folder and where its outputs go (``output_format``: see :func:`lwi.inference.write_result`)."""

    image: Path
    output: Path
    probabilities: Optional[Path] = None
    uncertainty: Optional[Path] = None
    output_format: str = "auto"


@dataclass
class Outcome:
    """What became of one job: ``error`` is None on success; ``uncertainty`` is the case's uncertainty
    score when its map was asked for."""

    index: int
    device: str
    seconds: float
    error: Optional[str] = None
    uncertainty: Optional[float] = None


def resolve_devices(specs: Sequence[str]) -> List[str]:
    """``--devices`` values as device names; ``all`` = every CUDA GPU PyTorch sees (else the CPU).

    The same device may be named twice (``cpu cpu``: two CPU workers sharing the cores).
    """
    import torch

    from lwi.devices import resolve_device

    names: List[str] = []
    for spec in specs:
        if str(spec).lower() == "all":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            names += [f"cuda:{i}" for i in range(count)] or ["cpu"]
        else:
            device = resolve_device(spec)
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", 0)
            names.append(str(device))
    if not names:
        raise LWIError("No device to segment on.")
    return names


class Pipeline:
    """Segments a stream of jobs with one segmenter: read ahead, compute, write behind.

    The reader and writer threads spend their time in SimpleITK's file code, which releases the GIL,
    so on a CPU they overlap with the network too.
    """

    def __init__(self, segmenter: Any, largest_component: bool = False, compress: bool = True):
        self.segmenter = segmenter
        self.largest_component = largest_component
        self.compress = compress

    def run(self, jobs: Iterator[Tuple[int, Job]], done: Callable[[Outcome], None]) -> None:
        """Segment every ``(index, job)`` of ``jobs``; ``done(outcome)`` once each is written or failed."""
        from lwi.io import read_image

        with ThreadPoolExecutor(1, thread_name_prefix="lwi-read") as reader, ThreadPoolExecutor(
            1, thread_name_prefix="lwi-write"
        ) as writer:

            def read(item: Optional[Tuple[int, Job]]) -> Optional[Tuple[int, Job, Future]]:
                if item is None:
                    return None
                return item[0], item[1], reader.submit(read_image, item[1].image)

            upcoming = read(next(jobs, None))
            writes: List[Future] = []
            while upcoming is not None:
                index, job, image = upcoming
                upcoming = read(next(jobs, None))  # read the next image while this one is segmented
                started = time.monotonic()  # an image's time: waiting for its file, compute, writing
                try:
                    result = self.segmenter.segment(
                        image.result(),
                        largest_component=self.largest_component,
                        return_probabilities=job.probabilities is not None,
                        return_uncertainty=job.uncertainty is not None,
                    )
                except Exception as exc:  # noqa: BLE001 - one bad image must not stop the folder
                    done(Outcome(index, str(self.segmenter.device), time.monotonic() - started, _message(exc)))
                    continue
                writes.append(writer.submit(self._write, index, job, result, started, done))
            for w in writes:
                w.result()

    def _write(self, index: int, job: Job, result: Any, started: float, done: Callable[[Outcome], None]) -> None:
        from lwi.inference import write_result

        error = None
        try:
            write_result(
                self.segmenter, result, job.output, job.probabilities, compress=self.compress,
                uncertainty_path=job.uncertainty, source=job.image, output_format=job.output_format,
            )
        except Exception as exc:  # noqa: BLE001
            error = _message(exc)
        done(Outcome(index, str(result.device), time.monotonic() - started, error, result.uncertainty_score))


def _message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LWIError) else f"{type(exc).__name__}: {exc}"


def segment_folder(
    jobs: Sequence[Job],
    segmenter_options: Dict[str, Any],
    devices: Sequence[str],
    *,
    progress: Optional[Progress] = None,
    largest_component: bool = False,
    compress: bool = True,
    on_outcome: Optional[Callable[[Job, Outcome, int], None]] = None,
) -> List[Outcome]:
    """Segment ``jobs`` on ``devices`` (one worker per entry); returns one outcome per job, in order.

    ``segmenter_options`` are :class:`~lwi.inference.Segmenter` keyword arguments (model path,
    window settings, ...) without ``device``; ``on_outcome(job, outcome, n_done)`` is called in this
    process as each image finishes. Progress covers the whole folder, in images.
    """
    progress = progress or Progress("none")
    jobs = list(jobs)
    outcomes: List[Optional[Outcome]] = [None] * len(jobs)
    finished = [0]
    lock = threading.Lock()  # outcomes arrive from the writer thread and the compute thread

    def record(outcome: Outcome) -> None:
        with lock:
            outcomes[outcome.index] = outcome
            finished[0] += 1
            if on_outcome is not None:
                on_outcome(jobs[outcome.index], outcome, finished[0])
            progress.update(finished[0], len(jobs), case=jobs[outcome.index].image.name, device=outcome.device)

    if len(devices) == 1:
        from lwi.inference import Segmenter

        segmenter = Segmenter(**segmenter_options, device=devices[0], progress=Progress("none"))
        progress.start("folder", len(jobs), unit="image")
        Pipeline(segmenter, largest_component, compress).run(iter(enumerate(jobs)), record)
    else:
        progress.start("folder", len(jobs), unit="image")
        _run_workers(jobs, segmenter_options, list(devices), largest_component, compress, record)
    progress.close()
    for i, outcome in enumerate(outcomes):
        if outcome is None:  # a worker process died with this image in hand
            outcomes[i] = Outcome(i, "?", 0.0, "the worker segmenting it stopped unexpectedly")
    return [o for o in outcomes if o is not None]


def _cpu_threads(devices: Sequence[str]) -> int:
    from lwi.devices import physical_cores

    return max(1, physical_cores() // max(1, sum(d == "cpu" for d in devices)))


def _run_workers(
    jobs: List[Job],
    options: Dict[str, Any],
    devices: List[str],
    largest_component: bool,
    compress: bool,
    record: Callable[[Outcome], None],
) -> None:
    # spawn, not fork: CUDA cannot be used in a forked child, and a clean process loads only what it needs.
    context = multiprocessing.get_context("spawn")
    tasks: Any = context.Queue()
    results: Any = context.Queue()
    for i, job in enumerate(jobs):
        tasks.put((i, job))
    for _ in devices:
        tasks.put(None)
    threads = _cpu_threads(devices)
    workers = [
        context.Process(
            target=_worker,
            args=(device, options, threads, largest_component, compress, tasks, results),
            name=f"lwi-segment-{device}",
            daemon=True,
        )
        for device in devices
    ]
    for w in workers:
        w.start()
    remaining, startup_error = len(jobs), None
    try:
        while remaining:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    break
                continue
            if isinstance(message, Outcome):
                record(message)
                remaining -= 1
            elif startup_error is None:  # a worker could not load the model on its device
                startup_error = message
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
    if remaining and startup_error is not None:
        raise LWIError(startup_error)


def _worker(
    device: str,
    options: Dict[str, Any],
    threads: int,
    largest_component: bool,
    compress: bool,
    tasks: Any,
    results: Any,
) -> None:
    """One device's process: load the model once, then segment images from the shared queue."""
    from lwi.inference import Segmenter

    try:
        segmenter = Segmenter(**options, device=device, threads=threads, progress=Progress("none"))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        results.put(f"The model could not be loaded on {device}: {_message(exc)}")
        return

    def take() -> Iterator[Tuple[int, Job]]:
        while True:
            item = tasks.get()
            if item is None:
                return
            yield item

    Pipeline(segmenter, largest_component, compress).run(take(), results.put)
