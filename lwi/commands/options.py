"""Options shared by several sub-commands, defined once so they read the same everywhere.

Every numeric option is parsed by a range type (:func:`lwi.option_types.whole`, ``number``), so a value out of range is refused
before any work with a sentence naming the option and the allowed range (argparse adds the option's
name: ``argument --sw-batch-size: must be a whole number of at least 1, not 0.``), never quietly replaced.
"""

from __future__ import annotations

import argparse

from lwi.names import ARCHITECTURE_NAMES, DEFAULT_ARCHITECTURE, DEVICE_CHOICES, MAX_ANISOTROPY

# The range types (lwi.option_types), re-exported for the commands' own options.
from lwi.option_types import FRACTION, POSITIVE, POSITIVE_NUMBER, number, whole  # noqa: F401

#: The input rules (lwi.data.checks, lwi.io), shown after --help of every command that reads images.
INPUT_RULES = (
    "Inputs: a truncated or corrupt file, NaN or infinite voxels, a constant image, voxels more than "
    f"{MAX_ANISOTROPY:g} times longer along one axis, or a DICOM folder with several series or missing or uneven slices are "
    "refused with the file or case named; a volume smaller than the ROI is padded, with a warning. "
    "Outputs: checked before any work (writable, not a folder, free space) and never replaced without "
    "--overwrite; a run that fails removes what it wrote (training keeps its resumable checkpoint)."
)


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        choices=("tqdm", "json", "none"),
        default="tqdm",
        help="progress bars on stderr (tqdm), plus one JSON object per line on stdout (json), or nothing",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=DEVICE_CHOICES[0], help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)"
    )


def add_seed(parser: argparse.ArgumentParser) -> None:
    from lwi.training_options import SEED

    parser.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")


def add_arch(parser: argparse.ArgumentParser, default: str = DEFAULT_ARCHITECTURE) -> None:
    parser.add_argument(
        "--arch", choices=ARCHITECTURE_NAMES, default=default, help=f"network architecture (default: {default})"
    )


def add_roi(parser: argparse.ArgumentParser, default=None, help_text: str = "") -> None:
    parser.add_argument(
        "--roi",
        type=POSITIVE,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=default,
        help=help_text or "crop / sliding-window size in voxels (default: 96 96 96)",
    )


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
