"""Settings dataclasses as JSON and back, the same way for the core's run settings
(:class:`lwi.strategies.settings.Settings`) and the Slicer panel's (``LWITrainingLib.training_settings``).

Standard library only (the Slicer modules load this file through ``LWICommon.vocabulary``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, Mapping, Sequence, Type, TypeVar

T = TypeVar("T")


def to_dict(record: Any) -> Dict[str, Any]:
    """A dataclass instance as a JSON-safe dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(record)))


def from_dict(cls: Type[T], values: Mapping[str, Any], tuple_fields: Sequence[str] = ("roi", "spacing")) -> T:
    """``cls`` from a dict written by :func:`to_dict`: unknown keys are ignored (a file from another
    version), ``tuple_fields`` become tuples again."""
    known = {f.name for f in dataclasses.fields(cls)}
    clean = {k: v for k, v in values.items() if k in known}
    for key in tuple_fields:
        if clean.get(key) is not None:
            clean[key] = tuple(clean[key])
    return cls(**clean)
