"""``lwi finetune``: LWI Step 2 (supervised fine-tuning from a Step-1 checkpoint)."""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands import training_options as common

NAME = "finetune"
HELP = "LWI Step 2: fine-tune a Step-1 checkpoint into a segmentation model (Dice + cross-entropy)"
EPILOG = options.INPUT_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--init", required=True, metavar="CKPT", help="the Step-1 checkpoint from lwi pretrain")
    parser.add_argument(
        "--out", required=True, metavar="MODEL", help="the model bundle (e.g. model.lwi.safetensors). " + common.OUTPUT_NOTE
    )
    inherited = "the Step-1 checkpoint's"
    common.add_common(
        parser, notes={"arch": inherited + "; so are the ROI and preprocessing", "roi": inherited, "spacing": inherited,
                       "modality": inherited}, helps={"epochs": "Step-2 epochs (default 2000)"},
    )
    common.add_options(parser, common.group_keys("step2"))


def run(args: argparse.Namespace) -> int:
    from lwi.strategies import finetune

    return common.run_command(
        args,
        finetune,
        args.data,
        args.init,
        args.out,
        done=lambda result: f"Model written to {args.out} (last state: {result['last']}).",
    )
