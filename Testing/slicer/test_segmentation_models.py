"""The model list of LWISegmentation (LWISegmentationLib.models): real bundles written by the core, read
without torch from the safetensors header, described by their metadata."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from lwi.bundle import read_bundle_metadata
from lwi.checkpoint import save as save_checkpoint
from lwi.names import MODEL_SUFFIX

ROOT = Path(__file__).resolve().parents[2]

from LWISegmentationLib import models  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_bundle) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_bundle(
        root / f"liver{MODEL_SUFFIX}",
        {0: "background", 1: "liver", 2: "spleen"},
        provenance={"strategy": "lwi", "epochs": 5, "validation_dice": {"liver": 0.9, "spleen": 0.7}},
    )
    make_bundle(root / f"kidneys{MODEL_SUFFIX}", {0: "background", 1: "left kidney", 3: "right kidney"},
                provenance={"strategy": "scratch", "validation_dice": {"1": 0.5, "3": 0.25}})
    (root / f"broken{MODEL_SUFFIX}").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (root / "notes.txt").write_text("not a model")
    return root


def test_header_metadata_equals_the_cores(folder):
    for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
        if path.name.startswith("broken"):
            continue
        assert models.read_bundle_metadata(str(path)) == read_bundle_metadata(path)


def test_models_are_listed_with_labels_architecture_strategy_and_dice(folder):
    entries = models.list_models([str(folder), str(folder / "missing")])
    assert [e.name for e in entries] == ["broken", "kidneys", "liver"]
    broken, kidneys, liver = entries
    assert broken.error and "not an LWI model" in broken.error and broken.title() == "broken (unusable)"
    assert liver.labels == [(1, "liver"), (2, "spleen")]
    assert liver.architecture == "segresnet" and liver.strategy == "lwi"
    assert liver.validation_dice == {"liver": 0.9, "spleen": 0.7}
    assert liver.mean_dice == pytest.approx(0.8)
    assert liver.title() == "liver (segresnet, lwi, Dice 0.800)"
    text = liver.description()
    assert "1 liver, 2 spleen" in text and "segresnet at 16x16x16" in text and "strategy: lwi" in text
    assert "liver 0.900" in text
    # Dice keyed by label value is shown by name.
    assert kidneys.labels == [(1, "left kidney"), (3, "right kidney")]
    assert kidneys.validation_dice == {"left kidney": 0.5, "right kidney": 0.25}


def test_browsed_files_join_the_list_once(folder, tmp_path, make_bundle):
    other = make_bundle(tmp_path / f"aorta{MODEL_SUFFIX}", {0: "background", 1: "aorta"})
    entries = models.list_models([str(folder)], extra=[str(other), str(other), str(folder / f"liver{MODEL_SUFFIX}")])
    names = [e.name for e in entries]
    assert names == ["aorta", "broken", "kidneys", "liver"]
    assert entries[0].validation_dice == {} and "not measured" in entries[0].description()


def test_foreign_and_step1_files_are_refused_with_a_sentence(tmp_path):
    assert "does not exist" in models.model_entry(str(tmp_path / "gone.lwi.safetensors")).error
    truncated = tmp_path / "t.lwi.safetensors"
    truncated.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(ValueError, match="not an LWI model"):
        models.read_bundle_metadata(str(truncated))
    step1 = save_checkpoint(tmp_path / "s.lwi.safetensors", {"w": torch.zeros(1)}, {"format": "lwi-step1"})
    with pytest.raises(ValueError, match="Step-1 checkpoint"):
        models.read_bundle_metadata(str(step1))


def test_a_model_from_a_newer_lwi_is_marked_unusable_in_the_list(folder, tmp_path):
    """The list applies the core's rule (lwi.names.check_format): a newer format is refused here with the
    same sentence as in the worker, not listed as usable."""
    from lwi.checkpoint import read_metadata

    meta = {**read_metadata(folder / f"liver{MODEL_SUFFIX}"), "format_version": 99}
    newer = save_checkpoint(tmp_path / f"newer{MODEL_SUFFIX}", {"w": torch.zeros(1)}, meta)
    with pytest.raises(ValueError, match="newer LWI"):
        models.read_bundle_metadata(str(newer))
    assert "newer LWI" in models.model_entry(str(newer)).error
