"""The model bundle: ONE file a user can copy and share (docs/contracts.md, "Model bundles").

A bundle is a safetensors file written with :func:`lwi.checkpoint.save`: the tensors are the
adapter's ``state_dict()`` (keys exactly as the adapter names them, no prefix) and the JSON metadata
is::

    {"format": "lwi-model", "format_version": 1,
     "architecture": adapter.spec(),                 # rebuilt with lwi.architectures.build(**spec)
     "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}, ...],   # background left out
     "preprocessing": PreprocessConfig.to_dict(),
     "inference": {"roi_size": [96, 96, 96], "overlap": 0.5, "sw_batch_size": 4, "blend": "gaussian"},
     "provenance": {"strategy": ..., "pretrain_epochs": ..., "epochs": ..., "cases": ...,
                    "validation_dice": {name: dice}, ..., "versions": {...}, "created": ISO time}}

The recommended file name ends in ``.lwi.safetensors`` (:data:`lwi.names.MODEL_SUFFIX`); loading does not
depend on the name. Loading never unpickles anything: weights come from safetensors, the network is
rebuilt from the JSON architecture spec.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lwi import __version__
from lwi.errors import LWIError
from lwi.labels import LabelInfo, label_table, table_from_dicts
from lwi.names import (
    ANATOMASK_FORMAT,
    FORMAT_VERSION,
    MODEL_FORMAT,
    STEP1_FORMAT,
    STEP2_STATE_FORMAT,
    check_format,
)

INFERENCE_DEFAULTS: Dict[str, Any] = {"overlap": 0.5, "sw_batch_size": 4, "blend": "gaussian"}


def _versions() -> Dict[str, str]:
    import monai
    import SimpleITK as sitk
    import torch

    return {
        "lwi": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "simpleitk": sitk.Version_VersionString(),
        "python": platform.python_version(),
    }


def _label_entries(labels: Union[Mapping[int, str], Sequence[LabelInfo]]) -> List[Dict[str, Any]]:
    if isinstance(labels, Mapping):
        table = label_table({int(k): str(v) for k, v in labels.items()})
    else:
        table = [info for info in labels if info.value != 0]
    return [info.to_dict() for info in table]


def save_bundle(
    path: Union[str, Path],
    adapter: Any,
    labels: Union[Mapping[int, str], Sequence[LabelInfo]],
    preprocessing: Dict[str, Any],
    inference: Optional[Dict[str, Any]] = None,
    provenance: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write a trained adapter and everything needed to use it to one ``.lwi.safetensors`` file.

    Args:
        path: output file (parent folders are created; the write is atomic).
        adapter: an :class:`lwi.architectures` adapter (``state_dict()`` and ``spec()``).
        labels: ``{value: name}`` from the dataset (colours are chosen by :mod:`lwi.labels`), or a
            ready label table; background (0) is not stored.
        preprocessing: ``PreprocessConfig.to_dict()`` as used in training.
        inference: sliding-window defaults; missing keys are filled (``roi_size`` from the
            architecture, overlap 0.5, sw_batch_size 4, gaussian blending).
        provenance: how the model was made: ``strategy``, ``pretrain_epochs`` (Step 1),
            ``epochs`` (Step 2), ``cases``, ``validation_cases``, ``validation_dice``
            (``{label name: Dice}``), ... ; ``versions`` and ``created`` are added here.

    Returns:
        The path written.
    """
    from lwi import checkpoint

    spec = dict(adapter.spec())
    entries = _label_entries(labels)
    out_channels = spec.get("out_channels")
    if out_channels is not None and entries and max(e["value"] for e in entries) >= int(out_channels):
        raise ValueError(f"label values {[e['value'] for e in entries]} do not fit {out_channels} output channels")
    infer = dict(INFERENCE_DEFAULTS)
    if spec.get("roi_size") is not None:
        infer["roi_size"] = [int(s) for s in spec["roi_size"]]
    infer.update(inference or {})
    if "roi_size" in infer:
        infer["roi_size"] = [int(s) for s in infer["roi_size"]]
    prov = dict(provenance or {})
    prov["versions"] = _versions()
    prov["created"] = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")
    metadata = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": spec,
        "labels": entries,
        "preprocessing": dict(preprocessing),
        "inference": infer,
        "provenance": prov,
    }
    json.dumps(metadata)  # fail here, not in the middle of writing, if something is not JSON
    # Clone so tensors that share storage (tied weights, views) are stored as separate tensors,
    # which safetensors requires.
    tensors = {k: v.detach().cpu().clone() for k, v in adapter.state_dict().items()}
    return checkpoint.save(path, tensors, metadata)


