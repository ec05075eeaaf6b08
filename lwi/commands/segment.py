"""``lwi segment --model MODEL --input IMAGE --output LABELMAP``: label maps on the input's own grid.

``--input`` is an image file SimpleITK reads (NIfTI, NRRD, MHA, ...), a folder holding one DICOM
series, or a folder of images (and DICOM series sub-folders), which are segmented one by one into the
``--output`` folder under the same names. A ``.seg.nrrd``/``.nrrd`` output carries the model's segment
names and colours for Slicer; a ``.dcm`` output (or ``--output-format dicom-seg``) of a DICOM series is a
DICOM SEG referencing it (:mod:`lwi.dicom_seg`). Nothing is left at an output path when an image fails.
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
    """--device, the Segmenter options (--roi, --overlap, --sw-batch-size, --spacing-scale, --no-amp) and
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
        help="the label map file (.seg.nrrd: named, coloured segments in Slicer; .nii.gz: values only; .dcm: "
        "DICOM SEG of a DICOM series input), or a folder when --input is a folder of images",
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
        help="for folder input: the output file ending (e.g. .seg.nrrd); default: the input's (.nrrd for DICOM, "
        ".dcm with --output-format dicom-seg)",
    )
    parser.add_argument(
        "--color-table",
        metavar="FILE",
        default=None,
        help="also write the labels as a Slicer colour table (.ctbl), for outputs without names (NIfTI)",
    )
    segment_options.add_arguments(parser, ("compress", "uncertainty_path"))
    parser.add_argument(
        "--output-format", choices=("auto", "dicom-seg"), default="auto",
        help="auto: the --output file name decides (.seg.nrrd, .nii.gz, ...; .dcm is DICOM SEG); dicom-seg: a DICOM "
        "Segmentation object referencing the --input DICOM series (needs pip install 'lwi[dicom]')",
    )
    add_overwrite(parser)
    add_progress(parser)


def _split_suffix(name: str) -> Tuple[str, str]:
    from lwi.data.dataset import IMAGE_SUFFIXES

    lower = name.lower()
    for suffix in (".seg.nrrd",) + tuple(IMAGE_SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)], name[len(name) - len(suffix) :]
    return name, ""


def _batch_jobs(args: argparse.Namespace) -> List[Tuple[Path, Path, Optional[Path], Optional[Path]]]:
    """(input, output, probabilities, uncertainty) for each image of a folder input."""
    from lwi.data.dataset import list_images
    from lwi.dicom_seg import is_dicom_seg
    from lwi.errors import LWIError

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise LWIError(f"--input is a folder of images, so --output must be a folder, but {out_dir} is a file.")
    prob_dir = Path(args.probabilities) if args.probabilities else None
    if prob_dir is not None and prob_dir.exists() and not prob_dir.is_dir():
        raise LWIError(f"--input is a folder of images, so --probabilities must be a folder, but {prob_dir} is a file.")
    unc_dir = Path(args.uncertainty_path) if args.uncertainty_path else None
    if unc_dir is not None and unc_dir.exists() and not unc_dir.is_dir():
        raise LWIError(f"--input is a folder of images, so --uncertainty must be a folder, but {unc_dir} is a file.")
    jobs = []
    default = ".dcm" if args.output_format == "dicom-seg" else None
    for image in list_images(args.input):
        stem, suffix = _split_suffix(image.name) if image.is_file() else (image.name, ".nrrd")
        name = stem + (args.output_suffix or default or suffix or ".nrrd")
        # Probabilities and uncertainty are images, never a DICOM SEG: beside a SEG they are NRRD.
        extra = stem + ".nrrd" if is_dicom_seg(name, args.output_format) else name
        jobs.append((image, out_dir / name, prob_dir / extra if prob_dir else None, unc_dir / extra if unc_dir else None))
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
        Input(job[0], "--input") for job in jobs
    ]


