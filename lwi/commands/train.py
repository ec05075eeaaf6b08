"""``lwi train``: a segmentation model in one go (LWI Step 1 + Step 2, or a baseline strategy)."""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands import training_options as common

NAME = "train"
HELP = "train a segmentation model: LWI pre-training then fine-tuning (--strategy lwi) or a baseline"
EPILOG = options.INPUT_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lwi.strategies import STRATEGIES

    parser.add_argument(
        "--out", required=True, metavar="MODEL", help="the model bundle (e.g. model.lwi.safetensors). " + common.OUTPUT_NOTE
    )
    parser.add_argument(
        "--strategy", choices=list(STRATEGIES), default="lwi",
        help="lwi: Step 1 then Step 2; scratch: Step 2 from random weights for the same total iterations; "
        "medcontext: one stage with a masked student and an EMA teacher, same total iterations; anatomask: "
        "teacher-guided masked-image pre-training then Step 2 (default: lwi; see docs/strategies.md)",
    )
    common.add_common(parser, epochs_help="Step-2 epochs (default 2000); Step 1's are --pretrain-epochs")
    parser.add_argument("--pretrain-epochs", type=options.POSITIVE, help="Step-1 epochs (default 400); --epochs is Step 2's (default 2000)")
    common.add_step1(parser)
    common.add_step2(parser)
    common.add_strategies(parser)


def run(args: argparse.Namespace) -> int:
    from lwi.strategies import train

    return common.run_command(
        args,
        train,
        args.data,
        args.out,
        strategy=args.strategy,
        unlabeled=args.unlabeled,
        done=lambda result: f"Model written to {args.out} (last state: {result['last']}).",
    )
