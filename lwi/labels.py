"""The label table: value, name and display colour of every segment a model produces.

Names come from the dataset (``dataset.json``); colours are the usual ones of well-known structures
(close to 3D Slicer's GenericAnatomyColors / terminology colours), so a liver looks like a liver in
every viewer. Names are matched case-insensitively and tolerate the common spellings found in public
datasets ("left kidney", "kidney_left", "Kidney (L)", "IVC", "postcava", "vertebrae_L3", ...). Other names
get a colour from a distinct fallback palette chosen by the label value.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

RGB = Tuple[int, int, int]

# Canonical structure -> colour (0-255 RGB). Values follow Slicer's anatomy colours where Slicer has one.
_COLORS: Dict[str, RGB] = {
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney": (185, 102, 83),
    "pancreas": (249, 180, 111),
    "stomach": (216, 132, 105),
    "gallbladder": (139, 150, 98),
    "aorta": (224, 97, 76),
    "inferior vena cava": (0, 151, 206),
    "portal vein": (0, 151, 206),
    "vein": (0, 151, 206),
    "artery": (216, 101, 79),
    "esophagus": (211, 171, 143),
    "adrenal gland": (249, 186, 150),
    "duodenum": (255, 253, 229),
    "small bowel": (205, 167, 142),
    "colon": (204, 168, 143),
    "rectum": (214, 160, 140),
    "bladder": (222, 154, 132),
    "prostate": (230, 158, 140),
    "lung": (197, 165, 145),
    "trachea": (182, 228, 255),
    "heart": (206, 110, 84),
    "thyroid": (220, 245, 20),
    "bone": (241, 214, 145),
    "muscle": (192, 104, 88),
    "fat": (230, 220, 70),
    "skin": (177, 122, 101),
    "brain": (250, 250, 225),
    "hippocampus": (220, 216, 20),
    "hippocampus anterior": (220, 216, 20),
    "hippocampus posterior": (92, 162, 109),
    "tumor": (144, 238, 144),
    "cyst": (205, 205, 100),
    "edema": (139, 206, 232),
    "necrosis": (128, 79, 54),
}

# Alias (normalised, side words removed) -> canonical key. Longer aliases are tried first, so
# "portal vein" wins over "vein" and "hippocampus anterior" over "hippocampus".
_ALIASES: Dict[str, str] = {
    "liver": "liver", "hepar": "liver",
    "spleen": "spleen", "splenic": "spleen", "lien": "spleen",
    "kidney": "kidney", "kidneys": "kidney", "renal": "kidney",
    "pancreas": "pancreas", "pancreatic": "pancreas",
    "stomach": "stomach", "gastric": "stomach",
    "gallbladder": "gallbladder", "gall bladder": "gallbladder", "gb": "gallbladder",
    "aorta": "aorta", "aortic": "aorta",
    "inferior vena cava": "inferior vena cava", "ivc": "inferior vena cava",
    "postcava": "inferior vena cava", "vena cava inferior": "inferior vena cava",
    "vena cava": "inferior vena cava",
    "portal vein": "portal vein", "portal": "portal vein",
    "vein": "vein", "vena": "vein", "veins": "vein",
    "artery": "artery", "arteries": "artery",
    "esophagus": "esophagus", "oesophagus": "esophagus",
    "adrenal gland": "adrenal gland", "adrenal": "adrenal gland", "adrenals": "adrenal gland",
    "adrenal glands": "adrenal gland", "suprarenal gland": "adrenal gland",
    "duodenum": "duodenum",
    "small bowel": "small bowel", "small intestine": "small bowel", "bowel": "small bowel",
    "colon": "colon", "large bowel": "colon", "large intestine": "colon",
    "rectum": "rectum",
    "bladder": "bladder", "urinary bladder": "bladder",
    "prostate": "prostate", "prostate gland": "prostate",
    "lung": "lung", "lungs": "lung", "pulmonary": "lung",
    "trachea": "trachea",
    "heart": "heart", "myocardium": "heart",
    "thyroid": "thyroid", "thyroid gland": "thyroid",
    "bone": "bone", "bones": "bone", "vertebra": "bone", "vertebrae": "bone", "spine": "bone",
    "rib": "bone", "ribs": "bone", "sacrum": "bone", "femur": "bone", "hip": "bone", "pelvis": "bone",
    "skull": "bone", "humerus": "bone", "scapula": "bone", "clavicula": "bone", "clavicle": "bone",
    "sternum": "bone",
    "muscle": "muscle", "fat": "fat", "skin": "skin",
    "brain": "brain",
    "hippocampus": "hippocampus",
    "hippocampus anterior": "hippocampus anterior", "anterior hippocampus": "hippocampus anterior",
    "anterior": "hippocampus anterior", "hippocampus head": "hippocampus anterior",
    "hippocampus posterior": "hippocampus posterior", "posterior hippocampus": "hippocampus posterior",
    "posterior": "hippocampus posterior", "hippocampus body": "hippocampus posterior",
    "tumor": "tumor", "tumour": "tumor", "tumors": "tumor", "tumours": "tumor", "lesion": "tumor",
    "lesions": "tumor", "cancer": "tumor", "neoplasm": "tumor", "mass": "tumor", "metastasis": "tumor",
    "cyst": "cyst", "cysts": "cyst",
    "edema": "edema", "oedema": "edema",
    "necrosis": "necrosis", "necrotic": "necrosis",
}

_LESIONS = {"tumor", "cyst", "edema", "necrosis"}

# Side words are ignored for matching ("kidney_left" and "right kidney" are both kidneys).
_SIDE_WORDS = {"left", "right", "l", "r", "lt", "rt", "sinister", "dexter"}

# Fallback palette for names we do not know: distinct, saturated, readable on grey and black.
_PALETTE: Tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)

BACKGROUND_COLOR: RGB = (0, 0, 0)


@dataclass(frozen=True)
class LabelInfo:
    """One segment: its voxel ``value``, display ``name`` and ``color`` (0-255 RGB)."""

    value: int
    name: str
    color: RGB

    @property
    def color_float(self) -> Tuple[float, float, float]:
        """The colour as 0-1 floats (what Slicer's segment API and NRRD segment headers take)."""
        return (self.color[0] / 255.0, self.color[1] / 255.0, self.color[2] / 255.0)

    def to_dict(self) -> dict:
        """JSON form used in model bundles: ``{"value", "name", "color": [r, g, b]}``."""
        return {"value": int(self.value), "name": self.name, "color": [int(c) for c in self.color]}

    @classmethod
    def from_dict(cls, d: dict) -> LabelInfo:
        """The JSON form back; the colour is optional (lwi/schema.py), the usual one when missing."""
        value, name = int(d["value"]), str(d["name"])
        color = d.get("color")
        rgb = tuple(int(c) for c in color) if color is not None else default_color(name, value)
        return cls(value, name, rgb)  # type: ignore[arg-type]


def _words(name: str) -> List[str]:
    """Lower-case words of a name, with separators, brackets and digits-only parts removed."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def canonical_structure(name: str) -> Optional[str]:
    """The well-known structure a label name refers to (e.g. ``"kidney"`` for ``"Kidney_Left"``), or None."""
    words = [w for w in _words(name) if w not in _SIDE_WORDS]
    if not words:
        return None
    phrase = " ".join(words)
    if phrase in _ALIASES:
        return _ALIASES[phrase]
    # Otherwise the longest alias found as a run of whole words ("lung_upper_lobe_left" -> lung,
    # "kidney_cyst_left" -> cyst, since a more specific word after the organ names the lesion).
    padded = f" {phrase} "
    best: Optional[Tuple[bool, int, int, str]] = None
    for alias, key in _ALIASES.items():
        pos = padded.find(f" {alias} ")
        if pos >= 0:
            # Lesions beat the organ they are in ("liver tumour", "kidney_cyst_left"); then longer
            # aliases; then the one that comes last (the head noun in English names).
            rank = (key in _LESIONS, len(alias.split()), pos, key)
            if best is None or rank[:3] > best[:3]:
                best = rank
    return best[3] if best else None


def fallback_color(value: int) -> RGB:
    """A distinct colour for label ``value`` (palette first, then golden-ratio hues)."""
    if 1 <= value <= len(_PALETTE):
        return _PALETTE[value - 1]
    hue = (0.618033988749895 * value) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def default_color(name: str, value: int) -> RGB:
    """The usual colour of a well-known structure named ``name``, else a fallback colour for ``value``."""
    if value == 0 and name.strip().lower() in ("", "background", "bg", "clear label"):
        return BACKGROUND_COLOR
    key = canonical_structure(name)
    if key is not None:
        return _COLORS[key]
    return fallback_color(value)


def _shade(color: RGB, step: int) -> RGB:
    """A visibly different variant of ``color`` (alternately lighter and darker)."""
    factor = 1.0 + 0.18 * ((step + 1) // 2) * (1 if step % 2 else -1)
    return tuple(max(0, min(255, int(round(c * factor)))) for c in color)  # type: ignore[return-value]


def label_table(labels: Dict[int, str], include_background: bool = False) -> List[LabelInfo]:
    """The label table for ``{value: name}``, sorted by value.

    Background (value 0) is left out unless ``include_background``. Two structures that would get
    the same colour (left and right kidney) are shaded apart so every segment is distinguishable.
    """
    table: List[LabelInfo] = []
    used = set()
    by_value = {int(k): str(v) for k, v in labels.items()}  # tolerate "1": "liver" from JSON
    for value in sorted(by_value):
        name = by_value[value]
        if value == 0 and not include_background:
            continue
        color = default_color(name, value)
        step = 0
        while color in used and step < 8 and value != 0:
            step += 1
            color = _shade(default_color(name, value), step)
        used.add(color)
        table.append(LabelInfo(value, name, color))
    return table


def table_from_dicts(items: Iterable[dict]) -> List[LabelInfo]:
    """Rebuild a label table from its JSON form (as stored in a model bundle)."""
    return [LabelInfo.from_dict(d) for d in items]


def labels_dict(table: Sequence[LabelInfo]) -> Dict[int, str]:
    """``{value: name}`` of a label table."""
    return {info.value: info.name for info in table}
