"""``lwi segment --model MODEL --input IMAGE --output LABELMAP``: label maps on the input's own grid.

``--input`` is an image file SimpleITK reads (NIfTI, NRRD, MHA, ...), a folder holding one DICOM
series, or a folder of images (and DICOM series sub-folders), which are segmented one by one into the
``--output`` folder under the same names. A ``.seg.nrrd``/``.nrrd`` output carries the model's segment
names and colours for Slicer. Nothing is left at an output path when an image fails.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional, Tuple

from lwi import segment_options
from lwi.commands.options import add_device, add_progress

NAME = "segment"
HELP = "segment a volume (or a folder of volumes) with a trained model; the label map is on the input's grid"


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, the Segmenter options (--roi, --overlap, --sw-batch, --spacing-scale, --no-amp) and
    --largest-component, as segment and evaluate read them (:mod:`lwi.segment_options`)."""
    add_device(parser)
    segment_options.add_arguments(parser, segment_options.SEGMENTER_KEYS + ("largest_component",))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL", help="the model bundle (.lwi.safetensors)")
    parser.add_argument(
        "--input",
        required=True,
        metavar="IMAGE",
        help="an image file (NIfTI, NRRD, MHA, ...), a folder holding one DICOM series, or a folder of images",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="LABELMAP",
        help="the label map file (.seg.nrrd: named, coloured segments in Slicer; .nii.gz: values only), "
        "or a folder when --input is a folder of images",
    )
    add_segmenter_arguments(parser)
    parser.add_argument(
        "--probabilities",
        metavar="FILE",
        default=None,
        help="also write the softmax probabilities (one component per label, background first) on the input "
        "grid; a folder when --input is a folder. Large: 4 bytes x labels x voxels",
    )
    parser.add_argument(
        "--output-suffix",
        default=None,
        metavar="EXT",
        help="for folder input: the output file ending (e.g. .seg.nrrd); default: the input's (.nrrd for DICOM)",
    )
    parser.add_argument(
        "--color-table",
        metavar="FILE",
        default=None,
        help="also write the labels as a Slicer colour table (.ctbl), for outputs without names (NIfTI)",
    )
    segment_options.add_arguments(parser, ("compress",))
    add_progress(parser)


def _split_suffix(name: str) -> Tuple[str, str]:
    from lwi.data.dataset import IMAGE_SUFFIXES

    lower = name.lower()
    for suffix in (".seg.nrrd",) + tuple(IMAGE_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[len(name) - len(suffix) :]
    return name, ""


def _batch_jobs(args: argparse.Namespace) -> List[Tuple[Path, Path, Optional[Path]]]:
    """(input, output, probabilities) for each image of a folder input."""
    from lwi.data.dataset import list_images
    from lwi.errors import LWIError

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise LWIError(f"--input is a folder of images, so --output must be a folder, but {out_dir} is a file.")
    prob_dir = Path(args.probabilities) if args.probabilities else None
    if prob_dir is not None and prob_dir.exists() and not prob_dir.is_dir():
        raise LWIError(f"--input is a folder of images, so --probabilities must be a folder, but {prob_dir} is a file.")
    jobs = []
    for image in list_images(args.input):
        stem, suffix = _split_suffix(image.name) if image.is_file() else (image.name, ".nrrd")
        name = stem + (args.output_suffix or suffix or ".nrrd")
        jobs.append((image, out_dir / name, prob_dir / name if prob_dir else None))
    return jobs


def make_segmenter(args: argparse.Namespace, progress):
    """The Segmenter of ``--model`` with the sliding-window, device and grid options of ``args``."""
    from lwi.inference import Segmenter

    options = segment_options.from_args(args, segment_options.SEGMENTER_KEYS)
    return Segmenter(args.model, device=args.device, progress=progress, **options)


def run(args: argparse.Namespace) -> int:
    from lwi.data.dataset import is_dicom_folder
    from lwi.errors import LWIError
    from lwi.inference import segment_file
    from lwi.labelmap import is_nrrd, write_color_table
    from lwi.progress import Progress

    progress = Progress(args.progress)
    source = Path(args.input)
    if not source.exists():
        raise LWIError(f"The input {source} does not exist.")
    batch = source.is_dir() and not is_dicom_folder(source)
    if batch:
        jobs = _batch_jobs(args)
    else:
        if Path(args.output).is_dir():
            raise LWIError(f"--output {args.output} is a folder; give a file name such as case.seg.nrrd.")
        probs = Path(args.probabilities) if args.probabilities else None
        jobs = [(source, Path(args.output), probs)]
    for image, output, probs in jobs:
        if output.resolve() == image.resolve() or (probs is not None and probs.resolve() == image.resolve()):
            raise LWIError(f"The output {output} would overwrite the input image.")

    segmenter = make_segmenter(args, progress)
    if args.color_table:
        write_color_table(segmenter.labels, args.color_table)
    written, failed = [], []
    start = time.monotonic()
    device = str(segmenter.device)
    for n, (image, output, probs) in enumerate(jobs, start=1):
        t0 = time.monotonic()
        try:
            result = segment_file(
                segmenter,
                image,
                output,
                largest_component=args.largest_component,
                probabilities_path=probs,
                compress=args.compress,
            )
        except LWIError as exc:
            if not batch:
                raise
            failed.append(f"{image.name}: {exc}")
            progress.log(f"[{n}/{len(jobs)}] {image.name} failed: {exc}")
            continue
        device = result.device
        written.append(str(output))
        names = "" if is_nrrd(output) else " (values only; use .seg.nrrd for named segments)"
        prefix = f"[{n}/{len(jobs)}] " if batch else ""
        progress.log(f"{prefix}{image.name} -> {output}{names} on {result.device} in {time.monotonic() - t0:.1f} s")
    if failed:
        raise LWIError(
            f"{len(failed)} of {len(jobs)} images could not be segmented ({'; '.join(failed)}); "
            f"{len(written)} label maps were written."
        )
    progress.result(outputs=written, device=device, seconds=time.monotonic() - start)
    return 0