def _check_metadata(path: Union[str, Path], metadata: Any, allow_step1: bool = False) -> Dict[str, Any]:
    """:func:`lwi.names.check_format` (the rule the Slicer modules apply too), as an :class:`LWIError`."""
    try:
        return check_format(path, metadata, allow_checkpoints=allow_step1)
    except ValueError as exc:
        raise LWIError(str(exc)) from None


def _read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    from lwi import checkpoint

    return checkpoint.read_metadata(path)  # checked against lwi.schema


def read_bundle_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata of a model bundle without reading its weights (fast; for model lists).

    Raises :class:`LWIError` for a missing, truncated or foreign file, a Step-1 checkpoint or a
    bundle from a newer LWI.
    """
    return _check_metadata(path, _read_metadata(path))


def read_lwi_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    """The metadata of any LWI file: a model bundle, a Step-1 checkpoint or a resumable Step-2 state
    (``lwi info`` shows all three)."""
    return _check_metadata(path, _read_metadata(path), allow_step1=True)


def bundle_labels(metadata: Dict[str, Any]) -> List[LabelInfo]:
    """The label table stored in a bundle's metadata (background excluded)."""
    return table_from_dicts(metadata.get("labels", []))


def load_bundle(path: Union[str, Path], device: Any = "cpu") -> Tuple[Any, Dict[str, Any]]:
    """Load a model bundle: ``(adapter in eval mode on device, metadata)``. Never unpickles.

    ``device`` may be ``"auto"`` (CUDA when available). Raises :class:`LWIError` for a missing,
    truncated or foreign file, a Step-1 checkpoint, a newer format, or weights that do not match
    the stored architecture.
    """
    from lwi import checkpoint
    from lwi.architectures import build
    from lwi.devices import resolve_device

    metadata = read_bundle_metadata(path)  # check the format and the header's schema before any weight
    check_weights(path, metadata)  # the network it describes against the tensors the file holds
    tensors, metadata = checkpoint.load(path, device="cpu")
    spec = dict(metadata["architecture"])
    try:
        adapter = build(**spec)
    except (TypeError, ValueError, KeyError) as exc:
        raise LWIError(f"{path} describes an architecture this LWI cannot build ({exc}).") from None
    try:
        adapter.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LWIError(f"{path} has weights that do not match its architecture ({first}).") from None
    adapter.to(resolve_device(device))
    adapter.eval()
    return adapter, metadata


def check_weights(path: Union[str, Path], metadata: Dict[str, Any]) -> None:
    """Refuse a file whose tensors are not the weights of the network its header describes, before
    anything is allocated: the network is built on PyTorch's meta device (shapes only) and its
    parameter names and shapes compared with the file's tensor table (:func:`lwi.names.read_header`).
    """
    import torch

    from lwi.architectures import build
    from lwi.checkpoint import read_tensor_table

    table, _ = read_tensor_table(path)
    spec = dict(metadata["architecture"])
    try:
        try:
            with torch.device("meta"):
                adapter = build(**spec)
        except (RuntimeError, NotImplementedError):  # constructors that compute on tensors: on the CPU (bounded)
            adapter = build(**spec)
    except LWIError:
        raise
    except Exception as exc:  # noqa: BLE001 (an untrusted spec may fail any way inside the constructor)
        raise LWIError(f"{path} describes an architecture this LWI cannot build ({type(exc).__name__}: {exc}).") from None
    expected = {name: tuple(t.shape) for name, t in adapter.state_dict().items()}
    missing = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    wrong = sorted(n for n in set(expected) & set(table) if tuple(table[n][1]) != expected[n])
    if missing or extra or wrong:
        if wrong:
            name = wrong[0]
            detail = f"'{name}' is {list(table[name][1])} in the file but {list(expected[name])} in the network"
        elif missing:
            detail = f"the network's '{missing[0]}' is not in the file ({len(missing)} missing)"
        else:
            detail = f"the file's '{extra[0]}' is not in the network ({len(extra)} unexpected)"
        arch = metadata["architecture"]
        raise LWIError(
            f"{path} has weights that do not match the network its header describes ({arch.get('arch')}, "
            f"{arch.get('out_channels')} output channels): {detail}; the file is damaged or was edited."
        )


