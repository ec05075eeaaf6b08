"""A model's training-run folder (plain Python): ``<models>/training-runs/<name>/`` holds the cases
exported for the run (``data/``), its settings (``settings.json``) and the core's checkpoints, so a
cancelled or failed run can be resumed; the finished model is then published into the models folder.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Optional

from LWICommon import files
from LWICommon.vocabulary import names

#: Sub-folder of the models folder where each model's training run lives.
RUNS_FOLDER = "training-runs"
SETTINGS_FILE = "settings.json"
DATA_FOLDER = "data"
#: Checkpoints the core leaves for Resume (its naming: lwi.names.derived_path): Step 2's, Step 1's.
RESUMABLE_INFIXES = (names.LAST_INFIX, names.STEP1_INFIX)


def run_folder(models_folder: str, model_name: str) -> str:
    """The run folder of ``model_name`` under ``models_folder``."""
    return os.path.join(models_folder, RUNS_FOLDER, files.safe_stem(model_name, "model"))


def can_resume(run: str, model_name: str) -> bool:
    """Whether an interrupted run left its settings and a checkpoint to continue from."""
    out = files.model_path(run, model_name)
    return os.path.isfile(os.path.join(run, SETTINGS_FILE)) and any(
        names.derived_path(out, infix).is_file() for infix in RESUMABLE_INFIXES
    )


def write_settings(run: str, settings: Dict[str, Any], models_folder: Optional[str]) -> None:
    """Store the run's settings (a ``TrainingSettings.to_dict()``) for Resume."""
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, SETTINGS_FILE), "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "modelsFolder": models_folder}, f, indent=2)


def read_settings(run: str) -> Dict[str, Any]:
    """The settings dict stored by :func:`write_settings`."""
    with open(os.path.join(run, SETTINGS_FILE), encoding="utf-8") as f:
        return json.load(f)["settings"]


def publish_model(checkpoint: str, final_path: str) -> str:
    """Copy the trained bundle to ``final_path`` atomically (a reader never sees half a file)."""
    partial = final_path + ".partial"
    shutil.copyfile(checkpoint, partial)
    os.replace(partial, final_path)
    return final_path
