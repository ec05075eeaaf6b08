"""``lwi plan``: the training plan for a dataset on this machine, with its time estimate and reasons."""

from __future__ import annotations

import argparse

from lwi.commands import training_options as common

NAME = "plan"
HELP = "show the plan lwi train would follow for a dataset (network, ROI, iterations, estimated time, why)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_train_options(parser)
    parser.add_argument(
        "--no-probe", dest="probe", action="store_false",
        help="skip the timing probe (no time estimates; a --time budget then cannot be planned)",
    )


def run(args: argparse.Namespace) -> int:
    import time

    from lwi.plan import plan_options, report_plan
    from lwi.progress import Progress

    started = time.monotonic()
    progress = Progress(args.progress)
    time_budget = args.time
    if args.from_model:  # improving a finished model (lwi.improve)
        from lwi.improve import plan_improvement

        options, plan = plan_improvement(
            args.data, args.from_model, common.settings_from_args(args), strategy=args.strategy,
            unlabeled=bool(args.unlabeled), device=args.device, time_budget=time_budget, probe=args.probe,
            started=started,
        )
    else:
        options, plan = plan_options(
            args.data, common.settings_from_args(args), strategy=args.strategy, device=args.device,
            time_budget=time_budget, probe=args.probe, started=started, unlabeled=bool(args.unlabeled),
        )
    report_plan(progress, plan)
    from lwi.recipes import recipe_lines

    for line in recipe_lines(str(options.get("recipe") or "default")):
        progress.log(line)
    progress.result(plan=plan.to_dict(), options={k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()})
    return 0
