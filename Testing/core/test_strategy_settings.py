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
    assert s.consistency_weight == 0.5 and s.ema_mode == "paper" and s.ema_momentum == (0.996, 1.0)
    assert s.guided_final_ratio == 0.5 and s.anatomask_ema_decay == (0.999, 0.9999)
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
