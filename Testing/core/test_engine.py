"""The training engine: schedule per iteration, atomic checkpoints, exact resume, validation Dice,
and (with the real Step-1 model on phantoms) decreasing Step-1 losses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lwi import checkpoint
from lwi.devices import resolve_device
from lwi.engine import Trainer, Validator, model_tensors
from lwi.errors import LWIError

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _toy_problem():
    """A tiny regression: a conv net learns a fixed random linear map of random volumes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 1, 1))
    target_map = nn.Conv3d(1, 1, 3, padding=1)
    for p in target_map.parameters():
        p.requires_grad_(False)

    def sample(generator):
        x = torch.randn(2, 1, 8, 8, 8, generator=generator)
        return x, target_map(x)

    def step(net, batch, generator):
        x, y = batch
        mse = torch.mean((net(x) - y) ** 2)
        return {"total": mse, "mse": mse, "parts": [mse * 0.5, mse * 2]}

    return model, sample, step


def test_schedule_steps_every_iteration():
    model, sample, step = _toy_problem()
    lrs = []

    def recording_step(net, batch, generator):
        lrs.append(trainer.current_lr())
        return step(net, batch, generator)

    trainer = Trainer(
        model, recording_step, sample, epochs=10, iterations_per_epoch=4, lr=1e-3, warmup_iterations=4
    )
    trainer.run()
    assert len(lrs) == 40
    # Linear warmup over the first 4 iterations, then the cosine starts at the base rate.
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] < 1e-3
    assert lrs[4] == pytest.approx(1e-3, rel=1e-6)
    assert lrs[6] > 0.9e-3  # near the base rate right after warmup, not near zero
    assert lrs[22] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 18 / 36)), rel=1e-6)
    assert lrs[-1] < 0.01e-3  # decays to ~0 at the very end of the run
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone cosine decay


def test_losses_reported_and_decrease():
    model, sample, step = _toy_problem()
    trainer = Trainer(model, step, sample, epochs=6, iterations_per_epoch=10, lr=1e-2, report_seconds=1e9)
    summary = trainer.run()
    assert summary["iterations"] == 60 and summary["epochs"] == 6
    losses = [h["loss"] for h in trainer.history]
    assert len(losses) == 6  # one report per epoch (mid-epoch reports are throttled away here)
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.history[0]["parts"][1] == pytest.approx(4 * trainer.history[0]["parts"][0], rel=1e-4)


def test_checkpoint_resume_continues_exactly(tmp_path: Path):
    # Uninterrupted reference run.
    model, sample, step = _toy_problem()
    reference = Trainer(model, step, sample, epochs=4, iterations_per_epoch=3, lr=1e-2, warmup_iterations=2)
    reference.run()
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    # The same run, "interrupted" (Ctrl-C) during epoch 3, after the epoch-2 checkpoint.
    ckpt = tmp_path / "run.safetensors"
    model, sample, step = _toy_problem()
    calls = []

    def counting_sample(generator):
        calls.append(1)
        if len(calls) == 8:  # 2nd iteration of epoch 3
            raise KeyboardInterrupt
        return sample(generator)

    trainer = Trainer(
        model, step, counting_sample, epochs=4, iterations_per_epoch=3, lr=1e-2, warmup_iterations=2,
        checkpoint_path=ckpt, checkpoint_every=2, metadata={"format": "test"},
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    tensors, meta = checkpoint.load(ckpt)
    assert meta["format"] == "test"
    assert meta["training"]["iteration"] == 6 and meta["training"]["complete"] is False
    assert not list(tmp_path.glob(".*.tmp"))

    # Resume in a "new process": fresh objects, everything restored from the file.
    model, sample, step = _toy_problem()
    seen = []

    def resumed_sample(generator):
        seen.append(1)
        return sample(generator)

    resumed = Trainer(
        model, step, resumed_sample, epochs=4, iterations_per_epoch=3, lr=1e-2, warmup_iterations=2,
        checkpoint_path=ckpt, checkpoint_every=2,
    )
    resumed.load_checkpoint(ckpt)
    assert resumed.iteration == 6
    assert resumed.current_lr() == pytest.approx(reference.scheduler.base_lrs[0] * reference.scheduler.lr_lambda(6))
    resumed.run()
    assert len(seen) == 6  # only the remaining iterations ran
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    _, meta = checkpoint.load(ckpt)
    assert meta["training"]["iteration"] == 12 and meta["training"]["complete"] is True


def test_interrupted_checkpoint_write_keeps_previous_file(tmp_path: Path, monkeypatch):
    model, sample, step = _toy_problem()
    ckpt = tmp_path / "run.safetensors"
    trainer = Trainer(model, step, sample, epochs=2, iterations_per_epoch=2, checkpoint_path=ckpt, checkpoint_every=1)
    trainer.run()
    before = ckpt.read_bytes()

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)  # lwi.checkpoint imports it on use
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]


