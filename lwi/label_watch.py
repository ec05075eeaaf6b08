"""Per-label training Dice, and the warning when a label is not being learned.

A label the network never predicts leaves the mean loss looking fine; its Dice stays at 0. Step 2
therefore reports each label's Dice on the training crops (``train_dice`` in its progress lines) and
:class:`LabelWatch` warns, during the run and at its end, when a label's training Dice (or, at the
end, its validation Dice) is still below :data:`NOT_LEARNED_DICE` once :data:`GRACE_SHARE` of the
iterations are done.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch

NOT_LEARNED_DICE = 0.05
GRACE_SHARE = 0.3  # the share of Step 2 after which a label still at Dice ~0 is reported
DECAY = 0.9  # the running Dice forgets ~10 iterations back


class TrainingDice:
    """Running hard Dice per label on the training crops (pooled over recent batches, on the device).

    ``update(logits, targets)`` returns one scalar tensor per label (label values 1..C-1 in order);
    no GPU synchronisation happens here.
    """

    def __init__(self, n_channels: int):
        self.n_labels = int(n_channels) - 1
        self.overlap: Optional[torch.Tensor] = None
        self.total: Optional[torch.Tensor] = None

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> List[torch.Tensor]:
        pred = logits.argmax(dim=1)
        truth = targets[:, 0].long()
        values = torch.arange(1, self.n_labels + 1, device=logits.device).view(-1, 1)
        p = pred.reshape(1, -1) == values  # [L, voxels]
        t = truth.reshape(1, -1) == values
        overlap = 2.0 * (p & t).sum(dim=1).float()
        total = (p.sum(dim=1) + t.sum(dim=1)).float()
        if self.overlap is None:
            self.overlap, self.total = overlap, total
        else:
            self.overlap = DECAY * self.overlap + overlap
            self.total = DECAY * self.total + total
        # No voxel of the label in the recent crops and none predicted: nothing to learn from yet, NaN.
        dice = torch.where(self.total > 0, self.overlap / self.total.clamp_min(1e-6), torch.full_like(total, float("nan")))
        return list(dice.unbind(0))


class LabelWatch:
    """Warns through ``progress`` (a ``warning`` event and a log line) about labels not being learned.

    Call :meth:`check` after each epoch of Step 2 (with the trainer) and :meth:`finish` at the end.
    """

    def __init__(self, labels: Mapping[int, str], progress: Any):
        self.names = [str(v) for k, v in sorted((int(k), v) for k, v in labels.items()) if k != 0]
        self.progress = progress
        self.warned: set = set()

    def _train_dice(self, trainer: Any) -> Dict[str, Optional[float]]:
        for entry in reversed(trainer.history):
            values = entry.get("train_dice")
            if values is not None:
                return {n: _number(v) for n, v in zip(self.names, values)}
        return {}

    def check(self, trainer: Any) -> None:
        if trainer.iteration < GRACE_SHARE * trainer.total_iterations:
            return
        dice = self._train_dice(trainer)
        stuck = [n for n, v in dice.items() if v is not None and v < NOT_LEARNED_DICE and n not in self.warned]
        if stuck:
            self.warned.update(stuck)
            self._warn(
                stuck, "training", trainer,
                f"{_names(stuck)} {'is' if len(stuck) == 1 else 'are'} not being learned: training Dice "
                f"{_values(dice, stuck)} after {trainer.iteration} of {trainer.total_iterations} iterations.",
            )

    def finish(self, trainer: Any) -> List[str]:
        """The end-of-run check (training and validation Dice); returns the labels not learned."""
        dice = self._train_dice(trainer)
        stuck = [n for n, v in dice.items() if v is not None and v < NOT_LEARNED_DICE]
        validation = (trainer.best or trainer.last_validation or {}).get("dice") or {}
        stuck_val = [n for n in self.names if validation.get(n) is not None and validation[n] < NOT_LEARNED_DICE]
        missed = sorted(set(stuck) | set(stuck_val), key=self.names.index)
        if missed:
            parts = []
            if stuck:
                parts.append(f"training Dice {_values(dice, stuck)}")
            if stuck_val:
                parts.append(f"validation Dice {_values(validation, stuck_val)}")
            self._warn(
                missed, "end", trainer,
                f"At the end of training {_names(missed)} {'was' if len(missed) == 1 else 'were'} not learned "
                f"({'; '.join(parts)}). The model will not segment {'it' if len(missed) == 1 else 'them'}: train longer "
                "(--time or --iterations), check that the label maps hold these values, or add cases.",
            )
        return missed

    def _warn(self, labels: List[str], when: str, trainer: Any, message: str) -> None:
        self.progress.warn(message, kind="label_not_learned", labels=labels, when=when, iteration=trainer.iteration)


def _number(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value  # NaN: the label was not in the recent crops


def _names(names: List[str]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _values(dice: Mapping[str, Any], names: List[str]) -> str:
    return ", ".join(f"{n} {float(dice[n]):.3f}" for n in names)
