"""File names for the files the modules exchange with the core, and the user's model folder."""

from __future__ import annotations

import os
import re
import tempfile
from typing import List, Optional

from LWICommon.vocabulary import names

#: Model bundles are single files with this suffix (defined in lwi/names.py).
MODEL_SUFFIX = names.MODEL_SUFFIX
#: Application setting (``qt.QSettings``) naming the folder where LWITraining publishes models and
#: from which LWISegmentation lists them.
MODELS_FOLDER_SETTING = "LWI/ModelsFolder"

#: Uncompressed NRRD keeps the exact geometry (origin, spacing, direction) and is fast to write.
VOLUME_EXTENSION = ".nrrd"


def safe_stem(name: str, fallback: str = "volume", max_length: int = 64) -> str:
    """A node name as a portable file stem: letters, digits, ``-`` and ``_`` only."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:max_length]
    return stem or fallback


def make_run_dir(base_dir: Optional[str] = None, prefix: str = "lwi-") -> str:
    """A new, empty temporary folder for one run (inputs written for it, its outputs)."""
    if base_dir:
        os.makedirs(base_dir, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=base_dir)


def input_volume_path(run_dir: str, node_name: str, index: int = 0) -> str:
    """Where a run's ``index``-th input volume is written."""
    return os.path.join(run_dir, f"input{index}-{safe_stem(node_name)}{VOLUME_EXTENSION}")


def output_labelmap_path(run_dir: str, node_name: str) -> str:
    """Where a run's output label map is written by ``lwi segment``."""
    return os.path.join(run_dir, f"{safe_stem(node_name)}-segmentation{VOLUME_EXTENSION}")


def model_name_from_path(path: str) -> str:
    """``/models/liver.lwi.safetensors`` -> ``"liver"``."""
    base = os.path.basename(path)
    return base[: -len(MODEL_SUFFIX)] if base.endswith(MODEL_SUFFIX) else os.path.splitext(base)[0]


def model_path(folder: str, name: str) -> str:
    """The bundle file for a model called ``name`` in ``folder``."""
    return os.path.join(folder, safe_stem(name, fallback="model") + MODEL_SUFFIX)


def list_models(folder: Optional[str]) -> List[str]:
    """The model bundles in ``folder`` (not recursive), sorted by name; [] if it does not exist."""
    if not folder or not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f.endswith(MODEL_SUFFIX) and not f.startswith(".")
    )


def default_models_folder(home: Optional[str] = None) -> str:
    """Where models go unless the user picks a folder: ``~/LWI/models``."""
    return os.path.join(home or os.path.expanduser("~"), "LWI", "models")


def models_folder(folder: Optional[str] = None, setting: Optional[str] = None, home: Optional[str] = None) -> str:
    """The one rule for where models live: ``folder`` if given, else the ``LWI/ModelsFolder``
    application setting (``setting``; read from Qt when None), else :func:`default_models_folder`."""
    if folder and folder != ".":
        return folder
    if setting is None:
        setting = models_folder_setting()
    return setting or default_models_folder(home)


def models_folder_setting() -> str:
    """The ``LWI/ModelsFolder`` application setting ("" when unset or outside Slicer)."""
    try:
        import qt
    except ImportError:  # plain Python (tests, the CLI): no application settings
        return ""
    return str(qt.QSettings().value(MODELS_FOLDER_SETTING) or "")


def default_training_folder(home: Optional[str] = None) -> str:
    """Where "Add to training set" collects labelled cases unless the user picks a folder:
    ``~/LWI/training-cases`` (MSD layout, a data folder for LWITraining and ``lwi train``)."""
    return os.path.join(home or os.path.expanduser("~"), "LWI", "training-cases")
