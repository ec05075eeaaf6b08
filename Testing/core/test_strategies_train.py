"""``lwi train --strategy medcontext|anatomask`` end to end on phantoms: ``lwi train`` and ``lwi segment``
in real subprocesses, what ``lwi info`` prints; resume after an interruption through the Python API;
equal budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lwi import checkpoint
from lwi.bundle import describe, load_bundle, read_lwi_metadata
from lwi.data.phantoms import make_phantom, write_phantom_dataset
from lwi.engine import model_tensors
from lwi.errors import LWIError
from lwi.names import derived_path
from lwi.progress import Progress
from lwi.strategies import STRATEGIES, Settings, train
from lwi.strategies.step2 import build_step2_model

REPO = Path(__file__).resolve().parents[2]
SHAPE = (48, 48, 32)
UNETR = ["--arch", "unetr", "--hidden-size", "32", "--mlp-dim", "64", "--num-heads", "2", "--feature-size", "4"]
SEGRESNET = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1,1]", "--arch-param", "blocks_up=[1,1]"]
SMALL = {"roi": (32, 32, 32), "batch_size": 2, "lr": 3e-3, "device": "cpu", "iterations_per_epoch": 1}
API_ARCH = {
    "unetr": {"arch": "unetr", "arch_params": {"hidden_size": 32, "mlp_dim": 64, "num_heads": 2, "feature_size": 4}},
    "segresnet": {"arch": "segresnet", "arch_params": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}},
}

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _lwi(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lwi", *args], capture_output=True, text=True, encoding="utf-8", env=env, timeout=600
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 4 cases: 3 train (2 iterations per epoch at batch 2) + 1 held out automatically.
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", 4, seed=0, shape=SHAPE)


def test_registry_has_the_four_strategies():
    assert set(STRATEGIES) == {"lwi", "scratch", "medcontext", "anatomask"}


@pytest.mark.parametrize(
    "strategy, net, expected_iterations",
    [("medcontext", UNETR, {"train": 1 * 2 + 3 * 2}), ("anatomask", SEGRESNET, {"pretrain": 1 * 2, "finetune": 3 * 2})],
)
def test_cli_train_info_and_segment(data, tmp_path, strategy, net, expected_iterations):
    out = tmp_path / "models" / f"{strategy}.lwi.safetensors"
    proc = _lwi(
        "train", "--data", str(data), "--out", str(out), "--strategy", strategy, *net, "--roi", "32", "32", "32",
        "--pretrain-epochs", "1", "--epochs", "3", "--val-every", "3", "--lr", "3e-3", "--device", "cpu",
        "--progress", "json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    result = events[-1]
    assert result["event"] == "result" and result["strategy"] == strategy
    # Equal budgets: the same optimiser steps as lwi (1 + 3 epochs of 2 iterations), and the wall time.
    assert result["iterations"] == expected_iterations and result["optimizer_steps"] == 8
    assert result["wall_seconds"] > 0
    progress = [e for e in events if e["event"] == "progress" and e["stage"] != "preprocess"]
    assert {e["stage"] for e in progress} == set(expected_iterations)
    # The mechanisms' own figures come through the JSON progress: MedContext's realised gradient share
    # of the consistency term, AnatoMask's teacher loss.
    terms = {"supervised", "masked", "consistency", "consistency_share"} if strategy == "medcontext" else {"guided", "teacher"}
    assert all(terms <= set(e) for e in progress if "loss" in e and e["stage"] != "finetune")
    written = sorted(p.name for p in out.parent.iterdir())
    extra = [f"{strategy}.anatomask.lwi.safetensors"] if strategy == "anatomask" else []
    assert written == sorted([out.name, f"{strategy}.last.lwi.safetensors", *extra])

    # `lwi info` (test_train_cli runs the command; here what it prints, in process: each subprocess
    # costs a torch import) names the strategy and its settings, for the model and the files beside it.
    info = describe(read_lwi_metadata(out))
    assert f"strategy {strategy}" in info and "strategy_settings" in info and "recipe:" in info and "default" in info
    assert ("ema_mode=run" if strategy == "medcontext" else "transfer=encoder") in info
    for name in written:
        assert describe(read_lwi_metadata(out.parent / name))
    if extra:
        assert describe(read_lwi_metadata(out.parent / extra[0])).startswith("AnatoMask pre-training checkpoint")
        with pytest.raises(LWIError, match="not a segmentation model"):
            load_bundle(out.parent / extra[0])

    # The bundle segments an unseen phantom (a real subprocess, real files).
    image, _ = make_phantom(7, shape=SHAPE)
    image_path, label_path = tmp_path / "unseen.nii.gz", tmp_path / "unseen_label.nii.gz"
    sitk.WriteImage(image, str(image_path))
    seg = _lwi("segment", "--model", str(out), "--input", str(image_path), "--output", str(label_path), "--device", "cpu")
    assert seg.returncode == 0, seg.stderr[-2000:]
    label = sitk.ReadImage(str(label_path))
    assert label.GetSize() == image.GetSize() and label.GetSpacing() == image.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2, 3, 4}


class _StopAt(Progress):
    """Silent progress that interrupts the run (as Ctrl-C would) when ``stage`` reports ``iteration``:
    before that epoch's checkpoint, so the run restarts from the previous one."""

    def __init__(self, stage: str, iteration: int):
        super().__init__("none")
        self.stop = (stage, iteration)

    def update(self, done, total, **fields):
        super().update(done, total, **fields)
        if (self._stage, fields.get("iteration")) == self.stop:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "strategy, arch, stop, files",
    [
        ("medcontext", "segresnet", ("train", 3), ["last"]),
        ("anatomask", "unetr", ("pretrain", 2), ["anatomask", "last"]),
    ],
)
def test_resume_after_an_interruption_gives_the_uninterrupted_result(data, tmp_path, strategy, arch, stop, files):
    options = {
        **SMALL, **API_ARCH[arch], "strategy": strategy, "pretrain_epochs": 2, "epochs": 2, "checkpoint_every": 1,
        "val_every": 1,
    }
    reference = tmp_path / "reference.lwi.safetensors"
    expected = train(data, reference, **options)
    assert expected["optimizer_steps"] == 4

    out = tmp_path / "run.lwi.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train(data, out, progress=_StopAt(*stop), **options)
    interrupted = checkpoint.read_metadata(derived_path(out, files[0]))
    assert interrupted["training"]["iteration"] == stop[1] - 1 and not interrupted["training"]["complete"]
    with pytest.raises(LWIError, match="already exists"):
        train(data, out, **options)  # no silent restart over an interrupted run

    resumed = train(data, out, resume=True, strategy=strategy, device="cpu")
    assert resumed["iterations"] == expected["iterations"]
    for infix in files:  # every weight (student, teacher, mask token) as if never interrupted
        got, _ = checkpoint.load(derived_path(out, infix))
        want, _ = checkpoint.load(derived_path(reference, infix))
        assert set(model_tensors(got)) == set(model_tensors(want))
        for key, value in model_tensors(want).items():
            assert torch.equal(got[key], value), (infix, key)
    if strategy == "medcontext":
        # The teacher followed the student by the run-scaled EMA (m starts at 0.9 on a 4-step run; the
        # paper's 0.996 would leave it near its start): it moved clearly, and less than the student.
        state = model_tensors(checkpoint.load(derived_path(out, "last"))[0])
        settings = Settings(**{k: v for k, v in options.items() if k not in ("strategy", "device")})
        initial, _ = build_step2_model(settings, 1, 5)
        # The output bias starts at the data's class priors (run_step2), not at build's values.
        prior_bias = next(k for k, v in initial.named_parameters() if v is initial.output_bias())
        student_move = teacher_move = 0.0
        for key, value in initial.state_dict().items():
            if value.is_floating_point() and key != prior_bias:
                student_move += float((state["student." + key] - value).norm() ** 2)
                teacher_move += float((state["teacher." + key] - value).norm() ** 2)
        assert 0.03 * student_move**0.5 < teacher_move**0.5 < 0.5 * student_move**0.5
    # A resumed run keeps its strategy settings.
    with pytest.raises(LWIError, match="keeps its settings"):
        train(data, out, resume=True, strategy=strategy, device="cpu", consistency_weight=0.1)
