"""EMA teachers (reference checklist items 11 and 18): the update identity, the frozen teacher, and
the momentum schedules of MedContext (paper and code) and AnatoMask."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lwi.ema import cosine_schedule, ema_update, make_teacher, ramp_schedule
from lwi.strategies.medcontext import momentum_updater


def _pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv3d(1, 3, 3), nn.BatchNorm3d(3))
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student[1].running_mean.add_(1.0)
    return student, teacher


def test_teacher_is_a_frozen_copy():
    student, teacher = _pair()
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert not teacher.training
    assert teacher[0].weight.data_ptr() != student[0].weight.data_ptr()


@pytest.mark.parametrize("m", [0.0, 0.3, 0.996, 1.0])
def test_ema_update_identity(m):
    student, teacher = _pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, m)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        expected = m * before[name] + (1 - m) * s.detach()
        assert torch.allclose(t, expected, rtol=0, atol=1e-6)
        if m == 0.0:
            assert torch.equal(t, s.detach())  # exactly the student
        if m == 1.0:
            assert torch.equal(t, before[name])  # exactly unchanged
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)  # buffers follow the student


def test_paper_momentum_is_a_cosine_over_the_global_iteration():
    total = 1000
    values = [cosine_schedule(i, total, 0.996, 1.0) for i in range(total)]
    assert values[0] == pytest.approx(0.996)
    assert values[total // 2] == pytest.approx(0.998)
    assert values[-1] == pytest.approx(1.0, abs=1e-7)
    assert all(a <= b for a, b in zip(values, values[1:]))
    updater = momentum_updater("paper", 0.996, 1.0, iterations_per_epoch=7)
    # Called after step t (trainer.iteration = t): index t - 1 of the whole run's schedule.
    assert updater(SimpleNamespace(iteration=1, total_iterations=total, epochs=143)) == pytest.approx(0.996)
    assert updater(SimpleNamespace(iteration=501, total_iterations=total, epochs=143)) == pytest.approx(0.998)


def test_code_momentum_reproduces_the_authors_near_zero_value():
    # UNETR code: 18 cases, batch 1, 5000 epochs, warmup 50 epochs; one update per epoch with
    # schedule[17] = 0.996 * 17 / 899 ~ 0.0188, whatever the epoch.
    updater = momentum_updater("code", 0.996, 1.0, iterations_per_epoch=18)
    total = 5000 * 18
    assert updater(SimpleNamespace(iteration=5, total_iterations=total, epochs=5000)) is None  # mid-epoch
    for epoch in (1, 100, 4000):
        m = updater(SimpleNamespace(iteration=18 * epoch, total_iterations=total, epochs=5000))
        assert m == pytest.approx(0.996 * 17 / 899)
        assert m == pytest.approx(0.0188, abs=1e-4)


def test_anatomask_decay_schedule():
    # Item 18: 0.999 at epoch 0, 0.99945 at 125, 0.9999 from 250 on (E = 1000).
    assert ramp_schedule(0, 1000, 0.999, 0.9999) == pytest.approx(0.999)
    assert ramp_schedule(125, 1000, 0.999, 0.9999) == pytest.approx(0.99945)
    assert ramp_schedule(250, 1000, 0.999, 0.9999) == pytest.approx(0.9999)
    assert ramp_schedule(900, 1000, 0.999, 0.9999) == pytest.approx(0.9999)


def _initial_share_left(total, start, end):
    """The weight of the teacher's initial parameters after ``total`` updates of the ramp schedule."""
    share = 1.0
    for i in range(total):
        share *= ramp_schedule(i, total, start, end)
    return share


def test_run_scaled_decay_lets_a_short_runs_teacher_learn():
    """M2: AnatoMask's 0.999 -> 0.9999 were tuned for ~204,000 iterations; unscaled, a 300-iteration
    teacher keeps most of its random start. Scaled, its time constant is the same share of the run."""
    from lwi.ema import run_scaled
    from lwi.strategies.anatomask import REFERENCE_ITERATIONS

    paper = _initial_share_left(300, 0.999, 0.9999)
    scaled = [run_scaled(d, REFERENCE_ITERATIONS, 300) for d in (0.999, 0.9999)]
    assert paper > 0.75
    assert scaled == pytest.approx([0.9, 1 - 0.0001 * REFERENCE_ITERATIONS / 300])
    assert _initial_share_left(300, *scaled) < 1e-6
    # A run as long as the reference (or longer) keeps the paper's constants.
    assert run_scaled(0.999, REFERENCE_ITERATIONS, REFERENCE_ITERATIONS) == 0.999
    assert run_scaled(0.9999, REFERENCE_ITERATIONS, 10 * REFERENCE_ITERATIONS) == 0.9999
    # At 30,000 iterations: 0.9932 -> 0.99932, a time constant of 147 -> 1470 iterations.
    assert run_scaled(0.999, REFERENCE_ITERATIONS, 30_000) == pytest.approx(1 - 0.001 * 204_000 / 30_000)