def planned_outputs(args: argparse.Namespace, jobs, channels: int) -> List[Any]:
    """The label maps (and probability maps, colour table) of ``jobs`` as :class:`lwi.outputs.Output`,
    with their sizes estimated from the input headers."""
    from lwi.io import estimate_voxels
    from lwi.outputs import Output

    outputs = []
    for image, output, probs, uncertainty in jobs:
        voxels = estimate_voxels(image)
        outputs.append(Output(output, "--output", estimate=2 * voxels))  # at most 16-bit labels, uncompressed
        if probs is not None:
            outputs.append(Output(probs, "--probabilities", estimate=4 * channels * voxels))
        if uncertainty is not None:
            outputs.append(Output(uncertainty, "--uncertainty", estimate=4 * voxels))
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
        jobs = [(source, Path(args.output), probs, Path(args.uncertainty_path) if args.uncertainty_path else None)]
    _check_dicom_seg(args, jobs, metadata)
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


def _check_dicom_seg(args: argparse.Namespace, jobs, metadata) -> None:
    """Refuse, before any work, DICOM SEG outputs that cannot be written (no highdicom, an input that is
    not a DICOM series or lacks what a SEG needs, too many labels); one sentence naming the input."""
    from lwi.bundle import bundle_labels
    from lwi.dicom_seg import check_request, is_dicom_seg

    labels = bundle_labels(metadata)
    for image, output, *_ in jobs:
        if is_dicom_seg(output, args.output_format):
            check_request(image, labels)


def _written(output: Path, output_format: str) -> str:
    """How the log line describes a label map file."""
    from lwi.dicom_seg import is_dicom_seg
    from lwi.labelmap import is_nrrd

    if is_dicom_seg(output, output_format):
        return f"{output} (DICOM SEG)"
    return f"{output}" + ("" if is_nrrd(output) else " (values only; use .seg.nrrd for named segments)")


def _run_one(args: argparse.Namespace, job, progress) -> None:
    """One image (file or DICOM series) into one label map."""
    from lwi.inference import segment_file
    from lwi.labelmap import write_color_table

    image, output, probs, uncertainty = job
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
        uncertainty_path=uncertainty,
        output_format=args.output_format,
    )
    score = "" if result.uncertainty_score is None else f", uncertainty {result.uncertainty_score:.4f} ({uncertainty})"
    progress.log(f"{image.name} -> {_written(output, args.output_format)} on {result.device} "
                 f"in {time.monotonic() - start:.1f} s{score}")
    extra = {} if uncertainty is None else {"uncertainty": {str(output): result.uncertainty_score}}
    progress.result(outputs=[str(output)], device=result.device, seconds=time.monotonic() - start, **extra)


def _run_folder(args: argparse.Namespace, jobs, progress) -> Optional[str]:
    """A folder input: :func:`lwi.folder.segment_folder` on ``--devices`` (or ``--device``).

    Returns None, or the sentence naming the images that failed (the others' label maps are kept)."""
    from lwi.bundle import bundle_labels, read_bundle_metadata
    from lwi.folder import Job, resolve_devices, segment_folder
    from lwi.labelmap import write_color_table

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
            score = "" if outcome.uncertainty is None else f", uncertainty {outcome.uncertainty:.4f}"
            progress.log(f"[{n}/{len(jobs)}] {job.image.name} -> {_written(job.output, job.output_format)} "
                         f"on {outcome.device} in {outcome.seconds:.1f} s{score}")

    outcomes = segment_folder(
        [Job(*job, output_format=args.output_format) for job in jobs],
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
    extra = {}
    if args.uncertainty_path:  # least certain first: the order in which to correct them
        ranked = sorted(outcomes, key=lambda o: -(o.uncertainty if o.uncertainty is not None else 1.0))
        extra["uncertainty"] = {str(jobs[o.index][1]): o.uncertainty for o in ranked}
        progress.log("Least certain first: " + ", ".join(
            f"{jobs[o.index][0].name} {o.uncertainty:.4f}" for o in ranked if o.uncertainty is not None
        ))
    progress.result(
        outputs=written, device=used[0] if len(used) == 1 else used, seconds=time.monotonic() - start, **extra
    )
    return None
