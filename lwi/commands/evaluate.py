"""``lwi evaluate --model MODEL --data DIR [--json FILE]``: Dice and HD95 per case and label."""

from __future__ import annotations

import argparse
import sys

from lwi.commands.options import add_device, add_progress, add_roi

NAME = "evaluate"
HELP = "segment every case of a labelled dataset and report Dice and 95th-percentile Hausdorff distance (HD95) per label"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL", help="the model bundle (.lwi.safetensors)")
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="a dataset folder (MSD layout or imagesTr/ + labelsTr/)"
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    parser.add_argument(
        "--predictions", metavar="DIR", default=None, help="also write each prediction as DIR/<case>.seg.nrrd"
    )
    add_device(parser)
    add_roi(parser, help_text="sliding-window size in voxels (default: the model's)")
    parser.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model's)")
    parser.add_argument("--sw-batch", type=int, default=None, help="windows per network call (default: the model's)")
    parser.add_argument(
        "--largest-component", action="store_true", help="keep only the largest connected piece of each label"
    )
    parser.add_argument(
        "--spacing-scale", type=float, default=1.0, help="run on a coarser grid (see lwi segment --help)"
    )
    parser.add_argument("--no-amp", action="store_true", help="full float32 on CUDA (default: float16 autocast)")
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from lwi.data.dataset import load_dataset
    from lwi.evaluation import evaluate_dataset, format_table, write_json
    from lwi.inference import Segmenter
    from lwi.progress import Progress

    progress = Progress(args.progress)
    dataset = load_dataset(args.data, require_labels=True)  # every problem reported before any work
    segmenter = Segmenter(
        args.model,
        device=args.device,
        sw_batch_size=args.sw_batch,
        overlap=args.overlap,
        amp=not args.no_amp,
        roi_size=args.roi,
        spacing_scale=args.spacing_scale,
        progress=progress,
    )
    results = evaluate_dataset(
        segmenter, dataset, progress, largest_component=args.largest_component, predictions_dir=args.predictions
    )
    # With --progress json, stdout is reserved for JSON lines: the table goes to stderr.
    print(format_table(results), file=sys.stderr if args.progress == "json" else sys.stdout, flush=True)
    if args.json:
        write_json(results, args.json)
    progress.result(
        mean_dice=results["mean_dice"],
        mean_hd95=results["mean_hd95"],
        dice=results["mean"]["dice"],
        hd95=results["mean"]["hd95"],
        cases=len(results["cases"]),
        json=args.json,
    )
    return 0
