"""The schema of the JSON header of LWI files (model bundles, Step-1 checkpoints, resumable states).

:func:`lwi.checkpoint.load` and :func:`lwi.checkpoint.read_metadata` check every header against it,
so a damaged or hand-edited file is refused with the file and the field named, instead of failing
later with a type error deep inside the code. Keys not listed here are allowed (newer minor fields,
provenance); the listed ones must have the right type and range when present, and the required ones
must be present.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from lwi.errors import LWIError
from lwi.names import FORMAT_VERSION, MODEL_FORMAT, STEP1_FORMAT, STEP2_STATE_FORMAT

Check = Callable[[Any, str], None]


class SchemaError(Exception):
    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def whole(low: Optional[int] = None, high: Optional[int] = None) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(where, f"must be a whole number, not {type(value).__name__}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise SchemaError(where, f"must be from {low} to {high if high is not None else 'any'}, not {value}")

    return check


def number(low: Optional[float] = None, high: Optional[float] = None, above: bool = False, below: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SchemaError(where, f"must be a finite number, not {value!r}")
        if low is not None and (value <= low if above else value < low):
            raise SchemaError(where, f"must be {'greater than' if above else 'at least'} {low}, not {value}")
        if high is not None and (value >= high if below else value > high):
            raise SchemaError(where, f"must be {'less than' if below else 'at most'} {high}, not {value}")

    return check


def text(*choices: str) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(where, f"must be text, not {type(value).__name__}")
        if choices and value.lower() not in {c.lower() for c in choices}:
            raise SchemaError(where, f"must be one of {', '.join(choices)}, not {value!r}")

    return check


def boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise SchemaError(where, f"must be true or false, not {value!r}")


def anything(value: Any, where: str) -> None:  # noqa: ARG001
    return None


def listing(item: Check, length: Optional[int] = None, nullable: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if value is None and nullable:
            return
        if not isinstance(value, list):
            raise SchemaError(where, f"must be a list, not {type(value).__name__}")
        if length is not None and len(value) != length:
            raise SchemaError(where, f"must have {length} entries, not {len(value)}")
        for i, entry in enumerate(value):
            item(entry, f"{where}[{i}]")

    return check


def mapping(values: Check = anything) -> Check:
    """A JSON object with any keys, each value checked by ``values``."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be an object, not {type(value).__name__}")
        for key, entry in value.items():
            values(entry, f"{where}.{key}")

    return check


Fields = Dict[str, Tuple[Check, bool]]  # key -> (check, required)


def obj(fields: Fields) -> Check:
    """A JSON object with these known keys (others allowed)."""

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(where, f"must be an object, not {type(value).__name__}")
        for key, (field_check, required) in fields.items():
            inner = f"{where}.{key}" if where else key
            if key not in value:
                if required:
                    raise SchemaError(inner, "is missing")
                continue
            field_check(value[key], inner)

    return check


