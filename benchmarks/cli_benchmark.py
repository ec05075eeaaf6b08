"""Benchmark: ``lwi segment`` end to end as a user runs it: one fresh process, file in, label map out.

Measures the wall time of the whole command (start-up, model load, reading, the network, writing), its
CPU time (user + system) and the peak memory (RSS) of the process, and compares them with targets (default: the CPU targets for a
full abdominal CT with ``--spacing-scale 2``: under 3 minutes and 4 GB). Written to
``benchmarks/results/cli-<device>.json``.

The default model is the paper's UNETR (14 output channels, 96^3 windows, 1.5 x 1.5 x 2 mm grid) with
random weights: the network costs what the real one costs, and its label map is noisier than a
trained model's, so mapping the labels back to the input grid is at its slowest (a pessimistic case).

    python benchmarks/cli_benchmark.py --input ct.nii.gz -- --spacing-scale 2 --device cpu

Arguments after ``--`` go to ``lwi segment``. This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402


def paper_unetr(path: Path, labels: int = 14) -> Path:
    """The paper's UNETR for abdominal CT (BTCV: 13 organs + background) as a random-weight bundle."""
    import torch

    from lwi.architectures import build
    from lwi.bundle import save_bundle

    torch.manual_seed(0)
    adapter = build("unetr", 1, labels, (96, 96, 96), feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12)
    names = {0: "background", **{i: f"organ {i}" for i in range(1, labels)}}
    return save_bundle(path, adapter, names,
                       {"orientation": "RAS", "spacing": [1.5, 1.5, 2.0], "modality": "CT", "ct_window": [-175, 250]},
                       {"overlap": 0.5, "sw_batch_size": 4})


def main(argv: Any = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="the image to segment")
    parser.add_argument("--model", default=None, help="a model bundle (default: the paper's UNETR, random weights)")
    parser.add_argument("--name", default="cli", help="the result file's name (default: cli)")
    parser.add_argument("--target-seconds", type=float, default=180.0)
    parser.add_argument("--target-gb", type=float, default=4.0)
    args = parser.parse_args(argv)

    work = tempfile.TemporaryDirectory(prefix="lwi-cli-bench-")
    model = Path(args.model) if args.model else paper_unetr(Path(work.name) / "unetr.lwi.safetensors")
    output = Path(work.name) / "labels.seg.nrrd"
    command = [sys.executable, "-m", "lwi", "segment", "--model", str(model), "--input", args.input,
               "--output", str(output), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print("Running:", " ".join(shlex.quote(c) for c in command[1:]), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gb = usage.ru_maxrss / 1024**2  # Linux: kB
    cpu_seconds = usage.ru_utime + usage.ru_stime  # less sensitive than wall time to other jobs
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(args.input)
    reader.ReadImageInformation()
    device = next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--device"), "auto")
    figures = {
        "input": Path(args.input).name,
        "input_size": list(reader.GetSize()),
        "input_spacing": [round(s, 3) for s in reader.GetSpacing()],
        "model": "paper UNETR, random weights" if args.model is None else model.name,
        "options": [record.display_path(a) if os.path.isabs(a) else a for a in extra],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_gb": peak_gb,
        "target_seconds": args.target_seconds,
        "target_gb": args.target_gb,
        "meets_targets": seconds < args.target_seconds and peak_gb < args.target_gb,
    }
    print(f"{seconds:.1f} s end to end (target {args.target_seconds:.0f} s; {cpu_seconds:.1f} CPU seconds), "
          f"peak memory {peak_gb:.2f} GB "
          f"(target {args.target_gb:.0f} GB)")
    record.write(args.name, device, figures)
    work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
