"""The vocabulary shared by the core, the CLI and the Slicer modules, defined once.

Plain Python with no import beyond the standard library: the Slicer modules load this file at
start-up (by file path, through ``LWICommon.vocabulary``) before torch is installed, and the core
imports it as ``lwi.names``. The torch registries (``lwi.architectures.ARCHITECTURES``,
``lwi.strategies.STRATEGIES``) are keyed by exactly these names; a test checks that they agree.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, Tuple, Union

#: Network architectures (``lwi.architectures``), in the order the GUI offers them.
ARCHITECTURE_NAMES: Tuple[str, ...] = ("unetr", "swinunetr", "mednext", "segresnet")
DEFAULT_ARCHITECTURE = "unetr"  # of the Python API's Settings; lwi train and the GUI follow the plan
#: What the GUI offers: a network, or "auto" (the plan's choice, lwi/plan.py).
ARCHITECTURE_CHOICES: Tuple[str, ...] = ("auto",) + ARCHITECTURE_NAMES

#: Training strategies (``lwi.strategies``) with the one line the GUI shows for each.
STRATEGY_DESCRIPTIONS: Dict[str, str] = {
    "lwi": "LWI: self-supervised initialisation (Step 1), then fine-tuning (Step 2), as in the paper.",
    "scratch": "From scratch: fine-tuning only, from random weights, for the same number of iterations.",
    "medcontext": "MedContext: one supervised stage with a masked student and an EMA teacher, same iterations.",
    "anatomask": "AnatoMask: teacher-guided masked-image pre-training, then fine-tuning from the encoder.",
}
STRATEGY_NAMES: Tuple[str, ...] = tuple(STRATEGY_DESCRIPTIONS)
#: Not a strategy but a choice of one: lwi or scratch (lwi/strategy_choice.py); models, provenance and ``lwi experiment`` only ever name the one it picked.
AUTO_STRATEGY = "auto"
#: What ``lwi train`` and the GUI offer: a strategy, or "auto".
STRATEGY_CHOICES: Tuple[str, ...] = (AUTO_STRATEGY,) + STRATEGY_NAMES
DEFAULT_STRATEGY = AUTO_STRATEGY  # of lwi train, the GUI and the Python API's train()

#: Devices a user can pick (the CLI also takes ``cuda:N``).
DEVICE_CHOICES: Tuple[str, ...] = ("auto", "cuda", "cpu")

#: Intensity normalisations: "CT" (HU window scaled to [0, 1]) or "MR" (per-volume z-score).
MODALITIES: Tuple[str, ...] = ("CT", "MR")
#: What a user may choose: a modality, or "auto" (from the dataset / the image).
MODALITY_CHOICES: Tuple[str, ...] = ("auto",) + MODALITIES

#: Model bundles (and the checkpoints beside them) are single files with this suffix.
MODEL_SUFFIX = ".lwi.safetensors"
#: The ``format`` field of each kind of LWI file's metadata.
#: The version of the bundle and checkpoint formats this LWI writes (a reader refuses newer ones).
FORMAT_VERSION = 1
MODEL_FORMAT = "lwi-model"
STEP1_FORMAT = "lwi-step1"
STEP2_STATE_FORMAT = "lwi-step2-state"  # the resumable last state of a fine-tuning run
ANATOMASK_FORMAT = "lwi-anatomask-pretrain"  # the resumable AnatoMask pre-training checkpoint
#: The safetensors header entry (``__metadata__[METADATA_KEY]``) that holds LWI's JSON metadata.
METADATA_KEY = "lwi"
#: Infixes of the files a training run writes beside its model (``model.last.lwi.safetensors``).
LAST_INFIX = "last"
STEP1_INFIX = "step1"
ANATOMASK_INFIX = "anatomask"

_MAX_HEADER = 100 * 1024 * 1024  # a safetensors header larger than this is not one of ours

PathLike = Union[str, "os.PathLike[str]"]


def derived_path(path: PathLike, infix: str) -> Path:
    """``model.lwi.safetensors`` + ``last`` -> ``model.last.lwi.safetensors`` (same folder)."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{stem}.{infix}{dot}{suffixes}" if dot else f"{stem}.{infix}")


#: safetensors dtypes and their bytes per element (the header's tensor table is checked against them).
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _unreadable(path: PathLike, why: str) -> ValueError:
    return ValueError(f"{path} is not a readable LWI file ({why}).")


