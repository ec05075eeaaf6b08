"""The models a user can pick: bundles in the models folders, each described from its metadata.

Plain Python without torch: Slicer lists the models at start-up, before the core's requirements are
installed, so the bundle's JSON metadata is read straight from the safetensors header
(:func:`lwi.names.read_header_metadata`). No weights are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from LWICommon.files import list_models as files_in_folder
from LWICommon.files import model_name_from_path
from LWICommon.vocabulary import names


def read_bundle_metadata(path: str) -> Dict[str, Any]:
    """A model bundle's metadata, from the safetensors header only, checked by the core's rule
    (:func:`lwi.names.check_format`: a model, of a format version this LWI reads).

    Raises ValueError with one clear sentence for a missing, truncated or foreign file, a training
    checkpoint (which cannot segment) or a model from a newer LWI.
    """
    try:
        metadata = names.read_header_metadata(path)
    except FileNotFoundError:
        raise ValueError(f"The model file {path} does not exist.") from None
    except ValueError:
        raise ValueError(f"{path} is not an LWI model file (unreadable or another format).") from None
    return names.check_format(path, metadata)


def _mean(values: Iterable[Any]) -> Optional[float]:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sum(numbers) / len(numbers) if numbers else None


@dataclass
class ModelEntry:
    """One model as the module lists it.

    Attributes:
        path: the bundle file.
        name: its name (file name without ``.lwi.safetensors``).
        labels: ``(value, name)`` of each structure, background excluded, by value.
        architecture: the network (``unetr``, ``segresnet``, ...).
        strategy: how it was trained (``lwi``, ``scratch``, ...), or "".
        validation_dice: ``{label name: Dice}`` measured on the validation cases ({} if unknown).
        metadata: the full metadata.
        error: why the file cannot be used ("" when it can); the other fields are then empty.
    """

    path: str
    name: str
    labels: List[Tuple[int, str]] = field(default_factory=list)
    architecture: str = ""
    strategy: str = ""
    validation_dice: Dict[str, float] = field(default_factory=dict)
    metadata: Dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def mean_dice(self) -> Optional[float]:
        return _mean(self.validation_dice.values())

    def title(self) -> str:
        """One line for a list: ``"liver (unetr, lwi, Dice 0.912)"``."""
        if self.error:
            return f"{self.name} (unusable)"
        parts = [p for p in (self.architecture, self.strategy) if p]
        if self.mean_dice is not None:
            parts.append(f"Dice {self.mean_dice:.3f}")
        return f"{self.name} ({', '.join(parts)})" if parts else self.name

    def description(self) -> str:
        """A few lines for the module panel: labels, architecture, strategy, validation Dice."""
        if self.error:
            return self.error
        lines = ["Labels: " + (", ".join(f"{v} {n}" for v, n in self.labels) or "none")]
        arch = self.architecture or "?"
        roi = self.metadata.get("architecture", {}).get("roi_size")
        if roi:
            arch += " at " + "x".join(str(int(s)) for s in roi)
        lines.append(f"Network: {arch}; strategy: {self.strategy or 'unknown'}")
        if self.validation_dice:
            per = ", ".join(f"{n} {d:.3f}" for n, d in self.validation_dice.items())
            lines.append(f"Validation Dice: mean {self.mean_dice:.3f} ({per})")
        else:
            lines.append("Validation Dice: not measured")
        return "\n".join(lines)


def model_entry(path: str, metadata: Optional[Dict[str, Any]] = None) -> ModelEntry:
    """Describe one bundle (its metadata is read unless given); never raises for a bad file."""
    entry = ModelEntry(path=os.path.abspath(path), name=model_name_from_path(path))
    try:
        meta = metadata if metadata is not None else read_bundle_metadata(path)
    except ValueError as exc:
        entry.error = str(exc)
        return entry
    entry.metadata = meta
    names: Dict[int, str] = {}
    for item in meta.get("labels") or []:
        if int(item.get("value", 0)) != 0:
            names[int(item["value"])] = str(item.get("name", f"label {item['value']}"))
    entry.labels = sorted(names.items())
    entry.architecture = str((meta.get("architecture") or {}).get("arch", ""))
    provenance = meta.get("provenance") or {}
    entry.strategy = str(provenance.get("strategy", "") or "")
    dice = provenance.get("validation_dice")
    if isinstance(dice, dict):
        # Keys are label names or label values (as strings); show names.
        for key, value in dice.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                label = names.get(int(key), str(key)) if str(key).isdigit() else str(key)
                entry.validation_dice[label] = float(value)
    return entry


def list_models(folders: Sequence[Optional[str]], extra: Iterable[str] = ()) -> List[ModelEntry]:
    """The bundles in ``folders`` (not recursive) and the ``extra`` files (e.g. browsed before),
    each once, sorted by name. Unusable files are listed with their ``error``."""
    seen = set()
    entries = []
    paths = [p for folder in folders for p in files_in_folder(folder)] + [p for p in extra if p]
    for path in paths:
        key = os.path.realpath(path)
        if key in seen or not os.path.isfile(path):
            continue
        seen.add(key)
        entries.append(model_entry(path))
    return sorted(entries, key=lambda e: (e.name.lower(), e.path))
