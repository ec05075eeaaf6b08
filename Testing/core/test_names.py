"""The shared vocabulary (lwi/names.py) is the one the torch registries, the CLI and the Slicer
modules use: each list is defined once and they all agree."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import pytest
import torch

from lwi import checkpoint, names
from lwi.architectures import ARCHITECTURES
from lwi.commands import segment, train
from lwi.errors import LWIError
from lwi.strategies import STRATEGIES, get_strategy


def test_torch_registries_are_keyed_by_the_names():
    assert sorted(ARCHITECTURES) == sorted(names.ARCHITECTURE_NAMES)
    assert sorted(STRATEGIES) == sorted(names.STRATEGY_NAMES)
    assert names.DEFAULT_ARCHITECTURE in ARCHITECTURES
    # auto (the default) is the plan's choice of a strategy, not one: no module, a clear error.
    assert names.DEFAULT_STRATEGY == names.AUTO_STRATEGY not in STRATEGIES
    assert names.STRATEGY_CHOICES == (names.AUTO_STRATEGY,) + names.STRATEGY_NAMES
    with pytest.raises(LWIError, match="not a strategy"):
        get_strategy(names.AUTO_STRATEGY)
    for name in names.STRATEGY_NAMES:  # each name has its strategy module, which knows its name
        assert get_strategy(name).NAME == name


def test_the_cli_offers_the_names():
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    choices = {a.dest: a.choices for a in parser._actions if a.choices}
    assert list(choices["arch"]) == list(names.ARCHITECTURE_NAMES)
    assert list(choices["strategy"]) == list(names.STRATEGY_CHOICES)
    assert list(choices["modality"]) == list(names.MODALITIES)
    parser = argparse.ArgumentParser()
    segment.add_arguments(parser)
    assert parser.parse_args(["--model", "m", "--input", "i", "--output", "o"]).device == "auto"


def test_the_slicer_modules_offer_exactly_the_core_names():
    from LWICommon import files
    from LWICommon.vocabulary import names as gui_names
    from LWITrainingLib import training_settings

    # Loaded from the core's own file (not a copy), without importing the lwi package.
    assert Path(gui_names.__file__).resolve() == Path(names.__file__).resolve()
    for key in ("ARCHITECTURE_NAMES", "STRATEGY_NAMES", "DEVICE_CHOICES", "MODALITY_CHOICES", "MODEL_SUFFIX"):
        assert getattr(gui_names, key) == getattr(names, key), key
    assert list(training_settings.STRATEGIES) == list(names.STRATEGY_CHOICES)
    assert set(training_settings.STRATEGY_DESCRIPTIONS) == set(STRATEGIES)
    assert training_settings.ARCHITECTURES == names.ARCHITECTURE_CHOICES
    assert set(names.ARCHITECTURE_CHOICES) - {"auto"} == set(ARCHITECTURES)  # auto: the plan's choice
    assert files.MODEL_SUFFIX == names.MODEL_SUFFIX


def test_derived_path_keeps_the_folder_and_the_suffix(tmp_path):
    out = tmp_path / f"liver{names.MODEL_SUFFIX}"
    assert names.derived_path(out, names.LAST_INFIX) == tmp_path / f"liver.last{names.MODEL_SUFFIX}"
    assert names.derived_path(tmp_path / "plain", "step1") == tmp_path / "plain.step1"


def test_header_metadata_is_read_without_torch_as_checkpoint_writes_it(tmp_path):
    # A format without a schema (lwi.schema checks the model formats' fields on top of this reader).
    path = checkpoint.save(tmp_path / "m.lwi.safetensors", {"w": torch.zeros(2)}, {"format": "test", "x": [1]})
    assert names.read_header_metadata(path) == {"format": "test", "x": [1]} == checkpoint.read_metadata(path)
    with pytest.raises(FileNotFoundError):
        names.read_header_metadata(tmp_path / "missing")
    cut = tmp_path / "cut.lwi.safetensors"
    cut.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="not a readable LWI file"):
        names.read_header_metadata(cut)
    with pytest.raises(LWIError, match="not a readable LWI file"):
        checkpoint.read_metadata(cut)
