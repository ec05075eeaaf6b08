"""``lwi demo``: end to end on built-in synthetic phantoms (LWI vs. scratch), CPU friendly."""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands.options import add_device, add_overwrite, add_progress, add_seed

NAME = "demo"
HELP = (
    "train LWI and scratch models on synthetic CT phantoms, segment an unseen phantom with both and "
    "print their Dice per label (a few minutes on a laptop CPU)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir", default="lwi-demo", help="folder for the phantoms, models and segmentations (default: lwi-demo)"
    )
    add_device(parser)
    add_seed(parser)
    parser.add_argument("--cases", type=options.POSITIVE, default=None, help="number of training phantoms (default: 6; quick: 3)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the pipeline in about a minute")
    add_overwrite(parser)
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from lwi.demo import estimate_bytes, format_dice_table, run_demo
    from lwi.outputs import Output, writing
    from lwi.progress import Progress

    progress = Progress(args.progress)
    out = Output(args.out_dir, "--out-dir", folder=True, estimate=estimate_bytes(args.quick, args.cases))
    with writing([out], overwrite=args.overwrite, lock=True):
        report = run_demo(
            args.out_dir, device=args.device, seed=args.seed, cases=args.cases, quick=args.quick, progress=progress
        )
    if args.progress == "json":
        progress.result(**{k: report[k] for k in ("dice", "mean_dice", "models", "segmentations", "seconds")})
    else:
        seconds = report["seconds"]
        print(f"Dice on an unseen phantom (seed {report['unseen_phantom_seed']}), same network and iterations:")
        print(format_dice_table(report))
        print(
            f"Training took {seconds['lwi']:.0f} s (LWI) and {seconds['scratch']:.0f} s (scratch). "
            f"Models, segmentations and demo.json are in {args.out_dir}."
        )
    return 0