def test_resume_rejects_other_model(tmp_path: Path):
    model, sample, step = _toy_problem()
    ckpt = tmp_path / "run.safetensors"
    Trainer(model, step, sample, epochs=1, iterations_per_epoch=1, checkpoint_path=ckpt).run()
    other = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1))
    trainer = Trainer(other, step, sample, epochs=1, iterations_per_epoch=1)
    with pytest.raises(LWIError, match="another network"):
        trainer.load_checkpoint(ckpt)
    assert set(model_tensors(checkpoint.load(ckpt)[0])) == set(model.state_dict())


class _Oracle(nn.Module):
    """Returns one-hot logits of a fixed label volume for whatever window it is given (by position)."""

    def __init__(self, label: torch.Tensor, channels: int):
        super().__init__()
        self.label = label
        self.channels = channels

    def forward(self, x):  # sliding windows here are the whole volume (roi >= size)
        return torch.nn.functional.one_hot(self.label.long(), self.channels).permute(0, 4, 1, 2, 3).float()


def test_validator_dice_per_label():
    label = torch.zeros(1, 16, 16, 16)
    label[0, 2:8, 2:8, 2:8] = 1
    label[0, 10:14, 10:14, 10:14] = 2
    image = torch.randn(1, 16, 16, 16)
    labels = {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
    perfect = Validator([(image, label)], labels, roi_size=(16, 16, 16))(_Oracle(label, 4))
    assert perfect["dice"] == {"liver": 1.0, "spleen": 1.0, "kidney": None}  # kidney absent: not scored
    assert perfect["mean_dice"] == 1.0

    # Predict the liver cube half as large: Dice = 2 * 108 / (108 + 216) = 2/3; spleen missed.
    wrong = torch.zeros_like(label)
    wrong[0, 2:8, 2:8, 2:5] = 1
    result = Validator([(image, label)], labels, roi_size=(16, 16, 16))(_Oracle(wrong, 4))
    assert result["dice"]["liver"] == pytest.approx(2 / 3, rel=1e-5)
    assert result["dice"]["spleen"] == pytest.approx(0.0)
    assert result["mean_dice"] == pytest.approx(1 / 3, rel=1e-5)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(LWIError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LWIError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_step1_run_lowers_reconstruction_and_order_losses():
    """Short Step-1 run (the real Step-1 model, transformation and losses) on synthetic volumes whose
    intensity rises along depth, so the sub-volume order is learnable from content in a few steps."""
    from lwi.pretraining import Step1Model, step1_losses
    from lwi.transformation import TransformationModule

    torch.manual_seed(0)
    roi = (16, 16, 64)
    model = Step1Model.build("unetr", 1, roi, hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4)
    assert model.num_subvolumes == 4
    transform = TransformationModule(model.num_subvolumes, mask_ratio=0.25, cube_size=16)
    ramp = torch.linspace(0, 1, roi[2]).view(1, 1, 1, 1, -1)

    def sample(generator):
        return ramp + 0.1 * torch.randn(2, 1, *roi, generator=generator)

    def step(net, images, generator):
        return step1_losses(net, images, transform, generator=generator)

    trainer = Trainer(
        model, step, sample, stage="pretrain", epochs=8, iterations_per_epoch=4, lr=3e-3, warmup_iterations=2,
        report_seconds=1e9,
    )
    trainer.run()
    first, last = trainer.history[0], trainer.history[-1]
    assert len(first["order"]) == 4  # one order loss per encoder level (UNETR z3, z6, z9, z12)
    assert sum(first["order"]) == pytest.approx(4 * math.log(4), rel=0.1)  # chance level at the start
    assert last["reconstruction"] < 0.5 * first["reconstruction"]
    assert sum(last["order"]) < 0.85 * sum(first["order"])


def test_after_step_sees_the_global_iteration_across_a_resume(tmp_path: Path):
    ckpt = tmp_path / "run.safetensors"
    model, sample, step = _toy_problem()
    seen = []
    first = Trainer(
        model, step, sample, epochs=2, iterations_per_epoch=3, checkpoint_path=ckpt, checkpoint_every=1,
        after_step=lambda t: seen.append((t.iteration, t.epoch)),
    )
    first.run()
    assert seen == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (6, 2)]

    seen.clear()
    model, sample, step = _toy_problem()
    longer = Trainer(
        model, step, sample, epochs=3, iterations_per_epoch=3, after_step=lambda t: seen.append(t.iteration)
    )
    longer.load_checkpoint(ckpt)
    longer.run()
    assert seen == [7, 8, 9]  # continues the count of the interrupted run, not from 1


def test_gradient_clipping_bounds_the_update():
    def one_step(clip):
        torch.manual_seed(0)
        model = nn.Conv3d(1, 1, 1, bias=False)
        grads = []

        def step(net, batch, generator):
            return {"total": 1000.0 * net(batch).sum()}  # a huge gradient

        trainer = Trainer(
            model, step, lambda g: torch.ones(1, 1, 2, 2, 2), epochs=1, iterations_per_epoch=1, lr=1.0,
            weight_decay=0.0, clip_grad_norm=clip, after_step=lambda t: grads.append(model.weight.grad.norm()),
        )
        trainer.run()
        return float(grads[0])

    clipped_norm = one_step(12.0)
    raw_norm = one_step(None)
    assert clipped_norm == pytest.approx(12.0, rel=1e-4)
    assert raw_norm == pytest.approx(8000.0, rel=1e-4)
