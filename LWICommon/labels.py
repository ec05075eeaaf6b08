"""What each label value of a label map becomes in Slicer: a named, coloured segment with standard
terminology where one fits.

Names and colours come from the model bundle's metadata (``lwi info MODEL --json``: ``labels`` is a
list of ``{"value", "name", "color": [r, g, b]}`` in 0-255). Where a colour is missing (a dataset
folder's ``{value: name}``), the core's :func:`lwi.labels.default_color` picks the usual organ colour;
the core is imported only then, and that module is plain Python (no torch).

Terminology entries use Slicer's serialised form (7 fields separated by ``~``, each code
``scheme^value^meaning``), with SNOMED CT codes of the "3D Slicer General Anatomy list" context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

RGBFloat = Tuple[float, float, float]

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_ANATOMICAL_STRUCTURE = ("SCT", "123037004", "Anatomical Structure")
_TISSUE = ("SCT", "85756007", "Tissue")
LEFT = ("SCT", "7771000", "Left")
RIGHT = ("SCT", "24028007", "Right")

# Canonical structure (as named by lwi.labels.canonical_structure) -> (category, SNOMED CT type).
# Codes as in Slicer's SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.json.
_TERMS: Dict[str, Tuple[Tuple[str, str, str], Tuple[str, str, str]]] = {
    "liver": (_ANATOMICAL_STRUCTURE, ("SCT", "10200004", "Liver")),
    "spleen": (_ANATOMICAL_STRUCTURE, ("SCT", "78961009", "Spleen")),
    "kidney": (_ANATOMICAL_STRUCTURE, ("SCT", "64033007", "Kidney")),
    "pancreas": (_ANATOMICAL_STRUCTURE, ("SCT", "15776009", "Pancreas")),
    "stomach": (_ANATOMICAL_STRUCTURE, ("SCT", "69695003", "Stomach")),
    "gallbladder": (_ANATOMICAL_STRUCTURE, ("SCT", "28231008", "Gallbladder")),
    "aorta": (_ANATOMICAL_STRUCTURE, ("SCT", "15825003", "Aorta")),
    # The General Anatomy list has no vena cava or portal vein type: "Vein" is what its selector can show.
    "inferior vena cava": (_TISSUE, ("SCT", "29092000", "Vein")),
    "portal vein": (_TISSUE, ("SCT", "29092000", "Vein")),
    "esophagus": (_ANATOMICAL_STRUCTURE, ("SCT", "32849002", "Esophagus")),
    "adrenal gland": (_ANATOMICAL_STRUCTURE, ("SCT", "23451007", "Adrenal gland")),
    "duodenum": (_ANATOMICAL_STRUCTURE, ("SCT", "38848004", "Duodenum")),
    "small bowel": (_ANATOMICAL_STRUCTURE, ("SCT", "30315005", "Small Intestine")),
    "colon": (_ANATOMICAL_STRUCTURE, ("SCT", "71854001", "Colon")),
    "trachea": (_ANATOMICAL_STRUCTURE, ("SCT", "44567001", "Trachea")),
    "heart": (_ANATOMICAL_STRUCTURE, ("SCT", "80891009", "Heart")),
    "brain": (_ANATOMICAL_STRUCTURE, ("SCT", "12738006", "Brain")),
    "artery": (_TISSUE, ("SCT", "51114001", "Artery")),
    "vein": (_TISSUE, ("SCT", "29092000", "Vein")),
    "bone": (_TISSUE, ("SCT", "272673000", "Bone")),
    "muscle": (_TISSUE, ("SCT", "71616004", "Muscle")),
    "fat": (_TISSUE, ("SCT", "248300009", "Body fat")),
    "skin": (_TISSUE, ("SCT", "39937001", "Skin")),
}

# Only organs that come in pairs get a laterality modifier.
_PAIRED = {"kidney", "adrenal gland"}
_LEFT_WORDS = {"left", "l", "lt", "sinister"}
_RIGHT_WORDS = {"right", "r", "rt", "dexter"}


@dataclass(frozen=True)
class SegmentSpec:
    """One segment to create: label ``value``, ``name``, ``color`` (0-1 floats, None: let Slicer
    choose) and serialised ``terminology`` (None: no standard term fits)."""

    value: int
    name: str
    color: Optional[RGBFloat]
    terminology: Optional[str]


def _code(code: Tuple[str, str, str]) -> str:
    return "^".join(code)


def _words(name: str) -> List[str]:
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def laterality(name: str) -> Optional[Tuple[str, str, str]]:
    """The SNOMED CT left/right modifier a name asks for (``"kidney_left"``, ``"Right kidney"``), or None."""
    words = set(_words(name))
    left, right = bool(words & _LEFT_WORDS), bool(words & _RIGHT_WORDS)
    if left == right:
        return None
    return LEFT if left else RIGHT


def canonical_structure(name: str) -> Optional[str]:
    """The well-known structure a name refers to, as the core's label table names it."""
    from lwi.labels import canonical_structure as core_canonical_structure

    return core_canonical_structure(name)