# -- human-readable description --------------------------------------------------------------


def _fmt(value: Any, depth: int = 0) -> str:
    """Compact text for a metadata value; deeply nested internals (optimizer state) are elided."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return " x ".join(_fmt(v) for v in value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ", ".join(value) if value else "none"
    if isinstance(value, dict):
        if depth >= 1:
            return "{...}"
        return ", ".join(f"{k}={_fmt(v, depth + 1)}" for k, v in value.items() if v is not None)
    return str(value)


def _line(key: str, value: Any) -> str:
    return f"  {key + ':':<17}{_fmt(value)}" if len(key) < 16 else f"  {key}: {_fmt(value)}"


def _hex(color: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])


def _describe_architecture(spec: Dict[str, Any]) -> List[str]:
    spec = dict(spec)
    name = spec.pop("arch", spec.pop("name", "?"))
    parts = []
    for key, label in (("in_channels", "in"), ("out_channels", "out")):
        if key in spec:
            parts.append(f"{label} {spec.pop(key)}")
    if "roi_size" in spec:
        parts.append(f"ROI {_fmt(spec.pop('roi_size'))}")
    line = f"  Architecture:    {name}" + (f" ({', '.join(parts)})" if parts else "")
    lines = [line]
    params = spec.pop("params", None)
    if isinstance(params, dict):
        spec.update(params)  # adapter.spec() nests the network's own parameters under "params"
    if spec:
        lines.append(f"                   {_fmt(spec)}")
    return lines


def _describe_preprocessing(pre: Dict[str, Any]) -> str:
    pre = dict(pre)
    parts = []
    if "orientation" in pre:
        parts.append(f"orientation {pre.pop('orientation')}")
    if "spacing" in pre:
        spacing = pre.pop("spacing")
        parts.append(f"spacing {_fmt(spacing)} mm" if spacing else "original spacing")
    modality = pre.pop("modality", None)
    if modality:
        parts.append(f"modality {modality}")
    window = pre.pop("ct_window", None)
    if window and str(modality).upper() != "MR":  # the CT window is not used for MR
        parts.append(f"intensity window [{_fmt(window[0])}, {_fmt(window[1])}] HU -> [0, 1]")
    parts += [f"{k} {_fmt(v)}" for k, v in pre.items()]
    return "  Preprocessing:   " + ("; ".join(parts) if parts else "none recorded")


def _describe_inference(inf: Dict[str, Any]) -> str:
    inf = dict(inf)
    parts = []
    if "roi_size" in inf:
        parts.append(f"ROI {_fmt(inf.pop('roi_size'))}")
    if "overlap" in inf:
        parts.append(f"overlap {_fmt(inf.pop('overlap'))}")
    if "sw_batch_size" in inf:
        parts.append(f"batch {inf.pop('sw_batch_size')}")
    if "blend" in inf:
        parts.append(f"{inf.pop('blend')} blending")
    parts += [f"{k} {_fmt(v)}" for k, v in inf.items()]
    return "  Inference:       sliding window, " + ", ".join(parts)


def _describe_provenance(prov: Dict[str, Any], labels: List[Dict[str, Any]]) -> List[str]:
    prov = dict(prov)
    lines = []
    versions = prov.pop("versions", {})
    created = prov.pop("created", None)
    dice = prov.pop("validation_dice", None)
    mean_dice = prov.pop("mean_validation_dice", None)
    training = []
    if "strategy" in prov:
        training.append(f"strategy {prov.pop('strategy')}")
    if "pretrain_epochs" in prov:
        training.append(f"Step 1: {prov.pop('pretrain_epochs')} epochs")
    if "epochs" in prov:
        training.append(f"Step 2: {prov.pop('epochs')} epochs")
    if "cases" in prov:
        cases = f"{prov.pop('cases')} training cases"
        if "validation_cases" in prov:
            cases += f", {prov.pop('validation_cases')} validation"
        training.append(cases)
    if training:
        lines.append("  Training:        " + "; ".join(training))
    lines += _describe_lineage(prov)
    for key, value in prov.items():
        lines.append(_line(key, value))
    if isinstance(dice, dict) and dice:
        names = {str(e["value"]): e["name"] for e in labels}
        values = [v for v in dice.values() if isinstance(v, (int, float))]
        if mean_dice is None and values:
            mean_dice = sum(values) / len(values)
        mean = f" (mean {mean_dice:.3f})" if isinstance(mean_dice, (int, float)) else ""
        lines.append(f"  Validation Dice{mean}:")
        for key, value in dice.items():
            shown = f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
            lines.append(f"      {names.get(str(key), str(key)):<28} {shown}")
    elif dice is not None:
        lines.append(f"  Validation Dice: {_fmt(dice)}")
    if created or versions:
        made = f"  Created:         {created or '?'}"
        if versions:
            made += " with " + ", ".join(f"{k} {v}" for k, v in versions.items())
        lines.append(made)
    return lines


def _describe_lineage(prov: Dict[str, Any]) -> List[str]:
    """The chain of models an improved model (``lwi train --from``) descends from, its parent first;
    the keys shown are popped from ``prov``."""
    chain = prov.pop("lineage", None)
    prov.pop("parent", None)  # the chain's last entry
    added = prov.pop("added_cases", None)
    if not isinstance(chain, list) or not chain:
        return []
    shown = []
    for entry in reversed(chain):
        details = [str(entry["created"])[:10]] if entry.get("created") else []
        if entry.get("cases") is not None:
            details.append(f"{entry['cases']} cases")
        if isinstance(entry.get("mean_validation_dice"), (int, float)):
            details.append(f"mean validation Dice {entry['mean_validation_dice']:.3f}")
        shown.append(f"{entry.get('model', '?')}" + (f" ({', '.join(details)})" if details else ""))
    lines = ["  Improved from:   " + " <- ".join(shown)]
    if isinstance(added, list):
        lines.append("  Cases added:     " + (", ".join(str(a) for a in added) if added else "none"))
    return lines


def describe(metadata: Dict[str, Any]) -> str:
    """A readable multi-line description of a bundle's (or Step-1 checkpoint's) metadata."""
    meta = dict(metadata)
    fmt = meta.pop("format", "?")
    version = meta.pop("format_version", "?")
    title = {
        MODEL_FORMAT: "LWI segmentation model",
        STEP1_FORMAT: "LWI Step-1 checkpoint",
        STEP2_STATE_FORMAT: "LWI fine-tuning state (resumable with --resume)",
        ANATOMASK_FORMAT: "AnatoMask pre-training checkpoint (resumable with --resume)",
    }.get(fmt, str(fmt))
    lines = [f"{title} (format {fmt} v{version})"]
    if "architecture" in meta:
        lines += _describe_architecture(meta.pop("architecture"))
    labels = meta.pop("labels", None)
    if isinstance(labels, dict):  # training states keep dataset.json's {value: name} form
        labels = _label_entries({int(k): str(v) for k, v in labels.items()})
    if labels is not None:
        lines.append(f"  Labels ({len(labels)}):")
        for entry in labels:
            lines.append(f"    {int(entry['value']):>4}  {entry['name']:<28} {_hex(entry.get('color', (0, 0, 0)))}")
    if "preprocessing" in meta:
        lines.append(_describe_preprocessing(meta.pop("preprocessing") or {}))
    if "inference" in meta:
        lines.append(_describe_inference(meta.pop("inference") or {}))
    prov = meta.pop("provenance", None)
    if isinstance(prov, dict):
        lines += _describe_provenance(prov, labels or [])
    for key, value in meta.items():  # anything else (e.g. a Step-1 checkpoint's own fields)
        if key == "training" and isinstance(value, dict):  # resumable state: only where it stands
            value = {k: v for k, v in value.items() if k not in ("state", "scheduler")}
        lines.append(_line(key, value))
    if fmt == STEP1_FORMAT:
        lines.append("  (Step-1 weights: fine-tune with `lwi finetune --init` before segmenting.)")
    return "\n".join(lines)
