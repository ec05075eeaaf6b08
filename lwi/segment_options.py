"""The segmentation options, defined once: each option's key, ``lwi segment`` flag and meaning.

The key is the keyword of :class:`lwi.inference.Segmenter` (or of :func:`lwi.inference.segment_file`
for the writing options) and the key of a worker ``segment`` request's ``options``; the flag is
the command line's. The CLI parser (:func:`add_arguments`), the worker and the Slicer module's
"equivalent command" (:func:`to_args`, through ``LWICommon.cli_args``) all read this table, so a
command the GUI shows is one ``lwi segment`` accepts. Standard library only: the Slicer modules load
this file without the core's requirements (``LWICommon.vocabulary``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

# Relative: the Slicer modules load these standard-library files as a package of their own (LWICommon.vocabulary).
from .option_types import FRACTION, POSITIVE, POSITIVE_NUMBER, path_text

#: ``kind`` values: a value (``type``), three integers, a flag that turns the option on
#: (``store_true``) or a ``--no-...`` flag that turns a default-on option off (``store_false``).
VALUE, TRIPLE, SWITCH_ON, SWITCH_OFF = "value", "triple", "on", "off"


@dataclass(frozen=True)
class SegmentOption:
    """One option: ``key`` (Segmenter / segment_file keyword and request key), ``flag`` (CLI),
    ``kind``, ``type`` of a value, ``default`` (None: the model's), whether it is a
    ``Segmenter`` argument (else a writing option of ``segment_file``), the help text and older
    spellings of the flag still accepted (``aliases``)."""

    key: str
    flag: str
    kind: str
    type: Any
    default: Any
    segmenter: bool
    help: str
    aliases: Tuple[str, ...] = ()


SEGMENT_OPTIONS: Tuple[SegmentOption, ...] = (
    SegmentOption("roi_size", "--roi", TRIPLE, POSITIVE, None, True, "sliding-window size in voxels (default: the model's)"),
    SegmentOption("overlap", "--overlap", VALUE, FRACTION, None, True, "sliding-window overlap in [0, 1) (default: the model's)"),
    SegmentOption(
        "sw_batch_size", "--sw-batch-size", VALUE, POSITIVE, None, True, "windows per network call (default: the model's)",
        aliases=("--sw-batch",),  # the flag's first spelling; lwi train's is --sw-batch-size
    ),
    SegmentOption(
        "spacing_scale", "--spacing-scale", VALUE, POSITIVE_NUMBER, 1.0, True,
        "run on a grid this many times coarser than the model's spacing (2 = 8x fewer voxels: a large CT on a "
        "CPU in a fraction of the time, less accurate on small structures); the output is still on the input's grid",
    ),
    SegmentOption("amp", "--no-amp", SWITCH_OFF, bool, True, True, "full float32 on CUDA (default: float16 autocast)"),
    SegmentOption(
        "mirror", "--mirror", SWITCH_ON, bool, False, True,
        "test-time mirroring: average the network's output over the 8 flips of the three axes (8x slower)",
    ),
    SegmentOption(
        "largest_component", "--largest-component", SWITCH_ON, bool, False, False,
        "keep only the largest connected piece of each label",
    ),
    SegmentOption("compress", "--no-compress", SWITCH_OFF, bool, True, False, "write uncompressed files"),
    SegmentOption(
        "uncertainty_path", "--uncertainty", VALUE, path_text, None, False,
        "also write the per-voxel uncertainty map (softmax entropy / log of the number of classes: 0 certain, "
        "1 every class equally likely; float32 on the input grid) to FILE, a folder when --input is a folder; "
        "the case's score (mean uncertainty inside the predicted structures) is reported with the result",
    ),
)
OPTIONS: Dict[str, SegmentOption] = {o.key: o for o in SEGMENT_OPTIONS}
#: Keys of the ``Segmenter`` arguments and of the writing options (``segment_file``).
SEGMENTER_KEYS: Tuple[str, ...] = tuple(o.key for o in SEGMENT_OPTIONS if o.segmenter)
WRITE_KEYS: Tuple[str, ...] = tuple(o.key for o in SEGMENT_OPTIONS if not o.segmenter)


def add_arguments(parser: argparse.ArgumentParser, keys: Optional[Tuple[str, ...]] = None) -> None:
    """Register the options ``keys`` (default: all) on ``parser``; each is parsed into ``args.<key>``."""
    for key in keys or tuple(OPTIONS):
        option = OPTIONS[key]
        if option.kind == TRIPLE:
            parser.add_argument(
                option.flag, *option.aliases, dest=key, type=option.type, nargs=3, metavar=("X", "Y", "Z"),
                default=option.default, help=option.help,
            )
        elif option.kind == VALUE:
            metavar = "FILE" if option.type is path_text else None
            parser.add_argument(
                option.flag, *option.aliases, dest=key, type=option.type, default=option.default,
                help=option.help, metavar=metavar,
            )
        else:
            action = "store_true" if option.kind == SWITCH_ON else "store_false"
            parser.add_argument(option.flag, *option.aliases, dest=key, action=action, help=option.help)


def from_args(args: argparse.Namespace, keys: Tuple[str, ...]) -> Dict[str, Any]:
    """The values of ``keys`` parsed by :func:`add_arguments`, as keyword arguments."""
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


def to_args(options: Optional[Mapping[str, Any]]) -> List[str]:
    """``lwi segment`` arguments for request-style ``options`` (``{"sw_batch_size": 2, "amp": False}``
    -> ``["--sw-batch-size", "2", "--no-amp"]``); None or a default switch value adds nothing.

    Raises ValueError for a key the table does not have.
    """
    args: List[str] = []
    for key, value in (options or {}).items():
        option = OPTIONS.get(key)
        if option is None:
            raise ValueError(f"Unknown segmentation option {key!r}; known: {', '.join(OPTIONS)}.")
        if value is None:
            continue
        if option.kind == TRIPLE:
            args += [option.flag] + [str(option.type(v)) for v in value]
        elif option.kind == VALUE:
            args += [option.flag, str(option.type(value))]
        elif bool(value) != bool(option.default):  # the switch differs from the default: give the flag
            args.append(option.flag)
    return args


def check_values(options: Any) -> Dict[str, Any]:
    """A request's ``options`` (worker ``segment`` request) checked against the table: an object with
    known keys, each value of its option's type and range (None = the model's default). Returns them
    parsed; raises ValueError with one sentence naming the option."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"The segment request's options must be a JSON object, not {options!r}.")
    parsed: Dict[str, Any] = {}
    for key, value in options.items():
        option = OPTIONS.get(key)
        if option is None:
            raise ValueError(f"Unknown segment option {key!r}; known: {', '.join(OPTIONS)}.")
        if value is None:
            parsed[key] = None
            continue
        try:
            if option.kind == TRIPLE:
                if not isinstance(value, (list, tuple)) or len(value) != 3:
                    raise argparse.ArgumentTypeError(f"must be three whole numbers, not {value!r}.")
                parsed[key] = [option.type(v) for v in value]
            elif option.kind == VALUE:
                parsed[key] = option.type(value)
            elif isinstance(value, bool):
                parsed[key] = value
            else:
                raise argparse.ArgumentTypeError(f"must be true or false, not {value!r}.")
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"The segment option {key} {exc}") from None
    return parsed
