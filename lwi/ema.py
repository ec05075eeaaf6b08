"""EMA teachers (MedContext, AnatoMask): a frozen copy of a network that follows it by an exponential
moving average of its weights, and the schedules of the EMA momentum.

``T <- m * T + (1 - m) * S`` after each optimiser step; the teacher never receives gradients.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (no gradients, eval mode) to be updated by :func:`ema_update`."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.eval()


class WithTeacher(nn.Module):
    """A model holding an EMA teacher in ``self.teacher``: the teacher stays in eval mode whatever
    mode the model is put in (it follows the student by EMA, never by its own dropout or norm statistics)."""

    teacher: nn.Module

    def train(self, mode: bool = True) -> WithTeacher:
        super().train(mode)
        self.teacher.eval()
        return self


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``T <- m T + (1 - m) S`` for every parameter; buffers (e.g. norm statistics) are copied.

    Written as ``m T + (1 - m) S`` (not ``lerp``) so that m = 0 gives exactly S and m = 1 exactly T.
    """
    m = float(momentum)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(m).add_(s.detach().to(t.dtype), alpha=1.0 - m)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def cosine_schedule(
    index: int, total: int, start: float, end: float, warmup: int = 0, warmup_start: float = 0.0
) -> float:
    """The value at step ``index`` (0-based) of DINO's ``cosine_scheduler`` over ``total`` steps: a
    linear warmup from ``warmup_start`` to ``start`` over ``warmup`` steps, then a half cosine from
    ``start`` to ``end`` (reached at ``index = total``)."""
    index = int(index)
    if index < warmup:
        return warmup_start + (start - warmup_start) * index / max(int(warmup) - 1, 1)
    span = max(int(total) - int(warmup), 1)
    progress = min(index - int(warmup), span) / span
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def ramp_schedule(epoch: float, epochs: int, start: float, end: float, ramp_fraction: float = 0.25) -> float:
    """Linear from ``start`` at epoch 0 to ``end`` after ``ramp_fraction`` of the epochs, then constant
    (AnatoMask's EMA decay 0.999 -> 0.9999 over the first quarter of training)."""
    ramp = max(ramp_fraction * int(epochs), 1e-12)
    return start + (end - start) * min(1.0, float(epoch) / ramp)


def run_scaled(decay: float, reference_iterations: int, iterations: int, floor: float = 0.9) -> float:
    """``decay`` for a run of ``iterations`` when it was tuned for ``reference_iterations``: the EMA's time
    constant 1 / (1 - d) keeps its share of the run, 1 - d' = (1 - d) x reference / iterations, so a short
    run's teacher follows its student as the long run's did. Never slower than ``decay`` itself (runs
    at least as long as the reference keep it) and never below ``floor`` (a time constant of 10
    iterations at 0.9)."""
    if iterations >= reference_iterations or decay <= floor:
        return float(decay)
    return max(float(floor), 1.0 - (1.0 - float(decay)) * reference_iterations / max(int(iterations), 1))
