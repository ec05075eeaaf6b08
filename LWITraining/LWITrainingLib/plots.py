"""Training progress events -> the columns of the live loss and Dice plot (plain Python).

``lwi train --progress json`` reports, per stage (``pretrain`` = Step 1, ``finetune``/``train`` =
Step 2), progress events with ``iteration``, ``iterations``, ``epochs`` and loss terms, and after
each validation the Dice per label (``dice: {name: value}``, ``mean_dice``). :class:`TrainingCurves`
turns them into tables (one per series group, all with the same x column: the epoch counted over the
whole run, Step 2 continuing after Step 1) that the Slicer module copies into table nodes and plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

X_COLUMN = "epoch"
STEP1_STAGES = ("pretrain", "step1")

STAGE_TITLES = {
    "pretrain": "Step 1: self-supervised pre-training",  # LWI initialisation or AnatoMask
    "step1": "Step 1: self-supervised pre-training",
    "finetune": "Step 2: fine-tuning",
    "train": "Step 2: training",
    "step2": "Step 2: fine-tuning",
    "preprocess": "Preparing the cases",
}


def stage_title(stage: Optional[str]) -> str:
    """The user's name of a stage (``"pretrain"`` -> ``"Step 1: self-supervised pre-training"``)."""
    return STAGE_TITLES.get(str(stage), str(stage or "working").capitalize())


@dataclass(frozen=True)
class SeriesSpec:
    """One plotted line: the table it reads, its y column, and its legend name."""

    table: str
    column: str
    name: str


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class TrainingCurves:
    """Accumulates progress events into plot tables.

    Tables: ``"step1"`` (columns epoch, loss, reconstruction, order), ``"step2"`` (epoch, loss) and
    ``"validation"`` (epoch, mean Dice, then one column per label as first reported). A resumed
    run's events simply continue the tables.
    """

    def __init__(self) -> None:
        self.rows: Dict[str, List[Dict[str, float]]] = {"step1": [], "step2": [], "validation": []}
        self.labels: List[str] = []
        self._step1_epochs = 0  # Step 2's x starts after Step 1's epochs

    def add(self, event: Mapping[str, Any]) -> bool:
        """Take one event; returns True when a table changed (so the plot needs updating)."""
        if event.get("event") != "progress":
            return False
        stage = str(event.get("stage") or "")
        if stage == "preprocess" or stage not in STAGE_TITLES:
            return False
        x = self._x(event, stage)
        if x is None:
            return False
        changed = False
        dice = event.get("dice")
        if isinstance(dice, Mapping):
            row = {X_COLUMN: x}
            mean = _number(event.get("mean_dice"))
            row["mean Dice"] = mean if mean is not None else float("nan")
            for name, value in dice.items():
                if str(name) not in self.labels:
                    self.labels.append(str(name))
                number = _number(value)
                row[f"Dice {name}"] = number if number is not None else float("nan")
            self.rows["validation"].append(row)
            return True  # a validation event repeats the epoch's losses: do not count them twice
        loss = _number(event.get("loss"))
        if loss is None:
            return changed
        if stage in STEP1_STAGES:
            row = {X_COLUMN: x, "loss": loss}
            rec = _number(event.get("reconstruction"))
            if rec is not None:
                row["reconstruction"] = rec
            order = event.get("order")
            terms = [_number(v) for v in order] if isinstance(order, (list, tuple)) else [_number(order)]
            terms = [t for t in terms if t is not None]
            if terms:
                row["order"] = sum(terms)
            self.rows["step1"].append(row)
        else:
            self.rows["step2"].append({X_COLUMN: x, "loss": loss})
        return True

    def _x(self, event: Mapping[str, Any], stage: str) -> Optional[float]:
        """The run epoch of an event: fractional within its stage, Step 2 after Step 1."""
        epochs = _number(event.get("epochs"))
        done, total = _number(event.get("iteration")), _number(event.get("iterations"))
        if epochs and done is not None and total:
            x = done / total * epochs
        else:
            x = _number(event.get("epoch"))
            if x is None:
                return None
        if stage in STEP1_STAGES:
            if epochs:
                self._step1_epochs = int(epochs)
            return x
        return x + self._step1_epochs

    def columns(self, table: str) -> List[str]:
        """The column names of a table, x first."""
        if table == "step1":
            names = [X_COLUMN, "loss", "reconstruction", "order"]
            present = {k for row in self.rows["step1"] for k in row}
            return [n for n in names if n == X_COLUMN or n in present]
        if table == "step2":
            return [X_COLUMN, "loss"]
        return [X_COLUMN, "mean Dice"] + [f"Dice {name}" for name in self.labels]

    def table(self, table: str) -> Tuple[List[str], List[List[float]]]:
        """``(column names, rows)`` of a table; a value a row lacks is NaN."""
        columns = self.columns(table)
        return columns, [[float(row.get(c, float("nan"))) for c in columns] for row in self.rows[table]]

    def series(self) -> List[SeriesSpec]:
        """The lines to draw, for the tables that have rows."""
        specs: List[SeriesSpec] = []
        titles = {"step1": "Step 1", "step2": "Step 2"}
        for table in ("step1", "step2"):
            if self.rows[table]:
                for column in self.columns(table)[1:]:
                    specs.append(SeriesSpec(table, column, f"{titles[table]} {column}"))
        if self.rows["validation"]:
            for column in self.columns("validation")[1:]:
                specs.append(SeriesSpec("validation", column, f"validation {column}"))
        return specs
