"""Benchmark: iterations per second of ``lwi train``'s loop against a MONAI tutorial pipeline and the bare model.

Same network, same batch (B crops of the same ROI), same loss (DiceCE), same optimiser (AdamW), same
precision (float16 autocast on CUDA, float32 on the CPU), three ways of feeding it:

- ours: ``lwi``'s :class:`~lwi.engine.Trainer` driving :class:`~lwi.data.cache.CaseCache` (every
  case preprocessed once and kept on the device; crops and augmentation as tensor ops there), the
  loop ``lwi train`` runs in Step 2.
- tutorial: MONAI's UNETR/BTCV tutorial recipe: ``CacheDataset`` (load + the model's preprocessing
  cached) then, per sample, ``RandCropByPosNegLabeld`` (num_samples=B), ``RandFlipd`` x3,
  ``RandRotate90d``, ``RandScaleIntensityd``, ``RandShiftIntensityd`` in ``DataLoader`` worker
  processes, the batch copied to the device, then the same step.
- model only: the step alone on one fixed batch already on the device (the ceiling).

Printed and written to ``benchmarks/results/train-<device>.json``: iterations per second of each and the
ratios ours/tutorial and ours/model-only. Each way runs ``--warmup`` untimed iterations then
``--iterations`` timed ones; ``--repeat N`` alternates the three N times and keeps the best of each
(shared machines are noisy).

    python benchmarks/train_benchmark.py                    # CUDA if present, else CPU
    python benchmarks/train_benchmark.py --device cpu --iterations 20
    torchrun --nproc-per-node 8 benchmarks/train_benchmark.py   # DDP scaling vs the 1-GPU file

This is a measurement, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import record  # noqa: E402

DEFAULTS = {
    # device kind: (architecture, parameters, roi, batch, phantom shape, phantom spacing, model spacing)
    "cpu": ("segresnet", {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}, (48, 48, 48), 2,
            (96, 96, 64), (3.0, 3.0, 4.0), (3.0, 3.0, 4.0)),
    "cuda": ("unetr", {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12}, (96, 96, 96), 4,
             (256, 256, 128), (1.5, 1.5, 2.0), (1.5, 1.5, 2.0)),
}


def _setup(args: argparse.Namespace, device: Any):
    """The dataset cases, preprocessing, network factory and loss shared by the three ways."""
    import torch
    from monai.losses import DiceCELoss

    from lwi.architectures import build
    from lwi.data.dataset import load_dataset
    from lwi.data.preprocessing import PreprocessConfig

    dataset = load_dataset(args.data)
    config = PreprocessConfig(spacing=tuple(args.model_spacing), modality=(dataset.modality or "CT").upper())
    channels = max(int(v) for v in dataset.labels) + 1

    def network():
        torch.manual_seed(0)
        return build(args.arch, 1, channels, tuple(args.roi), **args.arch_params).to(device)

    return dataset, config, network, DiceCELoss(to_onehot_y=True, softmax=True)


def _step_fn(loss_fn) -> Callable:
    def step(net, batch, generator):  # lwi train's Step-2 step (lwi.strategies)
        images, targets = batch
        return {"total": loss_fn(net(images).float(), targets)}

    return step


def run_ours(args, device, dataset, config, network, loss_fn) -> float:
    """Iterations per second of the Trainer (under torchrun: of the DDP run, each rank B crops)."""
    from lwi.data.cache import CaseCache
    from lwi.engine import Trainer

    cache = CaseCache(dataset.cases, config, device)
    roi, batch = tuple(args.roi), args.batch

    def sample(generator):
        return cache.sample(batch, roi, generator=generator, labelled=True, pos_fraction=0.5)

    times = []

    def mark(trainer):
        _sync(device)
        times.append(time.perf_counter())

    total = args.warmup + args.iterations
    trainer = Trainer(network(), _step_fn(loss_fn), sample, epochs=total, iterations_per_epoch=1, lr=1e-4,
                      device=device, on_epoch_end=mark)
    trainer.run()
    return args.iterations / (times[-1] - times[args.warmup - 1])


def run_tutorial(args, device, dataset, config, network, loss_fn) -> float:
    import torch
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    from lwi.data.preprocessing import build_transforms

    keys = ["image", "label"]
    transforms = Compose([
        LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys), *build_transforms(config, with_label=True).transforms,
        RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=tuple(args.roi), pos=1, neg=1,
                               num_samples=args.batch, image_key="image", image_threshold=0),
        RandFlipd(keys=keys, spatial_axis=[0], prob=0.10),
        RandFlipd(keys=keys, spatial_axis=[1], prob=0.10),
        RandFlipd(keys=keys, spatial_axis=[2], prob=0.10),
        RandRotate90d(keys=keys, prob=0.10, max_k=3),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ])
    files = [{"image": str(c.image), "label": str(c.label)} for c in dataset.cases]
    data = CacheDataset(files, transform=transforms, cache_rate=1.0, num_workers=args.workers or None, progress=False)
    loader = DataLoader(data, batch_size=1, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    net = network()
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    scaler, autocast = _amp(device)
    step = _step_fn(loss_fn)
    done, start = 0, None
    total = args.warmup + args.iterations
    while done < total:
        for batch in loader:
            images, labels = batch["image"].to(device), batch["label"].to(device)
            _optimise(step, net, images, labels, optimizer, scaler, autocast)
            done += 1
            if done == args.warmup:
                _sync(device)
                start = time.perf_counter()
            if done == total:
                break
    _sync(device)
    return args.iterations / (time.perf_counter() - start)


def run_model_only(args, device, dataset, config, network, loss_fn) -> float:
    import torch

    net = network()
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    scaler, autocast = _amp(device)
    generator = torch.Generator().manual_seed(0)
    channels = max(int(v) for v in dataset.labels) + 1
    images = torch.randn(args.batch, 1, *args.roi, generator=generator).to(device)
    labels = torch.randint(channels, (args.batch, 1, *args.roi), generator=generator).float().to(device)
    step = _step_fn(loss_fn)
    for i in range(args.warmup + args.iterations):
        if i == args.warmup:
            _sync(device)
            start = time.perf_counter()
        _optimise(step, net, images, labels, optimizer, scaler, autocast)
    _sync(device)
    return args.iterations / (time.perf_counter() - start)


def _optimise(step, net, images, labels, optimizer, scaler, autocast) -> None:
    """One optimiser step, the same in both baselines (only how the batch arrives differs)."""
    with autocast():
        loss = step(net, (images, labels), None)["total"]
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _amp(device) -> Tuple[Any, Callable]:
    import contextlib

    import torch

    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    if cuda:
        torch.backends.cudnn.benchmark = True
        return scaler, lambda: torch.autocast(device_type="cuda", dtype=torch.float16)
    return scaler, contextlib.nullcontext


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


WAYS = {"ours": run_ours, "tutorial": run_tutorial, "model only": run_model_only}


def _ddp_scaling(args, device, setup) -> int:
    """Under torchrun: ``lwi``'s loop with DDP on every rank; rank 0 compares with the 1-device file."""
    import json

    from lwi import distributed

    world, main_rank = distributed.world_size(), distributed.is_main()
    rate = max(run_ours(args, device, *setup) for _ in range(max(1, args.repeat)))
    distributed.shutdown()
    if not main_rank:
        return 0
    runs = []
    single = record.RESULTS / f"train-{device.type}.json"
    if single.exists():
        one = json.loads(single.read_text())["figures"]
        base = one["iterations_per_second"]["ours"]
        runs.append({"world_size": 1, "iterations_per_second": base, "crops_per_second": base * one["network"]["batch"],
                     "scaling": 1.0})
    else:
        base = None
    runs.append({"world_size": world, "iterations_per_second": rate, "crops_per_second": rate * args.batch * world,
                 "scaling": rate * world / base if base else None})
    for run in runs:
        print(f"{run['world_size']} process(es): {run['iterations_per_second']:.2f} it/s, "
              f"{run['crops_per_second']:.1f} crops/s")
    record.write("train-ddp", str(device), {
        "network": {"arch": args.arch, "params": args.arch_params, "roi": list(args.roi), "batch_per_rank": args.batch},
        "iterations": args.iterations,
        "runs": runs,
    })
    return 0


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--data", default=None, help="a labelled dataset folder (default: synthetic CT phantoms)")
    parser.add_argument("--cases", type=int, default=4, help="phantoms to make without --data (default: 4)")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default: 30 CPU, 100 CUDA)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes of the tutorial pipeline (default: min(4, CPUs))")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs of the three ways; the best counts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    from lwi import distributed
    from lwi.devices import resolve_device

    ddp_device = distributed.init_from_env(args.device)  # under torchrun: the DDP scaling run
    device = ddp_device or resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    arch, params, roi, batch, shape, spacing, model_spacing = DEFAULTS[device.type]
    args.arch, args.arch_params, args.roi, args.batch, args.model_spacing = arch, params, roi, batch, model_spacing
    args.iterations = args.iterations or (100 if device.type == "cuda" else 30)
    args.workers = min(4, os.cpu_count() or 1) if args.workers is None else args.workers
    workdir = None
    if args.data is None:
        from lwi.data.phantoms import write_phantom_dataset

        workdir = tempfile.TemporaryDirectory(prefix="lwi-train-bench-")
        print(f"Making {args.cases} synthetic CT phantoms of {' x '.join(map(str, shape))} ...", flush=True)
        args.data = str(write_phantom_dataset(Path(workdir.name) / "phantoms", args.cases, shape=shape, spacing=spacing))
    setup = _setup(args, device)
    print(f"{arch} {params}, batch {batch} x {list(roi)}, {args.iterations} timed iterations on {device} "
          f"({torch.get_num_threads()} threads; tutorial DataLoader workers: {args.workers})", flush=True)
    if ddp_device is not None:
        return _ddp_scaling(args, device, setup)
    rates: Dict[str, float] = {}
    for r in range(max(1, args.repeat)):
        for name, way in WAYS.items():
            print(f"  {name} ({r + 1}/{max(1, args.repeat)}) ...", flush=True)
            rate = way(args, device, *setup)
            rates[name] = max(rates.get(name, 0.0), rate)
    print()
    for name, rate in rates.items():
        print(f"{name:<12} {rate:8.2f} it/s")
    ratios = {"ours / tutorial": rates["ours"] / rates["tutorial"], "ours / model only": rates["ours"] / rates["model only"]}
    for name, ratio in ratios.items():
        print(f"{name:<20} {ratio:6.2f}x")
    record.write("train", str(device), {
        "network": {"arch": arch, "params": params, "roi": list(roi), "batch": batch},
        "data": "synthetic phantoms" if workdir else args.data,
        "cases": args.cases if workdir else None,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "repeat": args.repeat,
        "tutorial_workers": args.workers,
        "iterations_per_second": rates,
        "ratios": ratios,
    })
    if workdir is not None:
        workdir.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    sys.exit(main())
