"""``lwi export --model MODEL --format monai-bundle --out DIR``: a model for other tools (:mod:`lwi.bundle_export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lwi.commands.options import add_overwrite

NAME = "export"
HELP = "export a model for other tools: a MONAI Bundle that python -m monai.bundle run, MONAI Label and MONAI Deploy load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL", help="the model bundle (.lwi.safetensors)")
    parser.add_argument(
        "--format", required=True, choices=("monai-bundle",),
        help="monai-bundle: configs/ (metadata.json, inference.json), models/ (model.pt, model.ts)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="the bundle folder to write")
    add_overwrite(parser)


def run(args: argparse.Namespace) -> int:
    from lwi.bundle import read_bundle_metadata
    from lwi.bundle_export import export_monai_bundle
    from lwi.errors import LWIError
    from lwi.outputs import Input, Output, writing

    model, out = Path(args.model), Path(args.out)
    read_bundle_metadata(model)  # a wrong or damaged model is refused before any work
    # The export replaces --out as a whole: it may not be, or hold, the model (resolved: links, ..).
    # A failure removes what the export made, the folders above --out included, and keeps an earlier bundle.
    with writing([Output(out, "--out", folder=True, estimate=2 * model.stat().st_size, whole=True)],
                 overwrite=args.overwrite, inputs=[Input(model, "--model")]):
        if out.is_dir() and any(out.iterdir()) and not (out / "configs" / "inference.json").is_file():
            # --overwrite replaces an earlier bundle, never a folder of other files
            raise LWIError(f"--out {out} holds files but no MONAI Bundle; choose a new or empty folder.")
        result = export_monai_bundle(model, out)
    print(f"{model.name} -> {out} (MONAI Bundle; models/model.ts: {result['torchscript']}). Run it with: "
          f"cd {out} && python -m monai.bundle run --config_file configs/inference.json --dataset_dir IN --output_dir OUT")
    return 0
