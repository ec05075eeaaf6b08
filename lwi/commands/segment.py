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
from typing import Any, List, Optional, Tuple

from lwi import segment_options
from lwi.commands import options
from lwi.commands.options import add_device, add_overwrite, add_progress

NAME = "segment"
HELP = "segment a volume (or a folder of volumes) with a trained model; the label map is on the input's grid"
EPILOG = options.INPUT_RULES


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
        "--devices", nargs="+", metavar="DEVICE", default=None,
        help="for folder input: one worker process per device, sharing the images (e.g. cuda:0 cuda:1; "
        "'all' = every visible GPU; 'cpu cpu' splits the CPU cores between two workers); overrides --device",
    )
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
    add_overwrite(parser)
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


def segmenter_options(args: argparse.Namespace) -> dict:
    """The Segmenter keyword arguments of ``args`` other than the device and progress (picklable)."""
    return {"model_path": args.model, **segment_options.from_args(args, segment_options.SEGMENTER_KEYS)}


def make_segmenter(args: argparse.Namespace, progress):
    """The Segmenter of ``--model`` with the sliding-window, device and grid options of ``args``."""
    from lwi.inference import Segmenter

    return Segmenter(**segmenter_options(args), device=args.device, progress=progress)


def planned_inputs(args: argparse.Namespace, jobs) -> List[Any]:
    """What ``lwi segment`` reads, as :class:`lwi.outputs.Input`: the model and every input image."""
    from lwi.outputs import Input

    return [Input(Path(args.model), "--model"), Input(Path(args.input), "--input")] + [
        Input(image, "--input") for image, _, _ in jobs
    ]


def planned_outputs(args: argparse.Namespace, jobs, channels: int) -> List[Any]:
    """The label maps (and probability maps, colour table) of ``jobs`` as :class:`lwi.outputs.Output`,
    with their sizes estimated from the input headers."""
    from lwi.io import estimate_voxels
    from lwi.outputs import Output

    outputs = []
    for image, output, probs in jobs:
        voxels = estimate_voxels(image)
        outputs.append(Output(output, "--output", estimate=2 * voxels))  # at most 16-bit labels, uncompressed
        if probs is not None:
            outputs.append(Output(probs, "--probabilities", estimate=4 * channels * voxels))
    if args.color_table:
        outputs.append(Output(Path(args.color_table), "--color-table"))
    return outputs


def run(args: argparse.Namespace) -> int:
    from lwi.bundle import read_bundle_metadata
    from lwi.data.dataset import is_dicom_folder
    from lwi.errors import LWIError
    from lwi.outputs import writing
    from lwi.progress import Progress

    progress = Progress(args.progress)
    source = Path(args.input)
    if not source.exists():
        raise LWIError(f"The input {source} does not exist.")
    metadata = read_bundle_metadata(args.model)  # a wrong or damaged model is refused before any work
    batch = source.is_dir() and not is_dicom_folder(source)
    if batch:
        jobs = _batch_jobs(args)
    else:
        probs = Path(args.probabilities) if args.probabilities else None
        jobs = [(source, Path(args.output), probs)]
    channels = int(metadata["architecture"]["out_channels"])
    # Every output checked (not an input or another output, writable, not a folder, not replaced
    # without --overwrite, space) before any work; an error or Ctrl-C removes what this run wrote, and
    # one image's outputs appear together or not at all. In a folder, images that fail are reported at
    # the end and the others' label maps are kept.
    with writing(
        planned_outputs(args, jobs, channels), inputs=planned_inputs(args, jobs), overwrite=args.overwrite,
        all_or_nothing=not batch,
    ):
        failure = _run_folder(args, jobs, progress) if batch else _run_one(args, jobs[0], progress)
    if failure:
        raise LWIError(failure)
    return 0


def _run_one(args: argparse.Namespace, job, progress) -> None:
    """One image (file or DICOM series) into one label map."""
    from lwi.inference import segment_file
    from lwi.labelmap import is_nrrd, write_color_table

    image, output, probs = job
    if args.devices:  # one image: the first of the devices
        from lwi.folder import resolve_devices

        args.device = resolve_devices(args.devices)[0]
    segmenter = make_segmenter(args, progress)
    if args.color_table:
        write_color_table(segmenter.labels, args.color_table)
    start = time.monotonic()
    result = segment_file(
        segmenter,
        image,
        output,
        largest_component=args.largest_component,
        probabilities_path=probs,
        compress=args.compress,
    )
    names = "" if is_nrrd(output) else " (values only; use .seg.nrrd for named segments)"
    progress.log(f"{image.name} -> {output}{names} on {result.device} in {time.monotonic() - start:.1f} s")
    progress.result(outputs=[str(output)], device=result.device, seconds=time.monotonic() - start)


def _run_folder(args: argparse.Namespace, jobs, progress) -> Optional[str]:
    """A folder input: :func:`lwi.folder.segment_folder` on ``--devices`` (or ``--device``).

    Returns None, or the sentence naming the images that failed (the others' label maps are kept)."""
    from lwi.bundle import bundle_labels, read_bundle_metadata
    from lwi.folder import Job, resolve_devices, segment_folder
    from lwi.labelmap import is_nrrd, write_color_table

    devices = resolve_devices(args.devices or [args.device])
    if args.color_table:
        write_color_table(bundle_labels(read_bundle_metadata(args.model)), args.color_table)
    start = time.monotonic()
    if len(devices) > 1:
        progress.log(f"Segmenting {len(jobs)} images with one worker per device: {', '.join(devices)}.")

    def report(job: Job, outcome, n: int) -> None:
        if outcome.error is not None:
            progress.log(f"[{n}/{len(jobs)}] {job.image.name} failed: {outcome.error}")
        else:
            names = "" if is_nrrd(job.output) else " (values only; use .seg.nrrd for named segments)"
            progress.log(f"[{n}/{len(jobs)}] {job.image.name} -> {job.output}{names} on {outcome.device} "
                         f"in {outcome.seconds:.1f} s")

    outcomes = segment_folder(
        [Job(*job) for job in jobs],
        segmenter_options(args),
        devices,
        progress=progress,
        largest_component=args.largest_component,
        compress=args.compress,
        on_outcome=report,
    )
    failed = [f"{jobs[o.index][0].name}: {o.error}" for o in outcomes if o.error is not None]
    written = [str(jobs[o.index][1]) for o in outcomes if o.error is None]
    if failed:
        return (
            f"{len(failed)} of {len(jobs)} images could not be segmented ({'; '.join(failed)}); "
            f"{len(written)} label maps were written."
        )
    used = sorted({o.device for o in outcomes})
    progress.result(outputs=written, device=used[0] if len(used) == 1 else used, seconds=time.monotonic() - start)
    return None
