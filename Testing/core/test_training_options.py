"""The training option table (lwi/training_options.py): it names every Settings field, and the training
commands' parsers, Settings (the Python API) and the LWI Training panel's settings accept and refuse
the same values."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math

import pytest

from lwi import training_options as table
from lwi.cli import build_parser
from lwi.commands.training_options import settings_from_args
from lwi.errors import LWIError
from lwi.strategies.settings import Settings, make_settings

#: Values tried on every numeric option: each range's edges and the usual mistakes.
NUMBERS = (-1, 0, 0.5, 1, 2, 15, 16, 2**32, 2.5, math.inf, math.nan, "x")
#: The positional arguments each training command needs besides its options.
COMMANDS = {
    "train": ["--data", "d", "--out", "o"],
    "plan": ["--data", "d"],
    "pretrain": ["--data", "d", "--out", "o"],
    "finetune": ["--data", "d", "--init", "i", "--out", "o"],
    "experiment": ["--data", "d", "--out", "o", "--test-cases", "1", "--k", "1"],
}


def candidates(option):
    """Values to try on ``option``: its choices and a wrong one, or :data:`NUMBERS` (as pairs/triples)."""
    singles = list(option.choices) + ["typo", "ct"] if option.choices else list(NUMBERS)
    if option.nargs:
        pairs = [(v,) * option.nargs for v in singles]
        return pairs + [(0.9, 0.5), (0.5, 0.9)] if option.nargs == 2 else pairs + [(16, 32, 8), (32, 16, 16)]
    return singles


def flags_of(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(f"lwi.commands.{command}").add_arguments(parser)
    return set(parser._option_string_actions)


def settings_accepts(option, value):
    try:
        make_settings({"arch_params": {option.key: value}} if option.param else {option.key: value})
        return True
    except LWIError:
        return False


def cli_accepts(command, option, value):
    """Whether ``lwi COMMAND FLAG VALUE`` parses and gives Settings (what every training command does
    before any work)."""
    words = [str(v) for v in value] if option.nargs else [str(value)]
    try:
        args = build_parser().parse_args([command, *COMMANDS[command], option.flag, *words])
        values = settings_from_args(args)
        if option.setting:
            make_settings({k: v for k, v in values.items() if k not in ("iterations", "pretrain_iterations")})
        return True
    except (SystemExit, LWIError):
        return False


def panel_accepts(option, value):
    """Whether the LWI Training panel's settings with ``value`` for ``option`` can be used (None: the
    panel does not set it, or shows ``value`` as "auto")."""
    from LWITrainingLib.training_settings import AUTO_AT_ZERO, FIELDS, TrainingSettings

    if option.key not in FIELDS or (option.key in AUTO_AT_ZERO and value == 0):
        return None
    value = str(value) if option.key == "time" else value
    return not TrainingSettings(**{FIELDS[option.key]: value}).problems()


def test_every_settings_field_has_one_row():
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == set(table.SETTING_KEYS) | {"arch_params"}
    assert len({o.key for o in table.TRAINING_OPTIONS}) == len(table.TRAINING_OPTIONS)
    flags = [f for o in table.TRAINING_OPTIONS if o.flag for f in (o.flag, *o.aliases)]
    assert len(flags) == len(set(flags))
    for key in table.SETTING_KEYS:  # the defaults are in range
        assert table.check_value(key, table.OPTIONS[key].default) == table.check_value(key, getattr(Settings(), key))


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_the_python_api_refuses_a_zero_batch_as_the_cli_does(value):
    """A comment once swallowed these two checks: Settings(batch_size=0) divided by zero later, and
    iterations_per_epoch=0 was quietly replaced by the default."""
    for key in ("batch_size", "iterations_per_epoch", "epochs", "cube_size", "sw_batch_size"):
        with pytest.raises(LWIError, match=key):
            make_settings({key: value})
        with pytest.raises(LWIError, match=key):
            Settings(**{key: value})


@pytest.mark.parametrize("option", [o for o in table.TRAINING_OPTIONS if o.flag and o.type is not bool], ids=lambda o: o.key)
def test_cli_settings_and_panel_accept_and_refuse_the_same_values(option):
    commands = [c for c in COMMANDS if option.flag in flags_of(c)]
    assert commands, f"{option.flag} is in no training command"
    for value in candidates(option):
        if option.setting:
            expected = settings_accepts(option, value)
        else:
            expected = not table.problems({option.key: value})
        for command in commands:
            if command == "pretrain" and option.key == "epochs" or command == "experiment" and option.key == "seed":
                continue  # pretrain's --epochs are Step 1's; experiment takes --seeds
            assert cli_accepts(command, option, value) == expected, (command, option.flag, value)
        assert panel_accepts(option, value) in (None, expected), ("panel", option.key, value)


def test_refusals_name_the_option_and_its_flag():
    with pytest.raises(LWIError, match=r"batch_size \(--batch-size\) must be a whole number of at least 1, not 0"):
        make_settings({"batch_size": 0})
    with pytest.raises(LWIError, match=r"roi \(--roi\) must be a whole number of at least 16"):
        make_settings({"roi": (8, 8, 8)})


def test_the_old_segment_and_training_spelling_of_the_window_batch_is_an_alias():
    for command in ("train", "finetune"):
        for flag in ("--sw-batch-size", "--sw-batch"):
            args = build_parser().parse_args([command, *COMMANDS[command], flag, "3"])
            assert settings_from_args(args)["sw_batch_size"] == 3
    for flag in ("--sw-batch-size", "--sw-batch"):
        args = build_parser().parse_args(["segment", "--model", "m", "--input", "i", "--output", "o", flag, "3"])
        assert args.sw_batch_size == 3


def test_help_says_which_defaults_come_from_the_plan():
    roi = table.OPTIONS["roi"]
    assert table.help_text(roi, planned=True).endswith("(default: from the plan)")
    assert table.help_text(roi).endswith("(default: 96 96 96)")
