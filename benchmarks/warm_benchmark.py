"""Benchmark: the Slicer module's warm worker (``python -m lwi.worker``) segmenting the same CT twice.

The first request pays for loading the model onto the device (and cuDNN's autotuning); the repeat
reuses the loaded model, which is what a Slicer user sees from the second volume on. Measured from
sending the request to its result event, in one real worker process. Written to
``benchmarks/results/warm-<device>.json``.

    python benchmarks/warm_benchmark.py                  # CUDA if present: 512 x 512 x 200 synthetic CT
    python benchmarks/warm_benchmark.py --device cpu --size 192 192 64

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402
from cli_benchmark import paper_unetr  # noqa: E402


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, nargs=3, default=None, help="synthetic CT size (default 512 512 200 on CUDA)")
    parser.add_argument("--model", default=None, help="a model bundle (default: the paper's UNETR, random weights)")
    args = parser.parse_args(argv)
    import SimpleITK as sitk
    import torch

    from lwi.data.phantoms import make_phantom
    from lwi.devices import resolve_device

    device = resolve_device(args.device)
    size = args.size or ([512, 512, 200] if device.type == "cuda" else [192, 192, 64])
    work = tempfile.TemporaryDirectory(prefix="lwi-warm-bench-")
    tmp = Path(work.name)
    image, _ = make_phantom(0, shape=size, spacing=(0.78, 0.78, 2.5))
    sitk.WriteImage(image, str(tmp / "ct.nii.gz"), True)
    model = Path(args.model) if args.model else paper_unetr(tmp / "unetr.lwi.safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen([sys.executable, "-m", "lwi.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)

    def wait_for(request_id: Any) -> Dict[str, Any]:
        for line in worker.stdout:
            event = json.loads(line)
            if event.get("id") == request_id and event["event"] in ("result", "error"):
                if event["event"] == "error":
                    raise SystemExit(event["message"])
                return event
        raise SystemExit("the worker stopped")

    next(worker.stdout)  # the "ready" event
    seconds = []
    for i in (1, 2):
        request = {"id": i, "command": "segment", "model": str(model), "input": str(tmp / "ct.nii.gz"),
                   "output": str(tmp / f"out{i}.seg.nrrd"), "device": str(device)}
        start = time.perf_counter()
        worker.stdin.write(json.dumps(request) + "\n")
        worker.stdin.flush()
        result = wait_for(i)
        seconds.append(time.perf_counter() - start)
        print(f"request {i}: {seconds[-1]:.2f} s (model reused: {result.get('reused_model')})", flush=True)
    worker.stdin.write(json.dumps({"id": 3, "command": "shutdown"}) + "\n")
    worker.stdin.flush()
    worker.wait(timeout=60)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    record.write("warm", str(device), {
        "description": f"{' x '.join(map(str, size))} synthetic CT, "
                       f"{'paper UNETR (random weights)' if args.model is None else model.name}, {where}",
        "first": seconds[0],
        "repeat": seconds[1],
    })
    work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
