"""``lwi preview``: write the Step-1 shuffled and masked views of an image, in the image's geometry."""

from __future__ import annotations

import argparse
import json

from lwi.commands import options
from lwi.commands.options import add_arch, add_device, add_overwrite, add_roi, add_seed
from lwi.names import MODALITY_CHOICES

NAME = "preview"
HELP = "write the Step-1 shuffled and shuffled-and-masked views of an image (they overlay the original)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="the image (any 3D format SimpleITK reads, or a DICOM folder)")
    parser.add_argument("--out-dir", required=True, help="folder for the views and preview.json")
    parser.add_argument(
        "--subvolumes",
        type=options.POSITIVE,
        default=None,
        help="number N of axial sub-volumes (default: derived from --model, or from --arch and --roi)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="take preprocessing and N from a model bundle or Step-1 checkpoint (weights are not read)",
    )
    add_arch(parser)
    add_roi(parser, help_text="training crop size that determines N with --arch (default: 96 96 96)")
    parser.add_argument(
        "--mask-ratio", type=options.FRACTION, default=None, help="fraction of cubes masked (default: the Step-1 model's, else 0.4)"
    )
    parser.add_argument(
        "--cube-size", type=options.POSITIVE, default=None, help="mask cube edge in voxels (default: the Step-1 model's, else 16)"
    )
    add_seed(parser)
    parser.add_argument(
        "--spacing",
        type=options.POSITIVE_NUMBER,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=None,
        help="resample to this spacing in mm, as in training (default: the image's own spacing)",
    )
    parser.add_argument(
        "--modality", choices=MODALITY_CHOICES, default="auto", help="intensity normalisation (default: auto)"
    )
    add_device(parser)
    add_overwrite(parser)
    parser.add_argument("--json", action="store_true", help="print the preview info as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from lwi.io import estimate_voxels
    from lwi.outputs import Input, Output, writing
    from lwi.preview import FILES, INFO_FILE

    # Three float32 views in the image's geometry (a coarser --spacing only makes them smaller).
    out = Output(args.out_dir, "--out-dir", folder=True, estimate=12 * estimate_voxels(args.input),
                 files=(*FILES.values(), INFO_FILE))
    inputs = [Input(args.input, "--input")] + ([Input(args.model, "--model")] if args.model else [])
    with writing([out], inputs=inputs, overwrite=args.overwrite, all_or_nothing=True):
        info, n = _preview(args)
    if args.json:
        from pathlib import Path

        print(json.dumps({**info, "out_dir": str(Path(args.out_dir).resolve())}))
    else:
        print(f"Wrote the Step-1 views of {args.input} to {args.out_dir}: N = {n} sub-volumes, "
              f"permutation {info['permutation']}, {info['masked_cubes']} of "
              f"{len(info['mask_grid']) * len(info['mask_grid'][0]) * len(info['mask_grid'][0][0])} cubes masked.")
    return 0


def _preview(args: argparse.Namespace):
    from lwi.data.preprocessing import PreprocessConfig
    from lwi.devices import resolve_device
    from lwi.io import read_image
    from lwi.preview import guess_modality, make_preview, subvolumes_for, write_preview

    image = read_image(args.input)
    arch, roi, params = args.arch, args.roi or [96, 96, 96], None
    pre: dict = {}
    step1: dict = {}  # a Step-1 checkpoint records N, the mask ratio and the cube size it trained with
    if args.model:
        from lwi.bundle import read_lwi_metadata

        metadata = read_lwi_metadata(args.model)
        pre = dict(metadata.get("preprocessing") or {})
        spec = metadata.get("architecture") or {}
        arch, roi, params = spec.get("arch", arch), spec.get("roi_size", roi), spec.get("params")
        step1 = dict(metadata.get("step1") or {})
    if args.spacing is not None:
        pre["spacing"] = list(args.spacing)
    if args.modality != "auto":
        pre["modality"] = args.modality
    elif "modality" not in pre:
        pre["modality"] = guess_modality(image)
    config = PreprocessConfig.from_dict(pre)
    n = args.subvolumes or step1.get("num_subvolumes") or subvolumes_for(arch, roi, params)
    mask_ratio = args.mask_ratio if args.mask_ratio is not None else step1.get("mask_ratio", 0.4)
    cube_size = args.cube_size or step1.get("cube_size", 16)
    preview = make_preview(
        image, config, int(n), mask_ratio=mask_ratio, cube_size=int(cube_size), seed=args.seed,
        device=resolve_device(args.device),
    )
    return write_preview(preview, args.out_dir), n
