"""Compare the training strategies at equal optimiser steps on a labelled MSD-layout dataset.

Builds two folders of links to the dataset's cases (a few-shot training set: the first ``--train``
cases of dataset.json, of which ``lwi train`` holds some out for validation; a test set: cases
``--test FROM TO`` of the same list), then runs, in fresh processes, for each strategy:

    lwi train --strategy S ... --progress json       (the result line: optimiser steps, wall time)
    lwi evaluate --model S.lwi.safetensors --data TEST --json S.eval.json

and prints a table (steps, wall time, test Dice per label). ``--table-only`` re-reads the results of
an earlier run in ``--work``. Every strategy gets the same settings, so the same optimiser steps.

    python benchmarks/strategy_comparison.py --data /path/to/hippocampus --work /tmp/compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

STRATEGIES = ["scratch", "lwi", "medcontext", "anatomask"]
NETWORK = [
    "--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,2,2]",
    "--arch-param", "blocks_up=[1,1]", "--roi", "32", "32", "32",
]


def link_subset(data: Path, out: Path, cases: List[Dict[str, str]]) -> None:
    """An MSD folder at ``out`` whose dataset.json lists ``cases``, files linked to ``data``'s."""
    raw = json.loads((data / "dataset.json").read_text())
    for case in cases:
        for key in ("image", "label"):
            relative = case[key].lstrip("./")
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.symlink((data / relative).resolve(), target)
    raw.update(training=cases, numTraining=len(cases))
    raw.pop("validation", None)
    (out / "dataset.json").write_text(json.dumps(raw, indent=1))


def lwi(*args: str, stdout: Path, stderr: Path) -> int:
    """``python -m lwi ARGS`` in a fresh process (one thread unless OMP_NUM_THREADS says otherwise)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(stdout, "w") as out:
        errors = subprocess.STDOUT if stderr == stdout else open(stderr, "w")
        try:
            return subprocess.run([sys.executable, "-m", "lwi", *args], stdout=out, stderr=errors, env=env).returncode
        finally:
            if errors is not subprocess.STDOUT:
                errors.close()


def table(work: Path, strategies: List[str]) -> str:
    rows = []
    labels: List[str] = []
    for s in strategies:
        result = json.loads((work / "results" / f"{s}.train.jsonl").read_text().splitlines()[-1])
        evaluation = json.loads((work / "results" / f"{s}.eval.json").read_text())
        dice = evaluation["mean"]["dice"]
        labels = labels or list(dice)
        cells = [f"{dice[name]:.3f}" if dice[name] is not None else "n/a" for name in labels]
        rows.append(
            f"| {s} | {result['optimizer_steps']} | {result['wall_seconds']:.0f} | " + " | ".join(cells)
            + f" | {evaluation['mean_dice']:.3f} |"
        )
    head = "| strategy | optimiser steps | wall time (s) | " + " | ".join(f"Dice {n}" for n in labels) + " | mean Dice |"
    rule = "| --- " * (4 + len(labels)) + "|"
    return "\n".join([head, rule, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a labelled MSD-layout dataset folder")
    parser.add_argument("--work", type=Path, required=True, help="where the subsets, models and results go")
    parser.add_argument("--train", type=int, default=8, help="training cases: the first N of dataset.json (default 8)")
    parser.add_argument("--test", type=int, nargs=2, default=(10, 30), metavar=("FROM", "TO"),
                        help="test cases: dataset.json's training list [FROM:TO] (default 10 30)")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table-only", action="store_true", help="print the table of an earlier run in --work")
    args = parser.parse_args()
    work = args.work
    if not args.table_only:
        cases = json.loads((args.data / "dataset.json").read_text())["training"]
        link_subset(args.data, work / "train", cases[: args.train])
        link_subset(args.data, work / "test", cases[args.test[0] : args.test[1]])
        (work / "results").mkdir(parents=True, exist_ok=True)
        for s in args.strategies:
            model = work / "models" / f"{s}.lwi.safetensors"
            code = lwi(
                "train", "--data", str(work / "train"), "--out", str(model), "--strategy", s, *NETWORK,
                "--pretrain-epochs", str(args.pretrain_epochs), "--epochs", str(args.epochs), "--lr", str(args.lr),
                "--device", args.device, "--seed", str(args.seed), "--progress", "json", "--overwrite",
                stdout=work / "results" / f"{s}.train.jsonl", stderr=work / "results" / f"{s}.train.err",
            )
            if code != 0:
                print(f"{s}: lwi train failed, see {work / 'results' / f'{s}.train.err'}", file=sys.stderr)
                return code
            lwi(
                "evaluate", "--model", str(model), "--data", str(work / "test"), "--json",
                str(work / "results" / f"{s}.eval.json"), "--device", args.device, "--progress", "none",
                stdout=work / "results" / f"{s}.eval.txt", stderr=work / "results" / f"{s}.eval.txt",
            )
    print(table(work, args.strategies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
