"""The types of option values, defined once: range types (argparse ``type=`` callables that refuse a
value out of range with the allowed range in the sentence) and durations.

Every numeric option is parsed by one of these: the command line's, a worker request's, the
training settings' (:mod:`lwi.training_options`) and the Slicer panels'. Standard library only: the
Slicer modules load this file without the core's requirements (``LWICommon.vocabulary``).
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, Callable, Optional


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
