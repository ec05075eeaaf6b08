"""The model bundle: one safetensors file, identical outputs after a round trip, never unpickled."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lwi import checkpoint
from lwi.architectures import build
from lwi.bundle import (
    bundle_labels,
    describe,
    load_bundle,
    read_bundle_metadata,
    read_lwi_metadata,
    save_bundle,
)
from lwi.errors import LWIError
from lwi.names import MODEL_SUFFIX

ROI = (32, 32, 32)
SMALL_UNETR = dict(feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)
LABELS = {0: "background", 1: "liver", 2: "kidney_left", 3: "kidney_right"}
PREPROCESSING = {"orientation": "RAS", "spacing": [1.5, 1.5, 2.0], "modality": "CT", "ct_window": [-175, 250]}
PROVENANCE = {
    "strategy": "lwi",
    "pretrain_epochs": 3,
    "epochs": 5,
    "cases": 4,
    "validation_cases": 1,
    "validation_dice": {"liver": 0.91, "kidney_left": 0.52, "kidney_right": 0.5},
}


def _adapter(out_channels: int = 4):
    torch.manual_seed(0)
    return build("unetr", 1, out_channels, ROI, **SMALL_UNETR)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    adapter = _adapter()
    path = tmp_path_factory.mktemp("bundle") / f"model{MODEL_SUFFIX}"
    written = save_bundle(path, adapter, LABELS, PREPROCESSING, {"overlap": 0.25}, PROVENANCE)
    return adapter, Path(written)


def test_round_trip_gives_identical_outputs(saved):
    adapter, path = saved
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]  # one file, no leftovers
    loaded, metadata = load_bundle(path)
    assert not loaded.training
    x = torch.randn(2, 1, *ROI, generator=torch.Generator().manual_seed(1))
    adapter.eval()
    with torch.no_grad():
        assert torch.equal(adapter(x), loaded(x))
    assert loaded.spec() == adapter.spec()


def test_metadata_holds_what_a_user_of_the_model_needs(saved):
    adapter, path = saved
    metadata = read_bundle_metadata(path)
    assert metadata["format"] == "lwi-model" and metadata["format_version"] == 1
    assert metadata["architecture"] == adapter.spec()
    table = bundle_labels(metadata)
    assert [(t.value, t.name) for t in table] == [(1, "liver"), (2, "kidney_left"), (3, "kidney_right")]
    assert len({t.color for t in table}) == 3
    assert metadata["preprocessing"] == PREPROCESSING
    assert metadata["inference"] == {"roi_size": list(ROI), "overlap": 0.25, "sw_batch_size": 4, "blend": "gaussian"}
    prov = metadata["provenance"]
    assert prov["strategy"] == "lwi" and prov["validation_dice"]["liver"] == 0.91
    assert prov["versions"]["torch"] == torch.__version__ and "monai" in prov["versions"] and "created" in prov


def test_describe_is_readable(saved):
    text = describe(read_bundle_metadata(saved[1]))
    for expected in ("unetr", "liver", "kidney_right", "RAS", "overlap 0.25", "strategy lwi", "Step 1: 3 epochs",
                     "Step 2: 5 epochs", "0.910", torch.__version__):
        assert expected in text, expected


def test_loading_never_unpickles(saved, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during bundle loading")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    adapter, metadata = load_bundle(saved[1])
    assert metadata["labels"][0]["name"] == "liver"


def test_truncated_file_is_a_clear_error(saved, tmp_path):
    data = saved[1].read_bytes()
    for keep in (len(data) // 2, 40, 5):
        broken = tmp_path / f"cut{keep}{MODEL_SUFFIX}"
        broken.write_bytes(data[:keep])
        with pytest.raises(LWIError, match="not a readable LWI file"):
            load_bundle(broken)
        if keep < 100:  # the header itself is cut
            with pytest.raises(LWIError):
                read_bundle_metadata(broken)


def test_foreign_files_are_clear_errors(tmp_path):
    pickled = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickled)
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model\n")
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(plain))
    for path in (pickled, text, plain, tmp_path / "missing.lwi.safetensors"):
        with pytest.raises(LWIError):
            load_bundle(path)
    other = tmp_path / "other.safetensors"
    checkpoint.save(other, {"w": torch.zeros(3)}, {"format": "someone-else"})
    with pytest.raises(LWIError, match="not an LWI model"):
        load_bundle(other)


def test_step1_checkpoint_and_newer_format_are_explained(saved, tmp_path):
    tensors, metadata = checkpoint.load(saved[1])
    step1 = tmp_path / "step1.safetensors"
    checkpoint.save(step1, tensors, {
        "format": "lwi-step1", "format_version": 1, "architecture": metadata["architecture"],
        "preprocessing": metadata["preprocessing"], "step1": {"num_subvolumes": 3, "mask_ratio": 0.4, "cube_size": 16},
    })
    with pytest.raises(LWIError, match="Step-1 checkpoint.*fine-tune"):
        load_bundle(step1)
    assert read_lwi_metadata(step1)["format"] == "lwi-step1"  # lwi info still shows it
    assert "Step-1" in describe(read_lwi_metadata(step1))
    newer = tmp_path / "newer.lwi.safetensors"
    checkpoint.save(newer, tensors, {**metadata, "format_version": 99})
    with pytest.raises(LWIError, match="newer"):
        load_bundle(newer)


def test_weights_that_do_not_match_the_architecture(saved, tmp_path):
    tensors, metadata = checkpoint.load(saved[1])
    metadata["architecture"]["out_channels"] = 7
    bad = tmp_path / "bad.lwi.safetensors"
    checkpoint.save(bad, tensors, metadata)
    with pytest.raises(LWIError, match="do not match"):
        load_bundle(bad)


def test_labels_must_fit_the_output_channels(tmp_path):
    with pytest.raises(ValueError):
        save_bundle(tmp_path / "m.lwi.safetensors", _adapter(out_channels=2), LABELS, PREPROCESSING)


def _lwi(*args):
    return subprocess.run([sys.executable, "-m", "lwi", *args], capture_output=True, text=True, encoding="utf-8", timeout=120)


def test_cli_info_prints_labels_and_json(saved):
    result = _lwi("info", str(saved[1]))
    assert result.returncode == 0, result.stderr
    assert "liver" in result.stdout and "kidney_left" in result.stdout and "unetr" in result.stdout
    raw = _lwi("info", "--json", str(saved[1]))
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["labels"][1]["name"] == "kidney_left"


def test_cli_info_foreign_file_is_one_line_error(tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, foreign)
    result = _lwi("info", str(foreign))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in result.stderr