def bounded(depth: int = 3) -> Check:
    """An architecture parameter: numbers, text, or short lists or objects of them (``norm: ["GROUP",
    {"num_groups": 8}]``), nested at most ``depth`` deep and within sane bounds (a
    hand-made header must not make the network's constructor allocate without limit)."""

    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int):
            if abs(value) > MAX_PARAMETER:
                raise SchemaError(where, f"must be at most {MAX_PARAMETER}, not {value}")
        elif isinstance(value, float):
            number(-MAX_PARAMETER, MAX_PARAMETER)(value, where)
        elif isinstance(value, str):
            if len(value) > 200:
                raise SchemaError(where, "is text longer than 200 characters")
        elif isinstance(value, (list, dict)) and depth > 0:
            if len(value) > 64:
                raise SchemaError(where, f"has {len(value)} entries, more than 64")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, entry in items:
                bounded(depth - 1)(entry, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")
        else:
            raise SchemaError(where, f"must be a number, text, or a short list or object, not {type(value).__name__}")

    return check


#: Bounds of the architecture fields: far above any network LWI trains, far below what exhausts memory.
MAX_PARAMETER = 65536
MAX_CHANNELS = 1024
MAX_ROI = 1024
ROI = listing(whole(1, MAX_ROI), 3)
ARCHITECTURE = obj({
    "arch": (text(), True),
    "in_channels": (whole(1, MAX_CHANNELS), True),
    "out_channels": (whole(1, MAX_CHANNELS), True),
    "roi_size": (ROI, True),
    "params": (mapping(bounded()), False),
})
PREPROCESSING = obj({
    "orientation": (text(), False),
    "spacing": (listing(number(0, above=True), 3, nullable=True), False),
    "modality": (text("CT", "MR"), False),
    "ct_window": (listing(number(), 2), False),
    "crop_foreground": (boolean, False),
})
INFERENCE = obj({
    "roi_size": (ROI, False),
    "overlap": (number(0, 1, below=True), False),
    "sw_batch_size": (whole(1), False),
})
LABEL_TABLE = listing(obj({
    "value": (whole(0), True),
    "name": (text(), True),
    "color": (listing(whole(0, 255), 3), False),
}))
STEP1 = obj({
    "num_subvolumes": (whole(1), True),
    "mask_ratio": (number(0, 1, below=True), True),
    "cube_size": (whole(1), True),
})
TRAINING = obj({
    "stage": (text(), True),
    "iteration": (whole(0), True),
    "epochs": (whole(1), True),
    "iterations_per_epoch": (whole(1), True),
    "total_iterations": (whole(0), True),
    "state": (anything, True),
    "scheduler": (mapping(), True),
})
COMMON: Fields = {"format": (text(), False), "format_version": (whole(1), False)}  # bundle.py requires the format

#: format -> the checks of its header.
SCHEMAS: Dict[str, Fields] = {
    MODEL_FORMAT: {
        "architecture": (ARCHITECTURE, True),
        "labels": (LABEL_TABLE, True),
        "preprocessing": (PREPROCESSING, True),
        "inference": (INFERENCE, False),
        "provenance": (mapping(), False),
    },
    STEP1_FORMAT: {
        "architecture": (ARCHITECTURE, True),
        "preprocessing": (PREPROCESSING, True),
        "step1": (STEP1, True),
        "settings": (mapping(), False),
        "training": (TRAINING, False),
    },
    STEP2_STATE_FORMAT: {
        "architecture": (ARCHITECTURE, True),
        "labels": (mapping(text()), True),
        "preprocessing": (PREPROCESSING, True),
        "inference": (INFERENCE, False),
        "settings": (mapping(), True),
        "training": (TRAINING, True),
    },
}


def check_label_table(labels: Any, out_channels: int) -> None:
    """A model's labels: each on its own output channel (values unique, from 1 to ``out_channels - 1``;
    0 is the background), each with its own non-empty name (results are reported by name)."""
    seen_values: Dict[int, int] = {}
    seen_names: Dict[str, int] = {}
    for i, entry in enumerate(labels):
        value, name = entry["value"], entry["name"].strip()
        where = f"labels[{i}]"
        if value == 0:
            raise SchemaError(f"{where}.value", "is 0, the background, which is not a label")
        if value >= out_channels:
            raise SchemaError(f"{where}.value", f"is {value}, but the network has channels 0 to {out_channels - 1} only")
        if value in seen_values:
            raise SchemaError(f"{where}.value", f"is {value}, the value of labels[{seen_values[value]}] too")
        if not name:
            raise SchemaError(f"{where}.name", "is empty")
        if name.lower() in seen_names:
            raise SchemaError(f"{where}.name", f"'{name}' is the name of labels[{seen_names[name.lower()]}] too")
        seen_values[value], seen_names[name.lower()] = i, i


def check_header(path: Union[str, Path], metadata: Any) -> Dict[str, Any]:
    """Check an LWI header; raise :class:`LWIError` naming ``path`` and the first bad field.

    Headers of a format not listed in :data:`SCHEMAS`, or of a newer format version, only need a
    format field (the caller decides whether it knows the format and version).
    """
    if not isinstance(metadata, dict):
        raise LWIError(f"{path} has a damaged LWI header: it must be a JSON object, not {type(metadata).__name__}.")
    fields = dict(COMMON)
    version = metadata.get("format_version", 1)
    if not isinstance(version, int) or version <= FORMAT_VERSION:  # a newer file: the reader says "update LWI"
        fields.update(SCHEMAS.get(str(metadata.get("format")), {}))
    try:
        obj(fields)(metadata, "")
        if str(metadata.get("format")) == MODEL_FORMAT and "labels" in fields:
            check_label_table(metadata["labels"], metadata["architecture"]["out_channels"])
    except SchemaError as exc:
        raise LWIError(
            f"{path} has a damaged LWI header: the field '{exc.where}' {exc.problem}; "
            "the file cannot be used (write it again, or use another copy)."
        ) from None
    return metadata
