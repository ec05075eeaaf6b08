"""``lwi info MODEL``: print what a model bundle (or a Step-1 checkpoint) contains."""

from __future__ import annotations

import argparse
import json

NAME = "info"
HELP = "print a model's architecture, labels, preprocessing, inference defaults and provenance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a model bundle (.lwi.safetensors) or a Step-1 checkpoint")
    parser.add_argument("--json", action="store_true", help="print the raw metadata as JSON")


def run(args: argparse.Namespace) -> int:
    from lwi.bundle import describe, read_lwi_metadata

    metadata = read_lwi_metadata(args.model)  # header only: fast, and never unpickles
    if args.json:
        print(json.dumps(metadata, indent=2))
    else:
        print(describe(metadata))
    return 0
