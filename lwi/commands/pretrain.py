"""``lwi pretrain``: LWI Step 1 (self-supervised pre-training; labels are not needed)."""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands import training_options as common

NAME = "pretrain"
HELP = "LWI Step 1: self-supervised pre-training (shuffled sub-volumes + masked cubes) on the images"
EPILOG = options.INPUT_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="CKPT",
        help="the Step-1 checkpoint (e.g. step1.safetensors): written every --checkpoint-every epochs and at the "
        "end, resumable with --resume; never replaced without --overwrite",
    )
    common.add_common(parser, helps={"epochs": "Step-1 epochs (default 400)"})
    common.add_options(parser, ["mask_ratio", "cube_size"])
    common.add_unlabeled(parser)
    common.add_options(parser, ["val_fraction"], helps={
        "val_fraction": "share of cases left out for a later fine-tuning's validation when dataset.json lists none "
        "(default 0.2; the same split `lwi finetune` makes with the same --seed; 0 = use every case)",
    })


def run(args: argparse.Namespace) -> int:
    from lwi.strategies import pretrain

    return common.run_command(
        args,
        pretrain,
        args.data,
        args.out,
        unlabeled=args.unlabeled,
        done=lambda result: f"Step-1 checkpoint written to {args.out} ({result['iterations']} iterations).",
    )
