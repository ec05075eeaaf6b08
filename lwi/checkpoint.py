"""Safe, atomic, single-file storage of tensors plus JSON metadata (safetensors).

Both Step-1 checkpoints and model bundles are written here. Nothing is ever unpickled when reading:
tensors come from safetensors and everything else is JSON stored in the safetensors header.
Nested state (an optimizer's ``state_dict``) is flattened: tensors become ``prefix/...`` entries
and the rest is kept as JSON with placeholders, so a resume restores it exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Tuple, Union

from safetensors import SafetensorError

from lwi.errors import LWIError
from lwi.names import METADATA_KEY, read_header_metadata
from lwi.outputs import follow_umask

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


def save(path: PathLike, tensors: Dict[str, torch.Tensor], metadata: Dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to ``path`` atomically (temporary file + rename).

    A reader never sees a half-written file, and an interrupted write leaves the old file intact.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        save_file(clean, tmp, metadata={METADATA_KEY: json.dumps(metadata)})
        follow_umask(tmp)  # mkstemp makes the file private (0600); a model is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Read a file written by :func:`save`: ``(tensors, metadata)``. Never unpickles.

    Raises :class:`LWIError` for a missing, truncated or foreign file.
    """
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LWIError(f"{path} is not a readable LWI file (truncated or another format): {exc}.") from None
    return tensors, metadata


def read_metadata(path: PathLike) -> Dict[str, Any]:
    """Only the JSON metadata, without reading the tensors (fast, for model lists and ``lwi info``)."""
    try:
        metadata = read_header_metadata(path)
    except (FileNotFoundError, ValueError) as exc:
        raise LWIError(str(exc)) from None
    from lwi.schema import check_header

    return check_header(path, metadata)  # types, ranges and required keys, with the field named
