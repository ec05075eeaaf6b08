"""``lwi train``: a segmentation model in one go (LWI Step 1 + Step 2, or a baseline strategy).

Every option the user leaves out comes from the plan (:mod:`lwi.plan`), printed before training
starts (and sent as a ``plan`` event with ``--progress json``); so does the strategy unless given
(``--strategy auto``, the default). A resumed run keeps its own settings and strategy.
"""

from __future__ import annotations

import argparse

from lwi.commands import options
from lwi.commands import training_options as common

NAME = "train"
HELP = (
    "train a segmentation model: LWI pre-training then fine-tuning (--strategy lwi) or a baseline; by default "
    "the plan chooses lwi or scratch (scratch unless Step 1 is asked for)"
)
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
        """The training options and the strategy: the plan's (``auto`` resolved by it), or for a
        resumed run its stored settings and the strategy of the files it left (``auto``: train() reads it)."""
        if args.resume:
            return {
                "strategy": args.strategy,
                **{k: v for k, v in settings.items() if k not in ("iterations", "pretrain_iterations")},
            }
        from lwi import distributed
        from lwi.plan import plan_options, report_plan

        options, chosen = plan_options(
            args.data, settings, strategy=args.strategy, device=device,
            time_budget=args.time, started=started,
            unlabeled=bool(args.unlabeled),
        )
        report_plan(progress, chosen)
        # Under torchrun every rank plans (and probes) by itself: all follow rank 0's strategy and budget.
        return distributed.broadcast_object({"strategy": chosen.strategy, **options})

    if args.from_model:
        return improve_command(args, started)
    return common.run_command(
        args,
        train,
        args.data,
        args.out,
        unlabeled=args.unlabeled,
        plan=plan,
        done=lambda result: f"Model written to {args.out} (last state: {result['last']}).",
    )


def improve_command(args: argparse.Namespace, started: float) -> int:
    """``lwi train --from MODEL``: improve a finished model (:mod:`lwi.improve`), with its plan."""
    from lwi.improve import improve

    def plan(settings, progress, device):
        if args.resume:
            return {k: v for k, v in settings.items() if k not in ("iterations", "pretrain_iterations")}
        from lwi import distributed
        from lwi.improve import plan_improvement
        from lwi.plan import report_plan

        options, chosen = plan_improvement(
            args.data, args.from_model, settings, strategy=args.strategy, unlabeled=bool(args.unlabeled),
            device=device, time_budget=args.time, started=started,
        )
        report_plan(progress, chosen)
        return distributed.broadcast_object(options)

    return common.run_command(
        args,
        improve,
        args.data,
        args.from_model,
        args.out,
        plan=plan,
        done=lambda result: f"Model written to {args.out}, improved from {result['parent']} (last state: {result['last']}).",
    )
