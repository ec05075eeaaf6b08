"""``lwi train --from MODEL`` / ``lwi plan --from MODEL``: improving a finished model with the current
cases (old and new), in real subprocesses on synthetic phantoms: the plan's shorter budget, the start
from every parent weight, validation only on cases the parent never trained on, the provenance chain
in ``lwi info``, and one-sentence refusals of other labels or another network that write nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lwi import checkpoint
from lwi.cli import main
from lwi.data.phantoms import write_phantom_dataset
from lwi.improve import IMPROVE_SHARE, improve

# Two trainings in subprocesses: on a loaded shared CPU their start-up alone can take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
SHAPE = (32, 32, 24)
NET = [
    "--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1,1]",
    "--arch-param", "blocks_up=[1,1]", "--roi", "32", "32", "16",
]


def _lwi(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lwi", *args], capture_output=True, text=True, encoding="utf-8", env=env, timeout=600
    )


def _events(proc: subprocess.CompletedProcess) -> list:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A parent trained on 4 phantoms (3 trained on, 1 held out), the same 4 plus 2 new ones, and the
    parent improved with them."""
    root = tmp_path_factory.mktemp("improve")
    old = write_phantom_dataset(root / "old", 4, seed=0, shape=SHAPE)
    new = write_phantom_dataset(root / "new", 6, seed=0, shape=SHAPE)  # the same first 4, then 2 more
    parent = root / "parent.lwi.safetensors"
    proc = _lwi(
        "train", "--data", str(old), "--out", str(parent), "--strategy", "scratch", *NET, "--iterations", "6",
        "--val-fraction", "0.25", "--device", "cpu", "--seed", "0", "--progress", "json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    child = root / "child.lwi.safetensors"
    proc = _lwi(
        "train", "--from", str(parent), "--data", str(new), "--out", str(child), "--iterations", "4",
        "--device", "cpu", "--progress", "json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"root": root, "old": old, "new": new, "parent": parent, "child": child, "events": _events(proc)}


def test_parent_records_the_cases_it_trained_on(loop):
    prov = checkpoint.read_metadata(loop["parent"])["provenance"]
    assert len(prov["training_cases"]) == 3 and len(prov["held_out"]) == 1
    assert sorted(prov["training_cases"] + prov["held_out"]) == [f"phantom_{i:03d}" for i in range(4)]


def test_improved_model_trains_on_old_and_new_and_validates_on_unseen_cases(loop):
    parent = checkpoint.read_metadata(loop["parent"])["provenance"]
    result = loop["events"][-1]
    assert result["event"] == "result" and result["strategy"] == "improve"
    assert result["added_cases"] == ["phantom_004", "phantom_005"]
    prov = checkpoint.read_metadata(loop["child"])["provenance"]
    assert prov["parent"] == loop["parent"].name
    assert prov["held_out"] == parent["held_out"]  # validated only where the parent never trained
    assert not set(prov["held_out"]) & set(parent["training_cases"])
    assert sorted(prov["training_cases"]) == sorted(parent["training_cases"] + ["phantom_004", "phantom_005"])
    assert result["iterations"] == {"finetune": 4}
    assert result["mean_validation_dice"] is not None
    plan = next(e for e in loop["events"] if e["event"] == "plan")
    assert plan["strategy"] == "improve" and (plan["step1_iterations"], plan["step2_iterations"]) == (0, 4)


def test_info_shows_the_chain(loop):
    grandchild = loop["root"] / "grandchild.lwi.safetensors"
    improve(loop["new"], loop["child"], grandchild, device="cpu", epochs=1, iterations_per_epoch=2, val_every=1)
    lineage = checkpoint.read_metadata(grandchild)["provenance"]["lineage"]
    assert [e["model"] for e in lineage] == [loop["parent"].name, loop["child"].name]
    proc = _lwi("info", str(grandchild))
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "Improved from:" in x)
    assert line.index(loop["child"].name) < line.index(loop["parent"].name)  # newest first
    assert "Cases added:     none" in proc.stdout  # the child had already trained on every case


def test_starts_from_every_parent_weight(loop, one_thread):
    """One step at a vanishing learning rate leaves the parent's weights, output layer included."""
    out = loop["root"] / "still.lwi.safetensors"
    improve(loop["new"], loop["parent"], out, device="cpu", epochs=1, iterations_per_epoch=1, lr=1e-12, val_every=1)
    before, _ = checkpoint.load(loop["parent"])
    after, _ = checkpoint.load(out)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.allclose(before[key].float(), after[key].float(), atol=1e-6), key


def test_plan_gives_a_share_of_a_new_models_budget(loop):
    full = _events(_lwi("plan", "--data", str(loop["new"]), "--strategy", "scratch", "--no-probe", "--device", "cpu",
                        "--progress", "json"))[-1]
    proc = _lwi("plan", "--from", str(loop["parent"]), "--data", str(loop["new"]), "--no-probe", "--device", "cpu",
                "--progress", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    plan = _events(proc)[-1]["plan"]
    assert plan["step2_iterations"] >= math.ceil(IMPROVE_SHARE * full["plan"]["step2_iterations"])
    assert plan["step2_iterations"] < full["plan"]["step2_iterations"]
    assert plan["settings"]["roi"] == [32, 32, 16] and plan["settings"]["arch"] == "segresnet"  # the parent's
    summary = "\n".join(_events(proc)[-2]["summary"]) if _events(proc)[-2]["event"] == "plan" else proc.stderr
    assert "improve" in summary and loop["parent"].name in summary


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--arch", "unetr"], "--arch differs from the network of parent.lwi.safetensors"),
        (["--roi", "16", "16", "16"], "--roi differs"),
        (["--strategy", "lwi"], "leave out --strategy lwi"),
        (["--spacing", "2", "2", "2"], "--spacing differs from the spacing parent.lwi.safetensors was trained at"),
    ],
)
def test_refuses_another_network_in_one_sentence(loop, capsys, extra, words):
    out = loop["root"] / "refused.lwi.safetensors"
    code = main(["train", "--from", str(loop["parent"]), "--data", str(loop["new"]), "--out", str(out), *extra,
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and words in err
    assert err.strip().count("\n") == 0  # one sentence
    assert not out.exists() and not list(loop["root"].glob("refused*"))


def test_refuses_other_labels(loop, capsys):
    other = write_phantom_dataset(loop["root"] / "relabelled", 4, seed=0, shape=SHAPE)
    meta = json.loads((other / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"]["1"] = "pancreas"
    (other / "dataset.json").write_text(json.dumps(meta))
    out = loop["root"] / "relabelled.lwi.safetensors"
    code = main(["train", "--from", str(loop["parent"]), "--data", str(other), "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "labels" in err and "pancreas" in err and not out.exists()


def test_refuses_validating_on_cases_the_parent_trained_on(loop, capsys):
    data = write_phantom_dataset(loop["root"] / "listed", 5, seed=0, shape=SHAPE)
    meta = json.loads((data / "dataset.json").read_text(encoding="utf-8"))
    trained = checkpoint.read_metadata(loop["parent"])["provenance"]["training_cases"][0]
    meta["validation"] = [trained]
    (data / "dataset.json").write_text(json.dumps(meta))
    code = main(["plan", "--from", str(loop["parent"]), "--data", str(data), "--no-probe", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and trained in err and "trained on" in err
