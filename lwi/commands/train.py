"""``lwi train``: a segmentation model in one go (LWI Step 1 + Step 2, or a baseline strategy).

Every option the user leaves out comes from the plan (:mod:`lwi.plan`), printed before training
starts (and sent as a ``plan`` event with ``--progress json``). A resumed run keeps its own settings.
"""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands import training_options as common

NAME = "train"
HELP = "train a segmentation model: LWI pre-training then fine-tuning (--strategy lwi) or a baseline"
EPILOG = options.INPUT_RULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="MODEL", help="the model bundle (e.g. model.lwi.safetensors). " + common.OUTPUT_NOTE
    )
    common.add_train_options(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from lwi.strategies import train

    started = time.monotonic()  # a --time budget counts from here

    def plan(settings, progress, device):
        if args.resume:  # a resumed run keeps its stored settings
            return {k: v for k, v in settings.items() if k not in ("iterations", "pretrain_iterations")}
        from lwi.plan import parse_duration, plan_options, report_plan

        options, chosen = plan_options(
            args.data, settings, strategy=args.strategy, device=device,
            time_budget=parse_duration(args.time) if args.time else None, started=started,
        )
        report_plan(progress, chosen)
        return options

    return common.run_command(
        args,
        train,
        args.data,
        args.out,
        strategy=args.strategy,
        unlabeled=args.unlabeled,
        plan=plan,
        done=lambda result: f"Model written to {args.out} (last state: {result['last']}).",
    )