def terminology_entry(name: str) -> Optional[str]:
    """Slicer's serialised terminology entry for a segment name, or None where no standard term fits.

    Example: ``"kidney_left"`` ->
    ``"Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical
    Structure~SCT^64033007^Kidney~SCT^7771000^Left~Anatomic codes - DICOM master list~^^~^^"``.
    """
    key = canonical_structure(name)
    if key not in _TERMS:
        return None
    category, type_code = _TERMS[key]
    modifier = laterality(name) if key in _PAIRED else None
    fields = [
        TERMINOLOGY_CONTEXT,
        _code(category),
        _code(type_code),
        _code(modifier) if modifier else "^^",
        ANATOMIC_CONTEXT,
        "^^",
        "^^",
    ]
    return "~".join(fields)


def color_to_float(color: Any) -> Optional[RGBFloat]:
    """A colour as 0-1 floats from ``[r, g, b]`` in 0-255, ``"#rrggbb"``, or already 0-1 floats."""
    if color is None:
        return None
    if isinstance(color, str):
        text = color.lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", text):
            raise ValueError(f"Not a colour: {color!r}.")
        return tuple(int(text[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    values = [float(c) for c in list(color)[:3]]
    if len(values) != 3:
        raise ValueError(f"Not a colour: {color!r}.")
    if all(float(c).is_integer() for c in values) and any(c > 1 for c in values):
        values = [c / 255.0 for c in values]
    elif any(c > 1 for c in values):
        raise ValueError(f"Not a colour: {color!r}.")
    return (values[0], values[1], values[2])


def normalize_labels(labels: Any) -> Dict[int, str]:
    """``{value: name}`` from any label description the project uses.

    Accepts ``{"0": "background", "1": "liver"}`` and ``{"background": 0, "liver": 1}`` (both
    dataset.json styles, read by the core's one parser :func:`lwi.data.dataset.parse_labels`, which
    adds background) and the bundle's list of ``{"value", "name", ...}``.
    """
    if isinstance(labels, Mapping) and labels and not any(isinstance(v, Mapping) for v in labels.values()):
        from lwi.data.dataset import parse_labels

        return parse_labels(dict(labels))
    result: Dict[int, str] = {}
    if isinstance(labels, Mapping):
        for key, val in labels.items():
            result[int(val.get("value", key))] = str(val["name"])
    else:
        for entry in labels:
            result[int(entry["value"])] = str(entry["name"])
    return result


def segment_specs(labels: Any, colors: Optional[Mapping[int, Any]] = None) -> List[SegmentSpec]:
    """The segments for a label map, sorted by value, background (0) left out.

    ``labels`` is any form :func:`normalize_labels` takes; colours come from the bundle entries
    (``"color"``), else from ``colors``, else from the core's usual organ colours.
    """
    names = normalize_labels(labels)
    given: Dict[int, Any] = {}
    if not isinstance(labels, Mapping):
        given = {int(e["value"]): e.get("color") for e in labels}
    elif any(isinstance(v, Mapping) for v in labels.values()):
        given = {int(v.get("value", k)): v.get("color") for k, v in labels.items() if isinstance(v, Mapping)}
    if colors:
        given.update({int(k): v for k, v in colors.items() if int(k) not in given or given[int(k)] is None})
    specs = []
    for value in sorted(names):
        if value == 0:
            continue
        name = names[value]
        color = given.get(value)
        if color is None:
            from lwi.labels import default_color

            color = default_color(name, value)
        specs.append(SegmentSpec(value, name, color_to_float(color), terminology_entry(name)))
    return specs


def specs_from_metadata(metadata: Mapping[str, Any]) -> List[SegmentSpec]:
    """The segments of a model bundle, from its metadata (``lwi info MODEL --json``)."""
    labels = metadata.get("labels")
    if labels is None and isinstance(metadata.get("lwi"), Mapping):
        labels = metadata["lwi"].get("labels")
    if not labels:
        raise ValueError("The model's metadata lists no labels.")
    return segment_specs(labels)


def color_table_rows(specs: Sequence[SegmentSpec]) -> List[Tuple[int, str, RGBFloat]]:
    """``(value, name, rgb)`` rows for a colour table, background included as value 0, so a label
    map imported through the table gets one named segment per label."""
    rows: List[Tuple[int, str, RGBFloat]] = [(0, "background", (0.0, 0.0, 0.0))]
    for spec in specs:
        rows.append((spec.value, spec.name, spec.color if spec.color is not None else (0.5, 0.5, 0.5)))
    return rows


def unique_names(names: Iterable[str]) -> List[str]:
    """Names made unique in order (``liver, liver`` -> ``liver, liver_2``): Slicer segment IDs must differ."""
    seen: Dict[str, int] = {}
    result = []
    for name in names:
        base = name.strip() or "segment"
        count = seen.get(base.lower(), 0) + 1
        seen[base.lower()] = count
        result.append(base if count == 1 else f"{base}_{count}")
    return result
