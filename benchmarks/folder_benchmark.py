"""Benchmark: where the time per image goes when ``lwi segment`` runs over a folder, and the overhead left.

Two passes over the same images with the same loaded model:

1. one by one (read, segment, write in series, as a plain loop does), with the time of every step:
   reading, the network's own forward calls, the sliding window's bookkeeping around them,
   preprocessing, mapping the labels back to the input grid, assembling and writing the label map;
   plus, once per folder, listing it (DICOM series probing) and loading the model;
2. the folder pipeline of ``lwi segment`` (:class:`lwi.folder.Pipeline`: the next image read and the
   last one written in background threads while the network runs).

The overhead per image is the wall time per image minus the network's forward time per image,
for both passes; its CPU time (this process's, all threads) is given too, as it depends less on
other jobs sharing the machine. Written to ``benchmarks/results/folder-<device>.json``.

    python benchmarks/folder_benchmark.py --input DIR --model MODEL --images 10
    python benchmarks/folder_benchmark.py              # 10 synthetic 35 x 50 x 35 volumes, a tiny random model

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402


def _tiny_model(path: Path) -> Path:
    import torch

    from lwi.architectures import build
    from lwi.bundle import save_bundle

    torch.manual_seed(0)
    adapter = build("segresnet", 1, 3, (32, 32, 32), init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1])
    return save_bundle(path, adapter, {0: "background", 1: "anterior", 2: "posterior"},
                       {"orientation": "RAS", "spacing": [1.0, 1.0, 1.0], "modality": "MR"},
                       {"overlap": 0.5, "sw_batch_size": 4})


def _synthetic_folder(folder: Path, n: int) -> Path:
    import SimpleITK as sitk

    from lwi.data.phantoms import make_phantom

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, _ = make_phantom(i, shape=(35, 50, 35), spacing=(1.0, 1.0, 1.0))
        sitk.WriteImage(image, str(folder / f"case{i:03d}.nii.gz"), True)
    return folder


class _TimedNetwork:
    """Wraps a network and adds up the wall time of its forward calls (synchronised on CUDA)."""

    def __init__(self, model: Any):
        import torch

        class Timed(torch.nn.Module):
            def __init__(inner, net):  # noqa: N805
                super().__init__()
                inner.net = net
                inner.seconds = 0.0
                inner.cpu_seconds = 0.0  # process CPU time: less sensitive than wall time to other jobs

            def forward(inner, x):  # noqa: N805
                cuda = x.device.type == "cuda"
                if cuda:
                    torch.cuda.synchronize(x.device)
                t0, c0 = time.perf_counter(), time.process_time()
                out = inner.net(x)
                if cuda:
                    torch.cuda.synchronize(x.device)
                inner.seconds += time.perf_counter() - t0
                inner.cpu_seconds += time.process_time() - c0
                return out

        self.module = Timed(model)


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default=None, help="a folder of images (default: synthetic 35 x 50 x 35 volumes)")
    parser.add_argument("--model", default=None, help="a model bundle (default: a tiny random SegResNet, 32^3 windows)")
    parser.add_argument("--images", type=int, default=10, help="images to segment (the first N of the folder)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: lwi's, the physical cores)")
    args = parser.parse_args(argv)

    work = tempfile.TemporaryDirectory(prefix="lwi-folder-bench-")
    tmp = Path(work.name)
    t0 = time.perf_counter()
    from lwi.data.dataset import list_images
    from lwi.folder import Job, Pipeline
    from lwi.inference import Segmenter, write_result
    from lwi.io import read_image

    imports = time.perf_counter() - t0
    source = Path(args.input) if args.input else _synthetic_folder(tmp / "images", args.images)
    model_path = Path(args.model) if args.model else _tiny_model(tmp / "tiny.lwi.safetensors")

    t0 = time.perf_counter()
    images = list_images(source)[: args.images]
    listing = time.perf_counter() - t0
    t0 = time.perf_counter()
    segmenter = Segmenter(model_path, device=args.device, threads=args.threads)
    load = time.perf_counter() - t0
    timed = _TimedNetwork(segmenter.model)
    segmenter.model = timed.module
    jobs = [Job(p, tmp / "out" / p.name) for p in images]
    (tmp / "out").mkdir()
    segmenter.segment(read_image(images[0]))  # warm-up: first-call allocations, lazy imports

    # 1. one by one, every step timed
    steps: Dict[str, List[float]] = {k: [] for k in ("read", "preprocess", "network forward", "sliding-window bookkeeping",
                                                     "back to input grid", "assemble label map", "write", "total")}
    cpu_overheads = []
    for job in jobs:
        before, cpu_before = timed.module.seconds, timed.module.cpu_seconds
        start, cpu_start = time.perf_counter(), time.process_time()
        image = read_image(job.image)
        read = time.perf_counter() - start
        result = segmenter.segment(image)
        t_write = time.perf_counter()
        write_result(segmenter, result, job.output)
        end = time.perf_counter()
        forward = timed.module.seconds - before
        steps["read"].append(read)
        steps["preprocess"].append(result.seconds["preprocess"])
        steps["network forward"].append(forward)
        steps["sliding-window bookkeeping"].append(result.seconds["network"] - forward)
        steps["back to input grid"].append(result.seconds["invert"])
        steps["assemble label map"].append(result.seconds["postprocess"])
        steps["write"].append(end - t_write)
        steps["total"].append(end - start)
        cpu_overheads.append(time.process_time() - cpu_start - (timed.module.cpu_seconds - cpu_before))
    sequential = {k: statistics.mean(v) for k, v in steps.items()}
    sequential["overhead"] = sequential["total"] - sequential["network forward"]
    sequential["overhead CPU time"] = statistics.mean(cpu_overheads)

    # 2. the folder pipeline
    before, cpu_before = timed.module.seconds, timed.module.cpu_seconds
    start, cpu_start = time.perf_counter(), time.process_time()
    errors: List[str] = []
    Pipeline(segmenter).run(iter(enumerate(jobs)), lambda o: errors.append(o.error) if o.error else None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if errors:
        raise SystemExit(f"segmentation failed: {errors[0]}")
    n = len(jobs)
    forward = (timed.module.seconds - before) / n
    cpu_forward = (timed.module.cpu_seconds - cpu_before) / n
    pipelined = {"total": wall / n, "network forward": forward, "overhead": wall / n - forward,
                 "overhead CPU time": cpu / n - cpu_forward}

    size = list(read_image(images[0]).GetSize())
    print(f"{n} images like {' x '.join(map(str, size))} from {source}, model {model_path.name}, on {segmenter.device} "
          f"({__import__('torch').get_num_threads()} threads)")
    print(f"once per folder: imports {imports:.2f} s, listing/DICOM probing {listing:.3f} s, model load {load:.2f} s")
    print("per image, one by one (s):")
    for k, v in sequential.items():
        print(f"  {k:<28} {v:8.3f}")
    print("per image, folder pipeline (s):")
    for k, v in pipelined.items():
        print(f"  {k:<28} {v:8.3f}")
    print(f"overhead one by one / pipeline: {sequential['overhead'] / max(pipelined['overhead'], 1e-9):.2f}x")
    record.write("folder", str(segmenter.device), {
        "images": n,
        "image_size": size,
        "input": "synthetic 35 x 50 x 35 phantoms" if args.input is None else record.display_path(source),
        "model": "tiny random SegResNet" if args.model is None else model_path.name,
        "threads": __import__("torch").get_num_threads(),
        "once": {"imports": imports, "listing": listing, "model_load": load},
        "one_by_one": sequential,
        "pipeline": pipelined,
    })
    work.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    sys.exit(main())
