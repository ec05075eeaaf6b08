"""The seeds' distinctive mechanisms at a short budget: do they do measurable work?

AnatoMask (``--part anatomask``): pre-training for ``--iterations`` (as the CPU plan cuts it: 3 epochs)
with the run-scaled schedule (default) and the paper's constants as written, same seed. After
training, on fixed crops of the same images (``--eval-batches`` batches, generator seed 1234):

* ``teacher_random``: the EMA teacher's loss on a random mask (the student's measure: per-patch
  normalised MSE on masked patches); ``student_random``: the student's on the same masks;
* ``student_guided``: the student's loss on a mask whose ``r_T`` share (0.5) of the masked patches
  are the ones the teacher reconstructs worst, the rest random; ``guided_over_random`` =
  student_guided / student_random: above 1, the teacher points at patches the student finds hard,
  which is what the guided mask is for;
* ``teacher_initial_share``: how much of its random initialisation the teacher still holds at the
  end (the product of the EMA decays), and the teacher's loss in the first and last progress reports.

MedContext (``--part medcontext``): a ``--iterations`` run of the strategy with the gradient-share
weighting (default) and the authors' normalised term (``code``), same seed; from the JSON progress,
the realised share of the consistency term's gradient in the masked pass's DiceCE gradient.

Measurement, not a test. A tiny network (SegResNet, 8 filters, 3 levels, one block each) at ROI 32^3, batch 2, lr 1e-3,
so it runs on a shared CPU; 8^3 patches for AnatoMask (64 patches per crop, 38 masked). benchmarks/results/mechanisms-<part>-cpu.json:

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mechanisms.py --data <hippocampus-dev> --part anatomask
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mechanisms.py --data <hippocampus-dev> --part medcontext
"""

from __future__ import annotations

import argparse
import io
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import record
import torch

BASE = {
    "arch": "segresnet", "arch_params": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    "roi": (32, 32, 32), "batch_size": 2, "lr": 1e-3, "val_fraction": 0.0,
}


def _events(buffer: io.StringIO) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


def _masked_loss(net: Any, images: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch: int) -> float:
    """The per-patch-normalised MSE on the masked patches of ``net``'s reconstruction of the masked images."""
    from lwi import masking

    out = net(masking.mask_voxels(images, mask, patch)).float()
    return float(masking.masked_patch_mse(masking.patchify(out, patch), target, mask))


