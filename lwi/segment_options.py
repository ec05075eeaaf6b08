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
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple


# -- range types: every numeric option (CLI, worker request, training settings) is checked by one of these -------------
def whole(minimum: int, maximum: Optional[int] = None) -> Callable[[Any], int]:
    """An argparse type: a whole number in ``[minimum, maximum]``."""
    allowed = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: Any) -> int:
        try:
            if isinstance(text, bool) or (isinstance(text, float) and not text.is_integer()):
                raise ValueError(text)  # JSON true or 2.5 is not a count
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, not {text!r}.") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, not {value}.")
        return value

    parse.__name__ = "whole number"
    return parse


def number(
    minimum: Optional[float] = None, maximum: Optional[float] = None, *, above: bool = False, below: bool = False
) -> Callable[[Any], float]:
    """An argparse type: a finite number in a range; ``above``/``below`` exclude the bounds."""
    if minimum is not None and maximum is not None:
        allowed = f"in {'(' if above else '['}{minimum:g}, {maximum:g}{')' if below else ']'}"
    elif minimum is not None:
        allowed = f"{'greater than' if above else 'at least'} {minimum:g}"
    elif maximum is not None:
        allowed = f"{'less than' if below else 'at most'} {maximum:g}"
    else:
        allowed = "finite"

    def parse(text: Any) -> float:
        try:
            if isinstance(text, bool):
                raise ValueError(text)
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, not {text!r}.") from None
        low_ok = minimum is None or (value > minimum if above else value >= minimum)
        high_ok = maximum is None or (value < maximum if below else value <= maximum)
        if not math.isfinite(value) or not low_ok or not high_ok:
            raise argparse.ArgumentTypeError(f"must be a number {allowed}, not {text}.")
        return value

    parse.__name__ = "number"
    return parse


def duration(text: Any) -> float:
    """An argparse type: a positive duration, ``"20m"``, ``"1h30m"``, ``"90s"``, ``"1.5h"`` or plain
    seconds, as seconds (``lwi train --time``, the LWI Training panel's time budget)."""
    raw = str(text).strip().lower()
    unit = r"(\d+(?:\.\d+)?)\s*([hms])"
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw)
    elif re.findall(unit, raw) and not re.sub(unit, "", raw).strip():
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(unit, raw))
    else:
        raise argparse.ArgumentTypeError(f"must be a duration such as 20m, 1h30m, 90s or 1.5h, not {text!r}.")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration, not {text!r}.")
    return seconds


duration.__name__ = "duration"


def format_duration(seconds: Optional[float], precise: bool = False) -> str:
    """A duration for people: ``"45 s"``, ``"3 min"``, ``"2 h 7 min"`` (``precise``: ``"3 min 05 s"``,
    ``"2 h 07 min"``); ``"unknown"`` (``precise``: ``""``) when None."""
    if seconds is None or seconds != seconds or (precise and seconds < 0):
        return "" if precise else "unknown"
    seconds = max(0, int(round(seconds)))
    if precise:
        minutes, secs = divmod(seconds, 60)
        hours, mins = divmod(minutes, 60)
        return f"{secs} s" if minutes == 0 else f"{minutes} min {secs:02d} s" if hours == 0 else f"{hours} h {mins:02d} min"
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {round((seconds % 3600) / 60)} min"


def path_text(text: Any) -> str:
    """An argparse type: a file or folder path (non-empty text; a JSON number or list is refused)."""
    if not isinstance(text, str) or not text.strip():
        raise argparse.ArgumentTypeError(f"must be a file path, not {text!r}.")
    return text


path_text.__name__ = "path"


#: The types of the options several commands share.
POSITIVE = whole(1)
FRACTION = number(0.0, 1.0, below=True)  # [0, 1): mask ratio, overlap, validation share
POSITIVE_NUMBER = number(0.0, above=True)


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
