"""Per-label training Dice in Step 2's progress, and the warning when a label is not being learned."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from lwi.data.phantoms import write_phantom_dataset
from lwi.label_watch import NOT_LEARNED_DICE, TrainingDice
from lwi.progress import Progress


def test_training_dice_per_label():
    targets = torch.zeros(2, 1, 4, 4, 4)
    targets[:, :, :2] = 1
    targets[:, :, 2:3] = 2  # label 3 is absent
    perfect = torch.nn.functional.one_hot(targets[:, 0].long(), 4).permute(0, 4, 1, 2, 3).float()
    dice = [float(v) for v in TrainingDice(4).update(perfect, targets)]
    assert dice[:2] == [1.0, 1.0] and math.isnan(dice[2])  # absent and not predicted: unknown
    background = torch.zeros(2, 4, 4, 4, 4)
    background[:, 0] = 1.0
    dice = [float(v) for v in TrainingDice(4).update(background, targets)]
    assert dice[:2] == [0.0, 0.0]


@pytest.mark.slow
def test_a_label_not_learned_is_reported_during_and_after_the_run(tmp_path, one_thread):
    from lwi.strategies import train

    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(32, 32, 24), spacing=(6.0, 6.0, 8.0))
    stream = io.StringIO()
    summary = train(
        data, tmp_path / "m.lwi.safetensors", strategy="scratch", device="cpu", progress=Progress("json", stream=stream),
        arch="segresnet", arch_params={"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
        roi=(32, 32, 16), cube_size=8, batch_size=2, pretrain_epochs=1, epochs=5, iterations_per_epoch=2,
        lr=1e-9,  # nothing can be learned: every label stays at the untrained network's Dice
        val_fraction=0.2,  # a validation case (below 10 cases only on request): its Dice per label is checked too
    )
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    lines = [e for e in events if e["event"] == "progress" and e.get("train_dice") is not None]
    assert lines and all(len(e["train_dice"]) == 4 for e in lines)  # liver, spleen, kidney, vertebra
    warnings = [e for e in events if e["event"] == "warning" and e.get("kind") == "label_not_learned"]
    during = [w for w in warnings if w["when"] == "training"]
    end = [w for w in warnings if w["when"] == "end"]
    assert during and end
    # Reported during the run: before the last iteration, after the grace period.
    assert all(w["iteration"] < 12 for w in during)
    names = ["liver", "spleen", "kidney", "vertebra"]
    for w in during:  # each named label's training Dice at that point was below the threshold
        line = max((e for e in lines if e["iteration"] <= w["iteration"]), key=lambda e: e["iteration"])
        assert w["labels"] and all(line["train_dice"][names.index(n)] < NOT_LEARNED_DICE for n in w["labels"])
    assert set(end[0]["labels"]) == set(summary["labels_not_learned"]) and summary["labels_not_learned"]
    # Validation Dice per label is in the progress too.
    assert any(isinstance(e.get("dice"), dict) and set(e["dice"]) == set(names) for e in events)
