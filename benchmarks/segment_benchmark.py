"""Benchmark: ``lwi`` segmentation against a MONAI tutorial-style pipeline, same weights, side by side.

Both pipelines read the same CT file from disk and write a label file. Each runs in a fresh process
(so the peak memory is its own) after a warm-up call of the network. ``--repeat N`` rounds alternate
the pipelines, and the order within a round rotates (neither always runs first, on a warmer or cooler
machine); every figure is the median over the rounds with its spread (min-max), and the tutorial/ours
ratios are also taken round by round (two runs back to back share the machine's load). Printed: wall
time and its steps, peak GPU memory, peak process memory (RSS), the ratios, and the agreement of the
two label maps (Dice per label, share of identical voxels). Measure on an idle machine: the spread
shows how much the load moved the figures.

Both run the same network step: MONAI's ``sliding_window_inference`` on the same float32 tensor
layout, window batch, Gaussian blending and CPU thread count (the physical cores; torch's default
is the logical CPUs, which differ only with hyper-threading), no autocast on the CPU.

- ours: :class:`lwi.inference.Segmenter`: preprocessing on the device, float16 autocast on CUDA,
  argmax on the device, nearest-neighbour inversion of the labels, light-compressed ``.seg.nrrd``.
  On CUDA it also runs with ``amp=False`` to show what float16 changes.
- tutorial: the MONAI UNETR/spleen tutorial recipe: ``LoadImaged -> EnsureChannelFirstd`` then the
  model's preprocessing transforms (``lwi.data.preprocessing.build_transforms``) on the CPU, float32
  ``sliding_window_inference`` (Gaussian blending, as the model says), ``Invertd`` of the logits on the
  CPU, ``AsDiscreted(argmax)``, ``SaveImaged``. With the model's own transforms both pipelines work on
  the same network grid, so the agreement measures our shortcuts, not a different crop.

The default model is the paper's UNETR with random weights (the full compute cost) whose logits get a
fixed intensity read-out added (HU bands of the phantom's organs, on a 3x3x3 mean), so the label maps
are organ-shaped like a trained model's; a random network alone labels voxels almost at random, and
any two correct pipelines then disagree at every tie. ``--model`` uses a real bundle instead.

Examples::

    python benchmarks/segment_benchmark.py                          # CUDA if present: 512 x 512 x 200
    python benchmarks/segment_benchmark.py --device cpu --size 192 192 64
    python benchmarks/segment_benchmark.py --model my.lwi.safetensors --input ct.nii.gz

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

NETWORKS = {
    # The paper's UNETR (BTCV: 13 organs + background).
    "unetr": dict(feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12),
    # A small UNETR so a CPU run finishes in minutes; pre- and post-processing costs are unchanged.
    "small-unetr": dict(feature_size=8, hidden_size=96, mlp_dim=192, num_heads=4),
}
PREPROCESSING = {"orientation": "RAS", "spacing": [1.5, 1.5, 2.0], "modality": "CT", "ct_window": [-175.0, 250.0]}
# Windowed-intensity band edges between the phantom's tissues (lwi.data.phantoms HU levels: soft
# tissue 30, liver 60, spleen 110, kidney 180, bone 700; window [-175, 250] HU -> [0, 1]).
BANDS = [(45.0 + 175) / 425, (85.0 + 175) / 425, (145.0 + 175) / 425, (240.0 + 175) / 425]
BAND_NAMES = ["liver", "spleen", "kidney", "vertebra"]


def _phantom_model(
    network: str, channels: int, roi: List[int], spacing: Any = None
) -> Tuple[Any, Dict[str, Any]]:
    """The default benchmark model (see the module docstring) and its bundle-style metadata."""
    import torch
    import torch.nn.functional as F

    from lwi.architectures import build

    class PhantomModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = build("unetr", 1, channels, roi, **NETWORKS[network])
            steep = 200.0
            # Logit k = steep * sum_{j<k} (s - t_j): argmax = number of band edges passed.
            weight = torch.full((channels,), -1.0e3)
            bias = torch.full((channels,), -1.0e3)
            weight[0], bias[0] = 0.0, 0.0
            for k in range(1, len(BANDS) + 1):
                weight[k] = steep * k
                bias[k] = -steep * sum(BANDS[:k])
            self.register_buffer("band_weight", weight.view(1, -1, 1, 1, 1))
            self.register_buffer("band_bias", bias.view(1, -1, 1, 1, 1))

        def forward(self, x):
            smooth = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
            return self.band_weight * smooth + self.band_bias + 1e-3 * self.net(x)

    labels = [{"value": k + 1, "name": n, "color": [200, 100 + 30 * k, 80]} for k, n in enumerate(BAND_NAMES)]
    labels += [{"value": v, "name": f"organ_{v}", "color": [90, 90, 200]} for v in range(len(BANDS) + 1, channels)]
    metadata = {
        "architecture": {"arch": "unetr", "in_channels": 1, "out_channels": channels, "roi_size": list(roi)},
        "labels": labels,
        "preprocessing": {**PREPROCESSING, **({"spacing": [float(v) for v in spacing]} if spacing else {})},
        "inference": {"roi_size": list(roi), "overlap": 0.5, "sw_batch_size": 4, "blend": "gaussian"},
    }
    return PhantomModel().eval(), metadata


def _load_model(args: argparse.Namespace, device: Any) -> Tuple[Any, Dict[str, Any]]:
    if args.model:
        from lwi.bundle import load_bundle

        return load_bundle(args.model, device=device)
    model, metadata = _phantom_model(args.network, args.labels, list(args.roi), args.model_spacing)
    return model.to(device), metadata


def _peak_rss_gb() -> float:
    # Linux: VmHWM of this process's own address space (ru_maxrss would include the parent's
    # memory at fork, since Linux keeps it across exec).
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


def _warm_up(model: Any, roi: Any, device: Any, amp: bool) -> None:
    import torch

    x = torch.zeros((1, 1, *roi), device=device)
    ctx = torch.autocast("cuda", dtype=torch.float16) if amp and device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(args: argparse.Namespace) -> Dict[str, Any]:
    """Our pipeline, timed from reading the file to the written label map."""
    import torch

    from lwi.devices import resolve_device
    from lwi.inference import Segmenter, segment_file

    device = resolve_device(args.device)
    model, metadata = _load_model(args, device)
    seg = Segmenter.from_model(model, metadata, device=device, amp=not args.no_amp, sw_batch_size=args.sw_batch)
    _warm_up(seg.model, seg.roi_size, seg.device, seg.amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = segment_file(seg, args.input, args.output)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    steps = {
        "read + preprocess": result.seconds["preprocess"],
        "network": result.seconds["network"],
        "back to input grid": result.seconds["invert"] + result.seconds["postprocess"],
    }
    steps["write"] = seconds - sum(steps.values())  # reading the file is counted with the write here
    return {"seconds": seconds, "gpu_gb": gpu, "rss_gb": _peak_rss_gb(), "device": result.device, "steps": steps}


def run_tutorial(args: argparse.Namespace) -> Dict[str, Any]:
    """The MONAI tutorial recipe with the same weights, timed from reading the file to the written label map."""
    import torch
    from monai.data import DataLoader, Dataset, decollate_batch
    from monai.inferers import sliding_window_inference
    from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, Invertd, LoadImaged, SaveImaged

    from lwi.data.preprocessing import PreprocessConfig, build_transforms
    from lwi.devices import resolve_device

    device = resolve_device(args.device)
    model, metadata = _load_model(args, device)
    inference = metadata["inference"]
    roi = inference["roi_size"]
    _warm_up(model, roi, device, amp=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model_transforms = build_transforms(PreprocessConfig.from_dict(metadata["preprocessing"]), with_label=False)
    test_transforms = Compose(
        [LoadImaged(keys=["image"]), EnsureChannelFirstd(keys=["image"]), *model_transforms.transforms]
    )
    invert, discrete, save = (
            Invertd(
                keys="pred",
                transform=test_transforms,
                orig_keys="image",
                meta_keys="pred_meta_dict",
                orig_meta_keys="image_meta_dict",
                meta_key_postfix="meta_dict",
                nearest_interp=False,
                to_tensor=True,
                device="cpu",
            ),
            AsDiscreted(keys="pred", argmax=True),
            SaveImaged(
                keys="pred",
                meta_keys="pred_meta_dict",
                output_dir=str(Path(args.output).parent),
                output_postfix="seg",
                resample=False,
                separate_folder=False,
                print_log=False,
            ),
    )
    loader = DataLoader(Dataset([{"image": str(args.input)}], transform=test_transforms), batch_size=1, num_workers=0)
    steps: Dict[str, float] = {}
    lap = [time.perf_counter()]

    def mark(step: str) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        steps[step] = steps.get(step, 0.0) + now - lap[0]
        lap[0] = now

    with torch.no_grad():
        for test_data in loader:
            mark("read + preprocess")
            inputs = test_data["image"].to(device)
            test_data["pred"] = sliding_window_inference(
                inputs,
                roi,
                args.sw_batch or inference.get("sw_batch_size", 4),
                model,
                overlap=inference.get("overlap", 0.5),
                mode=inference.get("blend", "gaussian"),
            )
            mark("network")
            for item in decollate_batch(test_data):  # the tutorial's post-transforms, timed one by one
                item = discrete(invert(item))
                mark("back to input grid")
                save(item)
                mark("write")
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    gpu = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None
    return {"seconds": seconds, "gpu_gb": gpu, "rss_gb": _peak_rss_gb(), "device": str(device), "steps": steps}


def _child(which: str, args: argparse.Namespace, workdir: Path, output: Path, no_amp: bool = False) -> Dict[str, Any]:
    """Run one pipeline in a fresh Python process and return its measurements."""
    result = workdir / "result.json"
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", which, "--result", str(result),
        "--input", str(args.input), "--output", str(output), "--device", args.device,
        "--network", args.network, "--labels", str(args.labels), "--roi", *map(str, args.roi),
    ]
    if args.model_spacing:
        cmd += ["--model-spacing", *map(str, args.model_spacing)]
    if args.model:
        cmd += ["--model", str(args.model)]
    if args.sw_batch:
        cmd += ["--sw-batch", str(args.sw_batch)]
    if no_amp:
        cmd.append("--no-amp")
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


STEPS = ("read + preprocess", "network", "back to input grid", "write")


def _stats(values: List[float]) -> Dict[str, Any]:
    """``{"median", "min", "max"}`` of ``values`` (None where there are none)."""
    import statistics

    values = [float(v) for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One pipeline's runs: median, min and max of the time, memory and each step, and every run."""
    return {
        "seconds": _stats([r["seconds"] for r in runs]),
        "gpu_gb": _stats([r["gpu_gb"] for r in runs]),
        "rss_gb": _stats([r["rss_gb"] for r in runs]),
        "steps": {step: _stats([r["steps"].get(step) for r in runs]) for step in STEPS},
        "device": runs[0]["device"],
        "runs": runs,
    }