def anatomask_run(data: Path, schedule: str, seed: int, iterations: int, eval_batches: int) -> Dict[str, Any]:
    from lwi import checkpoint, masking
    from lwi.ema import ramp_schedule
    from lwi.engine import model_tensors
    from lwi.progress import Progress
    from lwi.strategies.anatomask import AnatoMaskModel, decays, masked_count, run_pretraining
    from lwi.strategies.run import Run
    from lwi.strategies.settings import make_settings

    epochs = 3  # what the plan gives pre-training (M1's staircase under the paper's rule)
    s = make_settings({
        **BASE, "mim_patch_size": 8, "pretrain_epochs": epochs, "iterations_per_epoch": math.ceil(iterations / epochs),
        "anatomask_schedule": schedule, "seed": seed,
    })
    buffer = io.StringIO()
    progress = Progress("json", stream=buffer)
    run = Run(data, s, device="cpu", progress=progress)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pre.ckpt"
        run_pretraining(
            cache=run.step1_cache(), n_images=run.n_step1_images, settings=s, device=run.device, out=path,
            progress=progress, resume=False, metadata=run.pretraining_metadata(),
        )
        tensors, _ = checkpoint.load(path)
    seconds = time.monotonic() - start
    model = AnatoMaskModel.build(s.arch, 1, s.roi, **s.arch_params)
    model.load_state_dict(model_tensors(tensors))
    model.eval()
    total = s.pretrain_epochs * s.iterations_per_epoch
    start_d, end_d = decays(s, total)
    share = 1.0
    for i in range(total):  # what after_step applied
        if schedule == "paper":
            share *= ramp_schedule(i // s.iterations_per_epoch, epochs, start_d, end_d)
        else:
            share *= ramp_schedule(i, total, start_d, end_d)
    reports = [e for e in _events(buffer) if e.get("event") == "progress" and "teacher" in e]
    # Fixed evaluation crops and masks, the same for both schedules.
    cache = run.step1_cache()
    generator = torch.Generator().manual_seed(1234)
    grid = masking.grid_of(s.roi, s.mim_patch_size)
    count = masked_count(grid, s.anatomask_mask_ratio)
    guided = int(count * s.guided_final_ratio)
    sums = {"teacher_random": 0.0, "student_random": 0.0, "student_guided": 0.0}
    with torch.no_grad():
        for _ in range(eval_batches):
            images, _ = cache.sample(s.batch_size, s.roi, generator=generator, labelled=False)
            target = masking.normalised_patches(masking.patchify(images.float(), s.mim_patch_size))
            first = masking.random_mask(images.shape[0], grid, count, images.device, generator)
            out = model.teacher(masking.mask_voxels(images, first, s.mim_patch_size)).float()
            errors = masking.patch_errors(masking.patchify(out, s.mim_patch_size), target) * first.flatten(1)
            chosen = masking.generate_mask(errors, count, guided, generator).view(images.shape[0], *grid)
            random = masking.random_mask(images.shape[0], grid, count, images.device, generator)
            sums["teacher_random"] += _masked_loss(model.teacher, images, target, first, s.mim_patch_size)
            sums["student_random"] += _masked_loss(model.net, images, target, random, s.mim_patch_size)
            sums["student_guided"] += _masked_loss(model.net, images, target, chosen, s.mim_patch_size)
    means = {k: v / eval_batches for k, v in sums.items()}
    return {
        "schedule": schedule, "seed": seed, "iterations": total, "seconds": round(seconds, 1),
        "ema_decay": [start_d, end_d], "teacher_initial_share": share,
        "teacher_loss_first_report": reports[0]["teacher"] if reports else None,
        "teacher_loss_last_report": reports[-1]["teacher"] if reports else None,
        "student_loss_last_report": reports[-1]["loss"] if reports else None,
        "guided_in_last_report": reports[-1].get("guided") if reports else None,
        **means, "guided_over_random": means["student_guided"] / means["student_random"],
    }


def medcontext_run(data: Path, mode: str, seed: int, iterations: int) -> Dict[str, Any]:
    from lwi.progress import Progress
    from lwi.strategies import train

    buffer = io.StringIO()
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        train(
            data, Path(tmp) / "m.lwi.safetensors", strategy="medcontext", device="cpu",
            progress=Progress("json", stream=buffer), **{**BASE, "pretrain_epochs": 0, "epochs": 3,
            "iterations_per_epoch": math.ceil(iterations / 3), "consistency_mode": mode, "seed": seed},
        )
    reports = [e for e in _events(buffer) if e.get("event") == "progress" and "consistency_share" in e]
    shares = [e["consistency_share"] for e in reports if e["consistency_share"] is not None]
    return {
        "mode": mode, "seed": seed, "iterations": reports[-1]["iteration"] if reports else None,
        "seconds": round(time.monotonic() - start, 1),
        "consistency_share_mean": sum(shares) / len(shares) if shares else None,
        "consistency_share_min": min(shares) if shares else None, "consistency_share_max": max(shares) if shares else None,
        "reports": len(reports), "last_loss": reports[-1]["loss"] if reports else None,
        "last_consistency": reports[-1]["consistency"] if reports else None,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--part", choices=["anatomask", "medcontext", "both"], default="both")
    p.add_argument("--variants", nargs="+", default=None,
                   help="only these schedules (anatomask: run paper) or modes (medcontext: share code)")
    p.add_argument("--name", default=None, help="the results file's name (default: mechanisms[-PART])")
    args = p.parse_args()
    torch.set_num_threads(1)
    figures: Dict[str, Any] = {"data": record.display_path(args.data), "settings": {**BASE, "roi": list(BASE["roi"])}}
    if args.part in ("anatomask", "both"):
        rows = []
        for seed in args.seeds:
            for schedule in args.variants or ("run", "paper"):
                rows.append(anatomask_run(args.data, schedule, seed, args.iterations, args.eval_batches))
                print(json.dumps(rows[-1]), flush=True)
        figures["anatomask"] = rows
    if args.part in ("medcontext", "both"):
        rows = []
        for seed in args.seeds:
            for mode in args.variants or ("share", "code"):
                rows.append(medcontext_run(args.data, mode, seed, args.iterations))
                print(json.dumps(rows[-1]), flush=True)
        figures["medcontext"] = rows
    record.write(args.name or ("mechanisms" if args.part == "both" else f"mechanisms-{args.part}"), "cpu", figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
