"""Safe, atomic, single-file storage of tensors plus JSON metadata (safetensors).

Both Step-1 checkpoints and model bundles are written here. Nothing is ever unpickled when reading:
tensors come from safetensors and everything else is JSON stored in the safetensors header.
Nested state (an optimizer's ``state_dict``) is flattened: tensors become ``prefix/...`` entries
and the rest is kept as JSON with placeholders, so a resume restores it exactly.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from safetensors import SafetensorError

from lwi.errors import LWIError
from lwi.names import METADATA_KEY, read_header, read_header_metadata
from lwi.outputs import write_file

if TYPE_CHECKING:  # torch is imported on use: reading a header (model lists, checks) stays fast
    import torch

_TENSOR_REF = "__tensor__"

PathLike = Union[str, "os.PathLike[str]"]


def flatten_state(state: Any, prefix: str, tensors: Dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors``; return the JSON-able skeleton."""
    import torch

    if isinstance(state, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = state.detach().cpu().contiguous()
        return {_TENSOR_REF: key}
    if isinstance(state, dict):
        # JSON keys are strings; remember int keys (optimizer state is keyed by parameter index).
        return {
            "__dict__": [
                [k, isinstance(k, int), flatten_state(v, f"{prefix}/{k}", tensors)] for k, v in state.items()
            ]
        }
    if isinstance(state, (list, tuple)):
        return [flatten_state(v, f"{prefix}/{i}", tensors) for i, v in enumerate(state)]
    return state


def unflatten_state(skeleton: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict) and _TENSOR_REF in skeleton:
        return tensors[skeleton[_TENSOR_REF]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {
            (int(k) if is_int else k): unflatten_state(v, tensors) for k, is_int, v in skeleton["__dict__"]
        }
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save(path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Dict[str, Any], option: str = "--out") -> Path:
    """Write ``tensors`` and JSON ``metadata`` to ``path`` through :func:`lwi.outputs.write_file`.

    A reader never sees a half-written file, and an interrupted or failed write (disk full) leaves the
    old file intact and ends in one sentence naming the file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {METADATA_KEY: json.dumps(metadata)}

    def write(tmp: Path) -> None:
        try:
            save_file(clean, str(tmp), metadata=header)
        except SafetensorError as exc:  # the Rust writer's I/O errors (disk full, file too large)
            raise OSError(_errno_of(str(exc)), _io_reason(str(exc)), str(path)) from None

    return write_file(path, write, option)


def _io_reason(text: str) -> str:
    """The OS's words inside a safetensors I/O error (``... Os { code: 27, ..., message: "File too large" }``)."""
    match = re.search(r'message: "([^"]+)"', text)
    return match.group(1) if match else text.strip().splitlines()[0] if text.strip() else "write error"


def _errno_of(text: str) -> int:
    match = re.search(r"code: (\d+)", text)
    return int(match.group(1)) if match else errno.EIO


def load(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a file written by :func:`save`: ``(tensors, metadata)``. Never unpickles.

    The header is checked first (:func:`lwi.names.read_header`: schema, tensor table against the
    file's length) and the weights must fit in the memory available, so nothing is allocated for a
    damaged or oversized file. Raises :class:`LWIError` for a missing, truncated or foreign file, and
    for an intact one too large for this machine's memory (said as such, not as damage).
    """
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    check_memory(path, read_tensor_table(path)[1])
    try:
        tensors = load_file(str(path), device=str(device))
    except MemoryError:
        raise LWIError(_memory_sentence(path, read_tensor_table(path)[1])) from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if "memory" in str(exc).lower() or "alloc" in str(exc).lower():
            raise LWIError(_memory_sentence(path, read_tensor_table(path)[1])) from None
        raise LWIError(f"{path} is not a readable LWI file (truncated or another format): {exc}.") from None
    return tensors, metadata


def read_tensor_table(path: PathLike) -> Tuple[Dict[str, Tuple[str, Tuple[int, ...]]], int]:
    """``({name: (dtype, shape)}, bytes of tensor data)`` from the header alone (checked, see
    :func:`lwi.names.read_header`)."""
    try:
        _, table, data_bytes = read_header(path)
    except (FileNotFoundError, ValueError) as exc:
        raise LWIError(str(exc)) from None
    return table, data_bytes


def available_memory() -> Optional[int]:
    """Bytes of memory a new allocation can use: Linux's MemAvailable, else the physical memory
    (POSIX), else None (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def _gb(n: float) -> str:
    return f"{n / 2**30:,.1f} GB"


def _memory_sentence(path: PathLike, needed: int) -> str:
    free = available_memory()
    has = f" and {_gb(free)} are available" if free is not None else ""
    return (
        f"{path} holds {_gb(needed)} of weights{has}: it is too large for this computer's memory (the file "
        "itself looks intact); use it on a computer with more memory."
    )


def check_memory(path: PathLike, needed: int) -> None:
    """Refuse, before allocating, weights that need more memory than is available."""
    free = available_memory()
    if free is not None and needed > free:
        raise LWIError(_memory_sentence(path, needed))


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Only the JSON metadata, without reading the tensors (fast, for model lists and ``lwi info``)."""
    try:
        metadata = read_header_metadata(path)
    except (FileNotFoundError, ValueError) as exc:
        raise LWIError(str(exc)) from None
    from lwi.schema import check_header

    return check_header(path, metadata)  # types, ranges and required keys, with the field named
