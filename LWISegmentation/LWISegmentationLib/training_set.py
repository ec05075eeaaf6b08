"""LWISegmentation's "Add to training set": a corrected result becomes a labelled training case.

Plain Python. Slicer writes the volume and the segmentation (as a label map whose values stand for
the segments) to files; :func:`add_to_training_set` maps the segments by *name* to the model's label
values and appends the case to the user's training folder (MSD layout, read by LWITraining and
``lwi train``) through :func:`LWICommon.cases.export_cases`, the one writer of training folders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from LWICommon import cases


@dataclass
class LabelMapping:
    """How the segments of a case map to a model's labels.

    Attributes:
        remap: segment value in the case's label map -> the model's label value.
        unmatched: names of segments the model has no label for (written as background).
        missing: names of the model's labels no segment has.
    """

    remap: Dict[int, int] = field(default_factory=dict)
    unmatched: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


def model_labels(metadata_labels: Any) -> Dict[int, str]:
    """``{value: name}`` of a model's structures (background left out), from the bundle's list."""
    from LWICommon.labels import normalize_labels

    return {v: n for v, n in normalize_labels(metadata_labels).items() if v != 0}


def map_segments_to_model(segments: Mapping[int, str], labels: Mapping[int, str]) -> LabelMapping:
    """Map a case's segments (``{value in its label map: segment name}``) to a model's labels
    (``{value: name}``) by name, as :func:`LWICommon.cases.normalize_name` compares them
    (case, spaces, ``_`` and ``-`` do not matter).

    Raises ValueError when two segments carry the same name (which one is the organ?).
    """
    by_key = {cases.normalize_name(n): int(v) for v, n in labels.items() if int(v) != 0}
    mapping = LabelMapping()
    seen: Dict[str, str] = {}
    for value in sorted(segments):
        name = segments[value]
        key = cases.normalize_name(name)
        if key in seen:
            raise ValueError(f"Two segments are named '{seen[key]}' and '{name}'; rename one of them.")
        seen[key] = name
        if key in by_key:
            mapping.remap[int(value)] = by_key[key]
        else:
            mapping.unmatched.append(name)
    mapping.missing = [n for v, n in sorted(labels.items()) if cases.normalize_name(n) not in seen and int(v) != 0]
    return mapping


def _seed_folder_labels(folder: str, labels: Mapping[int, str]) -> None:
    """A new training folder starts with the model's label table, so its cases keep the model's values."""
    path = os.path.join(folder, cases.DATASET_JSON)
    if os.path.isfile(path):
        return
    os.makedirs(folder, exist_ok=True)
    table = {"0": "background"}
    table.update({str(v): n for v, n in sorted(labels.items())})
    cases.write_json_atomic(path, {"labels": table, "training": [], "numTraining": 0})


@dataclass
class AddedCase:
    """What :func:`add_to_training_set` did."""

    folder: str
    case: str
    labels: Dict[int, str]
    mapping: LabelMapping
    cases_in_folder: int

    def message(self) -> str:
        """One or two sentences for the user."""
        text = f"Added '{self.case}' to {self.folder} ({self.cases_in_folder} cases)."
        if self.mapping.unmatched:
            text += " Not in the model, kept as background: " + ", ".join(self.mapping.unmatched) + "."
        if self.mapping.missing:
            text += " No segment for: " + ", ".join(self.mapping.missing) + " (background in this case)."
        return text


def add_to_training_set(
    folder: str,
    case_name: str,
    image_path: str,
    label_path: str,
    segments: Mapping[int, str],
    labels: Mapping[int, str],
    modality: Optional[str] = None,
) -> AddedCase:
    """Append one labelled case to the training folder ``folder`` (created if needed).

    Args:
        folder: the training folder (MSD layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        case_name: the case's name (a ``_2`` suffix is added if the folder already has it).
        image_path: the volume, as a file.
        label_path: its label map on the same grid; value ``v`` is the segment ``segments[v]``.
        segments: ``{value in label_path: segment name}``.
        labels: the model's ``{value: name}``; segments are written with these values (or, in a
            folder that already numbers a structure differently, with the folder's value).
        modality: "CT" or "MR", stored in ``dataset.json``.

    Raises ValueError with one clear sentence when the files are unusable or no segment matches a
    label of the model.
    """
    labels = {int(v): str(n) for v, n in labels.items() if int(v) != 0}
    if not labels:
        raise ValueError("The model lists no labels to map the segments to.")
    mapping = map_segments_to_model(segments, labels)
    if not mapping.remap:
        raise ValueError(
            "No segment is named like a label of the model ("
            + ", ".join(labels.values())
            + "); rename the segments in the Segment Editor."
        )
    source = cases.inspect_case(cases.CaseSource(case_name, image_path, label_path, dict(segments)))
    problems = [p for p in source.problems if "belong to no named segment" not in p]
    if problems:
        raise ValueError("The case cannot be added: " + "; ".join(problems) + ".")
    row = cases.CaseRow(source, remap=dict(mapping.remap))
    _seed_folder_labels(folder, labels)
    result = cases.export_cases(cases.TrainingSet(labels=dict(labels), rows=[row]), folder, modality=modality)
    _, entries, _ = cases.read_training_folder(folder)
    return AddedCase(result.folder, result.written[0], result.labels, mapping, len(entries))


def folder_summary(folder: str) -> Tuple[int, Dict[int, str]]:
    """``(number of cases, label table)`` of a training folder (0 and {} when it has none yet)."""
    path = os.path.join(folder, cases.DATASET_JSON)
    if not os.path.isfile(path):
        return 0, {}
    try:
        labels, entries, _ = cases.read_training_folder(folder)
    except (OSError, ValueError, json.JSONDecodeError):
        return 0, {}
    return len(entries), {v: n for v, n in labels.items() if v != 0}


def segment_names_in_order(names: Sequence[str]) -> Dict[int, str]:
    """``{1: first, 2: second, ...}``: the values Slicer gives segments exported in this order."""
    return {i + 1: str(n) for i, n in enumerate(names)}
