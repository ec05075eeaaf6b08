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
    from pathlib import Path

    from lwi.outputs import Output, check_outputs
    from lwi.plan import parse_duration, plan_options, report_plan
    from lwi.progress import Progress
    from lwi.strategies import get_strategy, train

    started = time.monotonic()
    progress = Progress(args.progress)
    options = common.settings_from_args(args)
    if not args.resume:
        # Before any work (the plan's probe): the full check (space, writability) follows in train().
        check_outputs([Output(p, "--out") for p in get_strategy(args.strategy).outputs(Path(args.out))], args.overwrite)
        options, plan = plan_options(
            args.data, options, strategy=args.strategy, device=args.device,
            time_budget=parse_duration(args.time) if args.time else None, started=started,
        )
        report_plan(progress, plan)
    else:
        options = {k: v for k, v in options.items() if k not in ("iterations", "pretrain_iterations")}
    result = common.run_training(
        progress, train, args.data, args.out, strategy=args.strategy, unlabeled=args.unlabeled,
        device=args.device, resume=args.resume, overwrite=args.overwrite, progress=progress, **options,
    )
    return common.finish(progress, result, f"Model written to {args.out} (last state: {result['last']}).")
