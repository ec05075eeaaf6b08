"""``lwi evaluate --model MODEL --data DIR [--json FILE]``: Dice and HD95 per case and label."""

from __future__ import annotations

import argparse
import sys

from lwi.commands import options
from lwi.commands.options import add_overwrite, add_progress
from lwi.commands.segment import add_segmenter_arguments, make_segmenter

NAME = "evaluate"
HELP = "segment every case of a labelled dataset and report Dice and 95th-percentile Hausdorff distance (HD95) per label"
EPILOG = options.INPUT_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL", help="the model bundle (.lwi.safetensors)")
    parser.add_argument(
        "--data", required=True, metavar="DIR", help="a dataset folder (MSD layout or imagesTr/ + labelsTr/)"
    )
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the results as JSON")
    parser.add_argument(
        "--labels", type=int, nargs="+", metavar="VALUE", default=None,
        help="also report the means over these label values, e.g. Synapse's 8 organs: 1 2 3 4 6 7 8 11",
    )
    parser.add_argument(
        "--predictions", metavar="DIR", default=None, help="also write each prediction as DIR/<case>.seg.nrrd"
    )
    add_segmenter_arguments(parser)
    add_overwrite(parser)
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lwi.bundle import bundle_labels, read_bundle_metadata
    from lwi.data.dataset import dataset_files, load_dataset
    from lwi.errors import LWIError
    from lwi.evaluation import compare_labels, evaluate_dataset, format_table, subset_means, write_json
    from lwi.io import estimate_voxels
    from lwi.outputs import Input, Output, inputs_of, writing
    from lwi.progress import Progress

    progress = Progress(args.progress)
    dataset = load_dataset(args.data, require_labels=True)  # every problem reported before any work
    metadata = read_bundle_metadata(args.model)
    model_labels = {info.value: info.name for info in bundle_labels(metadata)}
    compare_labels(model_labels, dataset.labels)
    unknown = sorted(set(args.labels or ()) - {int(v) for v in model_labels})
    if unknown:
        raise LWIError(f"--labels {unknown} are not label values of the model {args.model} ({sorted(model_labels)}).")
    outputs = []
    if args.json:
        outputs.append(Output(Path(args.json), "--json"))
    if args.predictions:
        voxels = sum(estimate_voxels(case.image) for case in dataset.cases)
        outputs.append(Output(
            Path(args.predictions), "--predictions", folder=True, estimate=2 * voxels,
            files=tuple(f"{case.name}.seg.nrrd" for case in dataset.cases),
        ))
    inputs = [Input(Path(args.model), "--model")] + inputs_of("--data", dataset_files(args.data))
    with writing(outputs, inputs=inputs, overwrite=args.overwrite, all_or_nothing=True):
        segmenter = make_segmenter(args, progress)
        results = evaluate_dataset(
            segmenter, dataset, progress, largest_component=args.largest_component, predictions_dir=args.predictions
        )
        table = format_table(results)
        if args.labels:
            results["selected"] = sel = subset_means(results, args.labels)
            dice = "n/a" if sel["mean_dice"] is None else f"{sel['mean_dice']:.4f}"
            table += f"\nmean of labels {' '.join(map(str, args.labels))} ({', '.join(sel['labels'])}): Dice {dice}"
        # With --progress json, stdout is reserved for JSON lines: the table goes to stderr.
        print(table, file=sys.stderr if args.progress == "json" else sys.stdout, flush=True)
        if args.json:
            write_json(results, args.json)
    progress.result(
        mean_dice=results["mean_dice"],
        mean_hd95=results["mean_hd95"],
        mean_uncertainty=results["mean_uncertainty"],
        uncertainty_dice_spearman=results["uncertainty_dice_spearman"],
        dice=results["mean"]["dice"],
        hd95=results["mean"]["hd95"],
        cases=len(results["cases"]),
        selected=results.get("selected"),
        json=args.json,
    )
    return 0