def read_header(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, Tuple[str, Tuple[int, ...]]], int]:
    """The LWI metadata of a safetensors file and its tensor table, from the header only (no torch).

    Returns ``(metadata, {name: (dtype, shape)}, bytes of tensor data)``. The file is treated as
    untrusted: the header's size and nesting are bounded, and every tensor's shape, type and place
    must agree with the file's length, so a truncated or hand-made file is refused here, before
    anything is allocated. Raises FileNotFoundError for a missing file and ValueError (one sentence
    naming the file) otherwise; the ``format`` field is not checked here.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: {path}.")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise _unreadable(path, "too short to be a safetensors file")
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                raise _unreadable(path, f"its header claims {length:,} bytes, more than the {_MAX_HEADER // 2**20} MB "
                                        "any LWI file needs; it is damaged or not an LWI file")
            if 8 + length > size:
                raise _unreadable(path, "truncated: the file ends inside its header")
            text = f.read(length)
        header = json.loads(text.decode("utf-8"))
    except RecursionError:
        raise _unreadable(path, "its header is nested too deeply to be an LWI file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _unreadable(path, f"truncated or another format: {exc}") from None
    if not isinstance(header, dict):
        raise _unreadable(path, "not a safetensors header")
    data_bytes = size - 8 - length
    tensors: Dict[str, Tuple[str, Tuple[int, ...]]] = {}
    end_of_data = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES
        shape = entry.get("shape") if ok else None
        offsets = entry.get("data_offsets") if ok else None
        ok = ok and isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape) and len(shape) <= 8
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) and n >= 0 for n in offsets)
        if not ok:
            raise _unreadable(path, f"its tensor '{name}' is described wrongly (damaged header)")
        count = 1
        for n in shape:
            count *= n
        if offsets[1] - offsets[0] != count * _DTYPE_BYTES[entry["dtype"]]:
            raise _unreadable(path, f"its tensor '{name}' of shape {shape} does not fit its place in the file (damaged header)")
        if offsets[1] > data_bytes:
            raise _unreadable(
                path, f"truncated: its tensor '{name}' needs {offsets[1]:,} bytes of data and the file holds {data_bytes:,}"
            )
        end_of_data = max(end_of_data, offsets[1])
        tensors[name] = (entry["dtype"], tuple(shape))
    entry = (header.get("__metadata__") or {}).get(METADATA_KEY) if isinstance(header.get("__metadata__"), dict) else None
    if entry is None:
        raise ValueError(f"{path} is a safetensors file but not one written by LWI (no LWI metadata).")
    try:
        metadata = json.loads(entry)
    except RecursionError:
        raise ValueError(f"{path} has corrupt LWI metadata (nested too deeply).") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path} has corrupt LWI metadata.") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path} has corrupt LWI metadata.")
    return metadata, tensors, end_of_data


def read_header_metadata(path: PathLike) -> Dict[str, Any]:
    """The LWI metadata of a safetensors file, read and checked by :func:`read_header` (no torch, no
    weights). A safetensors file starts with an 8-byte little-endian header length, then a JSON header
    whose ``__metadata__[METADATA_KEY]`` is the JSON string written by ``lwi.checkpoint.save``."""
    return read_header(path)[0]


def check_format(path: PathLike, metadata: Any, allow_checkpoints: bool = False) -> Dict[str, Any]:
    """``metadata`` (:func:`read_header_metadata`) if it is that of an LWI segmentation model (with
    ``allow_checkpoints``: of any LWI training file) of a format version this LWI reads; else
    ValueError with one sentence saying what the file is and what to use instead. The core
    (:mod:`lwi.bundle`) and the Slicer modules' model list apply this one rule."""
    if not isinstance(metadata, dict) or "format" not in metadata:
        raise ValueError(f"{path} is not an LWI model (its metadata has no format field).")
    fmt = metadata["format"]
    if fmt == STEP1_FORMAT and not allow_checkpoints:
        raise ValueError(
            f"{path} is a Step-1 checkpoint, not a segmentation model; fine-tune it first "
            f"(lwi finetune --data DIR --init {path} --out MODEL)."
        )
    if fmt == STEP2_STATE_FORMAT and not allow_checkpoints:
        raise ValueError(
            f"{path} is the resumable state of a fine-tuning run, not a segmentation model; "
            "use the model file written beside it (the same name without '.last')."
        )
    if fmt == ANATOMASK_FORMAT and not allow_checkpoints:
        raise ValueError(
            f"{path} is an AnatoMask pre-training checkpoint, not a segmentation model; use the model "
            "`lwi train --strategy anatomask` wrote next to it."
        )
    if fmt not in (MODEL_FORMAT, STEP1_FORMAT, STEP2_STATE_FORMAT, ANATOMASK_FORMAT):
        raise ValueError(f"{path} is not an LWI model (format {fmt!r}).")
    version = metadata.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by a newer LWI (format version {version}; this LWI reads up to "
            f"{FORMAT_VERSION}); update LWI to use it."
        )
    return metadata


#: Input rule (lwi.data.checks): the largest ratio of a voxel's longest to its shortest side accepted.
MAX_ANISOTROPY = 20.0