def paired_ratios(base: List[Dict[str, Any]], other: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``base / other`` round by round (two runs of a round ran back to back), for the whole time
    and the network step: median, min and max."""
    return {
        "seconds": _stats([b["seconds"] / o["seconds"] for b, o in zip(base, other)]),
        "network": _stats([b["steps"]["network"] / o["steps"]["network"] for b, o in zip(base, other)]),
    }


def _spread(stats: Dict[str, Any], unit: str = "") -> str:
    if stats["median"] is None:
        return "n/a"
    return f"{stats['median']:.2f}{unit} ({stats['min']:.2f}-{stats['max']:.2f})"


def _agreement(a_path: Path, b_path: Path, labels: List[int]) -> Dict[str, Any]:
    import numpy as np
    import SimpleITK as sitk

    a_img, b_img = sitk.ReadImage(str(a_path)), sitk.ReadImage(str(b_path))
    if a_img.GetSize() != b_img.GetSize():
        raise SystemExit(f"the two label maps differ in size: {a_img.GetSize()} vs {b_img.GetSize()}")
    a = sitk.GetArrayViewFromImage(a_img).astype(np.int32)
    b = np.rint(sitk.GetArrayViewFromImage(b_img)).astype(np.int32)
    dice = {}
    for v in labels:
        pa, pb = a == v, b == v
        n = int(pa.sum()) + int(pb.sum())
        if n:
            dice[v] = 2.0 * float(np.logical_and(pa, pb).sum()) / n
    same_grid = np.allclose(a_img.GetOrigin(), b_img.GetOrigin(), atol=1e-3) and np.allclose(
        a_img.GetDirection(), b_img.GetDirection(), atol=1e-4
    )
    return {
        "mean_dice": float(np.mean(list(dice.values()))) if dice else float("nan"),
        "min_dice": float(min(dice.values())) if dice else float("nan"),
        "identical_voxels": float(np.mean(a == b)),
        "same_grid": bool(same_grid),
    }


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="synthetic CT size (default: 512 512 200 on CUDA, 192 192 64 on the CPU)")
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.78, 0.78, 2.5),
                        help="synthetic CT spacing in mm (default: 0.78 0.78 2.5)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--network", choices=sorted(NETWORKS), default=None,
                        help="UNETR size of the default model (default: unetr on CUDA, small-unetr on the CPU)")
    parser.add_argument("--labels", type=int, default=14, help="output channels of the default model (default: 14)")
    parser.add_argument("--roi", type=int, nargs=3, default=(96, 96, 96), help="sliding window (default: 96 96 96)")
    parser.add_argument("--model-spacing", type=float, nargs=3, default=None,
                        help="network-grid spacing of the default model (default: the paper's 1.5 1.5 2.0); a coarser "
                        "grid means fewer windows, so a CPU run can afford a full-size CT")
    parser.add_argument("--sw-batch", type=int, default=None, help="windows per batch (default: the model's, 4)")
    parser.add_argument("--model", default=None, help="a model bundle to use instead of the default model")
    parser.add_argument("--input", default=None, help="an image to use instead of a synthetic CT")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds, each running every pipeline once in a rotating order; medians and spread count "
                        "(default: 5)")
    parser.add_argument("--keep", default=None, help="keep the input and outputs in this folder")
    # Internal: one pipeline in a fresh process.
    parser.add_argument("--worker", choices=("ours", "tutorial"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--no-amp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_ours(args) if args.worker == "ours" else run_tutorial(args)
        Path(args.result).write_text(json.dumps(result))
        return 0

    import SimpleITK as sitk
    import torch

    from lwi.devices import resolve_device

    device = resolve_device(args.device)
    args.device = str(device)
    cuda = device.type == "cuda"
    args.network = args.network or ("unetr" if cuda else "small-unetr")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lwi-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.input is None:
        from lwi.data.phantoms import make_phantom

        args.size = args.size or ([512, 512, 200] if cuda else [192, 192, 64])
        print(f"Making a {' x '.join(map(str, args.size))} synthetic CT ...", flush=True)
        image, _ = make_phantom(0, shape=args.size, spacing=args.spacing)
        args.input = workdir / "ct.nii.gz"
        sitk.WriteImage(image, str(args.input), True)
    size = sitk.ImageFileReader()
    size.SetFileName(str(args.input))
    size.ReadImageInformation()
    if args.model:
        from lwi.bundle import read_bundle_metadata

        meta = read_bundle_metadata(args.model)
        what = f"{args.model} ({meta['architecture'].get('arch')}, {meta['architecture'].get('out_channels')} channels)"
    else:
        _, meta = _phantom_model(args.network, args.labels, list(args.roi), args.model_spacing)
        what = f"random-weight {args.network} ({args.labels} channels) + intensity read-out"
    labels = [int(e["value"]) for e in meta["labels"]]
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} CPU threads"
    print(f"Segmenting a {' x '.join(map(str, size.GetSize()))} CT with {what} on {device} ({where})", flush=True)

    names = ["ours", "ours-fp32", "tutorial"] if cuda else ["ours", "tutorial"]
    outputs = {
        "ours": workdir / "ours.seg.nrrd",
        "ours-fp32": workdir / "ours-fp32.seg.nrrd",
        "tutorial": workdir / f"{Path(args.input).name.split('.')[0]}_seg.nii.gz",  # SaveImaged's name
    }
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    rounds = max(1, args.repeat)
    for run in range(rounds):
        for name in names[run % len(names):] + names[: run % len(names)]:  # the order rotates
            print(f"  running {name} ({run + 1}/{rounds}) ...", flush=True)
            which = "tutorial" if name == "tutorial" else "ours"
            runs[name].append(_child(which, args, workdir, outputs[name], no_amp=name == "ours-fp32"))
    results = {name: summarise(runs[name]) for name in names}
    ratios = {n: paired_ratios(runs["tutorial"], runs[n]) for n in names if n != "tutorial"}

    width = 24
    print()
    print(f"{'median (min-max)':<26}" + "".join(f"{n:>{width}}" for n in names))
    rows = [("time (s)", "seconds"), ("peak GPU memory (GB)", "gpu_gb"), ("peak process RSS (GB)", "rss_gb")]
    for title, key in rows:
        if key == "gpu_gb" and not cuda:
            continue
        print(f"{title:<26}" + "".join(f"{_spread(results[n][key]):>{width}}" for n in names))
    for step in STEPS:
        print(f"{'  ' + step + ' (s)':<26}" + "".join(f"{_spread(results[n]['steps'].get(step)):>{width}}" for n in names))
    for key, title in (("seconds", "tutorial / ours: time"), ("network", "tutorial / ours: network")):
        print(f"{title:<26}" + "".join(f"{_spread(ratios[n][key], 'x'):>{width}}" for n in ratios))
    print()
    agreements: Dict[str, Any] = {}
    for n in names:
        if n != "tutorial":
            agree = agreements[f"{n} vs tutorial"] = _agreement(outputs[n], outputs["tutorial"], labels)
            print(f"Agreement {n} vs tutorial: mean Dice over labels {agree['mean_dice']:.4f} "
                  f"(min {agree['min_dice']:.4f}), identical voxels {100 * agree['identical_voxels']:.2f}%, "
                  f"same grid: {agree['same_grid']}")
    if cuda:
        agree = agreements["ours float16 vs float32"] = _agreement(outputs["ours"], outputs["ours-fp32"], labels)
        print(f"Agreement ours (float16) vs ours (float32): mean Dice {agree['mean_dice']:.4f}, "
              f"identical voxels {100 * agree['identical_voxels']:.2f}%")
    grid = "x".join(f"{s:g}" for s in (args.model_spacing or PREPROCESSING["spacing"]))
    record.write("segment", str(device), {
        "description": f"{' x '.join(map(str, size.GetSize()))} {'CT' if args.model else 'synthetic CT'}, {what}, "
                       f"network grid {grid} mm, {where}",
        "repeat": rounds,
        "results": results,
        "ratios": ratios,
        "agreement": agreements,
    })
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")  # MONAI deprecation notices in children
    sys.exit(main())
