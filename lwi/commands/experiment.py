"""``lwi experiment``: learning curves and a paired comparison of strategies (see :mod:`lwi.experiment`)."""

from __future__ import annotations

import argparse

from lwi.commands import training_options as common

NAME = "experiment"
HELP = (
    "train each strategy on K cases drawn per seed, segment the test cases, and report Dice/HD95 learning "
    "curves with a paired comparison (results.jsonl, report.md, report.html, plots)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lwi.names import STRATEGY_NAMES

    exp = parser.add_argument_group("experiment")
    exp.add_argument(
        "--out", required=True, metavar="RUN",
        help="the experiment folder; an existing one is continued with --resume (finished runs are skipped) "
        "or started again with --overwrite",
    )
    test = exp.add_mutually_exclusive_group(required=True)
    test.add_argument("--test", metavar="DIR", help="a labelled dataset folder of test cases (never trained on)")
    test.add_argument(
        "--test-cases", type=int, metavar="N", help="hold out N cases of --data as the test set (the same N for every run)"
    )
    exp.add_argument(
        "--strategies", nargs="+", choices=STRATEGY_NAMES, default=["lwi", "scratch"], metavar="NAME",
        help=f"strategies to compare, the first against each other one ({', '.join(STRATEGY_NAMES)}; default: lwi scratch); "
        "not auto, which is lwi train's choice of one of them, not a strategy to compare",
    )
    exp.add_argument("--k", nargs="+", type=int, required=True, metavar="K", help="training-set sizes, e.g. 5 10 20")
    exp.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="S",
        help="one draw of K cases (and training seed) per value (default: 0 1 2)",
    )
    exp.add_argument(
        "--parallel", type=int, default=1, metavar="N",
        help="runs at once (default 1); on one GPU a run that runs out of memory is retried with one fewer at once",
    )
    common.add_training(parser)
    parser.epilog = (
        "The lwi train options apply to every run, except that --val-fraction defaults to 0 here (every drawn "
        "case is trained on; the test set is the evaluation) and --seed is replaced by --seeds. "
        "Files, report and JSON events: docs/experiment.md."
    )


def run(args: argparse.Namespace) -> int:
    from lwi.distributed import env_world_size
    from lwi.errors import LWIError
    from lwi.experiment import run_experiment
    from lwi.progress import Progress

    if env_world_size() > 1:  # each run is its own process; torchrun would start the whole experiment N times
        raise LWIError("Start lwi experiment without torchrun; --parallel N runs several trainings at once.")
    if args.seed is not None:
        raise LWIError("The seeds of an experiment are its --seeds; leave --seed out.")
    options = common.settings_from_args(args)
    # Every drawn case is trained on unless asked otherwise: the test set measures the result.
    options.setdefault("val_fraction", 0.0)
    progress = Progress(args.progress)

    from lwi.experiment import strategy_planner

    plan = strategy_planner(options, args.strategies, device=args.device, time_budget=args.time, progress=progress)

    result = run_experiment(
        args.data, args.out, strategies=args.strategies, ks=args.k, seeds=args.seeds, test=args.test,
        test_cases=args.test_cases, options=options, unlabeled=args.unlabeled, device=args.device,
        parallel=args.parallel, resume=args.resume, overwrite=args.overwrite, progress=progress, plan=plan,
    )
    shown = f"{result['report']}" + (f" and {result['html']}" if result.get("html") else "")
    if result["failed"]:
        names = ", ".join(f["run"] for f in result["failed"])
        raise LWIError(
            f"{len(result['failed'])} run(s) failed ({names}); see their log.txt, then run the same command "
            f"with --resume to retry them (the report {shown} covers the finished runs)."
        )
    progress.log(f"Report: {shown}.")
    progress.result(**result)
    return 0
