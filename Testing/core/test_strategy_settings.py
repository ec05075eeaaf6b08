"""The MedContext and AnatoMask settings: defaults that do not collide with LWI's, checks with one
clear sentence, a JSON round trip (resume), and the CLI flags reaching the settings."""

from __future__ import annotations

import argparse

import pytest

from lwi.commands import train as train_command
from lwi.commands.training_options import settings_from_args
from lwi.errors import LWIError
from lwi.strategies.settings import Settings, make_settings


def test_defaults_follow_the_papers_and_leave_lwi_alone():
    s = Settings()
    assert s.mask_ratio == 0.4  # LWI's own
    assert s.context_mask_ratio == 0.6 and s.anatomask_mask_ratio == 0.6
    assert s.consistency_weight == 0.5 and s.ema_momentum == (0.996, 1.0)
    assert s.guided_final_ratio == 0.5 and s.anatomask_ema_decay == (0.999, 0.9999)
    # The papers' constants, scaled to the run by default (M1-M3, M18); "paper"/"code" keep them as written.
    assert s.ema_mode == "run" and s.anatomask_schedule == "run"
    assert s.consistency_mode == "share" and s.consistency_share == 0.5 and s.pretrain_lr is None
    assert s.anatomask_transfer == "encoder" and s.mim_patch_size == 16 and s.clip_grad_norm is None


def test_round_trip_keeps_tuples():
    s = make_settings({"ema_momentum": [0.99, 1.0], "anatomask_ema_decay": (0.9, 0.99), "ema_mode": "code"})
    back = Settings.from_dict(s.to_dict())
    assert back == s and back.ema_momentum == (0.99, 1.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ema_mode": "typo"}, "ema_mode"),
        ({"context_tube_axis": "w"}, "context_tube_axis"),
        ({"anatomask_transfer": "decoder"}, "anatomask_transfer"),
        ({"context_mask_ratio": 1.0}, "context_mask_ratio"),
        ({"ema_momentum": (1.0, 0.9)}, "ema_momentum"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(LWIError, match=message):
        make_settings(options)


def test_a_resumed_run_keeps_its_strategy_settings():
    stored = make_settings({"consistency_weight": 0.4}).to_dict()
    assert make_settings({"epochs": 10}, stored).consistency_weight == 0.4
    with pytest.raises(LWIError, match="consistency_weight"):
        make_settings({"consistency_weight": 0.5}, stored)


def test_cli_flags_reach_the_settings():
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    args = parser.parse_args([
        "--data", "d", "--out", "o", "--strategy", "medcontext", "--consistency-weight", "0.25",
        "--ema-mode", "code", "--ema-momentum", "0.99", "1", "--context-tube-axis", "x", "--clip-grad-norm", "5",
        "--anatomask-transfer", "all", "--anatomask-ema-decay", "0.9", "0.99", "--teacher-error-target", "raw",
    ])
    s = make_settings(settings_from_args(args))
    assert (s.consistency_weight, s.ema_mode, s.ema_momentum, s.context_tube_axis) == (0.25, "code", (0.99, 1.0), "x")
    assert (s.clip_grad_norm, s.anatomask_transfer, s.anatomask_ema_decay) == (5.0, "all", (0.9, 0.99))
    assert s.teacher_error_target == "raw"
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "d", "--out", "o", "--ema-mode", "typo"])


def test_warmup_is_a_small_share_of_the_stages_iterations_and_step1_may_have_its_own_lr():
    """M7: with 3 Step-1 epochs of 1250 iterations the warmup was one whole epoch (a third of Step 1);
    now it is 5 % of the iterations unless --warmup EPOCHS is given. M14: Step 1 takes pretrain_lr."""
    from lwi.strategies.settings import trainer_schedule

    s = make_settings({"lr": 1e-2, "pretrain_lr": 1e-4})
    step1 = trainer_schedule(s, 3, 1250, pretraining=True)
    assert step1["warmup_iterations"] == round(0.05 * 3750) and step1["lr"] == 1e-4
    step2 = trainer_schedule(s, 20, 1250)
    assert step2["warmup_iterations"] == 1250 and step2["lr"] == 1e-2
    assert trainer_schedule(s, 20, 1250, max_iterations=300)["warmup_iterations"] == 15
    given = make_settings({"warmup_epochs": 2})
    assert trainer_schedule(given, 3, 100, pretraining=True)["warmup_iterations"] == 200
    assert trainer_schedule(make_settings({}), 3, 10, pretraining=True)["lr"] == 1e-4  # default: lr


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"iterations_per_epoch": 0}, {"batch_size": -3}])
def test_batch_and_epoch_sizes_must_be_positive(options):
    """M12: these were accepted and failed later with a division by zero."""
    with pytest.raises(LWIError, match=next(iter(options))):
        make_settings(options)
