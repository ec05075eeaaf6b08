"""Step 1 -> Step 2: what the transfer loads, that the order heads are gone from Step 2, resume of
both steps after an interruption, and the scratch baseline's iteration budget (Python API, CPU)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from lwi import checkpoint
from lwi.data.phantoms import write_phantom_dataset
from lwi.engine import model_tensors
from lwi.errors import LWIError
from lwi.names import derived_path
from lwi.progress import Progress
from lwi.strategies import finetune, pretrain, train
from lwi.strategies.settings import Settings
from lwi.strategies.step2 import build_step2_model

ARCH = {"arch": "segresnet", "arch_params": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}}
# val_fraction 0.2: these tests are about the validation split, which below 10 cases is only made on request.
SMALL = {**ARCH, "roi": (32, 32, 32), "batch_size": 2, "lr": 3e-3, "device": "cpu", "val_fraction": 0.2}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 3 cases: the split asked for (SMALL) holds one out for validation, 2 train (1 iteration per epoch).
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "ds", 3, seed=0, shape=(48, 48, 32))


@pytest.fixture(scope="module")
def step1(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("step1") / "step1.safetensors"
    pretrain(data, out, epochs=2, **SMALL)
    return out


def _json_lines(stream: io.StringIO):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_transfer_loads_encoder_and_decoder_but_not_heads_or_output(step1):
    tensors, meta = checkpoint.load(step1)
    weights = model_tensors(tensors)
    assert meta["format"] == "lwi-step1"
    assert any(k.startswith("order_heads.") for k in weights)  # the heads are in the Step-1 file...
    settings = Settings(**{**ARCH, "roi": (32, 32, 32)})
    model, info = build_step2_model(settings, 1, 5, init=(weights, step1.name))
    fresh, _ = build_step2_model(settings, 1, 5)  # same seed, no transfer

    state = model.state_dict()
    output = [k for k in state if k.startswith(tuple(model.output_prefixes))]
    body = [k for k in state if k not in output]
    assert output and body
    assert not any("order_heads" in k for k in state)  # ...but not in the Step-2 network
    for key in body:  # every encoder and decoder tensor comes from Step 1, value for value
        assert torch.equal(state[key], weights["net." + key]), key
    for key in output:  # the output layer is new: the fresh initialisation, not Step 1's
        assert torch.equal(state[key], fresh.state_dict()[key]), key
        assert state[key].shape != weights["net." + key].shape or not torch.equal(state[key], weights["net." + key])
    assert info == {"init": step1.name, "loaded_tensors": len(body), "new_tensors": len(output)}


def test_order_heads_take_no_part_in_step2(data, step1, tmp_path, monkeypatch):
    settings = Settings(**{**ARCH, "roi": (32, 32, 32)})
    weights = model_tensors(checkpoint.load(step1)[0])
    model, _ = build_step2_model(settings, 1, 5, init=(weights, step1.name))
    assert not any("order" in name for name, _ in model.named_modules())
    from monai.losses import DiceCELoss

    x = torch.rand(1, 1, 32, 32, 32)
    y = torch.randint(0, 5, (1, 1, 32, 32, 32)).float()
    DiceCELoss(to_onehot_y=True, softmax=True)(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())  # every weight is used, nothing dangles

    # A whole fine-tuning run never calls the order heads (they would raise here).
    from lwi.order_heads import OrderHeads

    def forbidden(self, levels):
        raise AssertionError("order heads called in Step 2")

    monkeypatch.setattr(OrderHeads, "forward", forbidden)
    stream = io.StringIO()
    result = finetune(data, step1, tmp_path / "m.lwi.safetensors", epochs=2, progress=Progress("json", stream), **SMALL)
    assert result["loaded_tensors"] > 0 and result["new_tensors"] > 0
    logs = [e["message"] for e in _json_lines(stream) if e["event"] == "log"]
    assert any(f"{result['loaded_tensors']} tensors loaded, {result['new_tensors']} new" in m for m in logs)


def test_finetune_rejects_checkpoint_of_another_network(data, step1, tmp_path):
    out = tmp_path / "m.lwi.safetensors"
    with pytest.raises(LWIError, match="pre-trained for segresnet"):
        finetune(data, step1, out, arch="unetr", device="cpu")
    other = {**SMALL, "arch_params": {**ARCH["arch_params"], "init_filters": 16}}
    with pytest.raises(LWIError, match="another architecture or input size"):
        finetune(data, step1, out, epochs=1, **other)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(LWIError, match="not a Step-1 checkpoint"):
        bundle = tmp_path / "x.safetensors"
        architecture = checkpoint.read_metadata(step1)["architecture"]
        header = {"format": "lwi-model", "architecture": architecture, "labels": [], "preprocessing": {}}
        checkpoint.save(bundle, {"w": torch.zeros(1)}, header)  # a model bundle given as the Step-1 checkpoint
        finetune(data, bundle, out, device="cpu")


def _stop_after_epoch(n):
    def hook(trainer):
        if trainer.epoch == n:
            raise KeyboardInterrupt

    return hook


def test_pretrain_resume_continues_from_saved_iteration(data, tmp_path):
    options = {**SMALL, "epochs": 4, "iterations_per_epoch": 1, "checkpoint_every": 1}
    reference = tmp_path / "reference.safetensors"
    pretrain(data, reference, **options)

    out = tmp_path / "run.safetensors"
    with pytest.raises(KeyboardInterrupt):
        pretrain(data, out, on_epoch_end=_stop_after_epoch(2), **options)
    assert checkpoint.read_metadata(out)["training"]["iteration"] == 2
    with pytest.raises(LWIError, match="already exists"):
        pretrain(data, out, **options)  # no silent restart over an interrupted run

    stream = io.StringIO()
    pretrain(data, out, resume=True, device="cpu", progress=Progress("json", stream))
    events = _json_lines(stream)
    iterations = [e["iteration"] for e in events if e.get("stage") == "pretrain"]
    assert min(iterations) > 2 and iterations[-1] == 4  # continued, not restarted
    assert any("at iteration 2 of 4" in e.get("message", "") for e in events)
    resumed, meta = checkpoint.load(out)
    expected, _ = checkpoint.load(reference)
    assert meta["training"]["complete"] is True
    for key, value in model_tensors(expected).items():
        assert torch.equal(resumed[key], value), key


def test_finetune_resume_continues_from_saved_iteration(data, step1, tmp_path):
    options = {**SMALL, "epochs": 4, "iterations_per_epoch": 2, "checkpoint_every": 1, "val_every": 2}
    reference = tmp_path / "reference.lwi.safetensors"
    finetune(data, step1, reference, **options)

    out = tmp_path / "run.lwi.safetensors"
    with pytest.raises(KeyboardInterrupt):
        finetune(data, step1, out, on_epoch_end=_stop_after_epoch(3), **options)
    last = derived_path(out, "last")
    assert last.name == "run.last.lwi.safetensors"
    assert checkpoint.read_metadata(last)["training"]["iteration"] == 6

    stream = io.StringIO()
    result = finetune(data, step1, out, resume=True, device="cpu", progress=Progress("json", stream))
    events = _json_lines(stream)
    iterations = [e["iteration"] for e in events if e.get("stage") == "finetune"]
    assert min(iterations) > 6 and iterations[-1] == 8  # continued, not restarted
    assert any("at iteration 6 of 8" in e.get("message", "") for e in events)
    assert result["iterations"] == 8
    resumed, _ = checkpoint.load(last)
    expected, _ = checkpoint.load(derived_path(reference, "last"))
    for key, value in model_tensors(expected).items():
        assert torch.equal(resumed[key], value), key
    assert out.exists()  # the best model (a bundle) is there too


def test_scratch_gets_the_same_total_iterations_as_lwi(data, tmp_path):
    stream = io.StringIO()
    result = train(
        data, tmp_path / "s.lwi.safetensors", strategy="scratch", pretrain_epochs=2, epochs=1,
        iterations_per_epoch=1, progress=Progress("json", stream), **SMALL,
    )
    # lwi would run 2 Step-1 + 1 Step-2 iterations; scratch runs all 3 as supervised training.
    assert result["iterations"] == {"train": 3}
    assert result["strategy"] == "scratch"
    steps = [e for e in _json_lines(stream) if e.get("stage") == "train"]
    assert steps[-1]["fraction"] == 1.0
    assert not derived_path(tmp_path / "s.lwi.safetensors", "step1").exists()
    bundle_meta = checkpoint.read_metadata(tmp_path / "s.lwi.safetensors")
    assert bundle_meta["provenance"]["strategy"] == "scratch"


# -- the held-out cases of Step 1 stay held out ---------------------------------------------------
def _held_out(path: Path):
    return checkpoint.read_metadata(path)["data"]["held_out"]


def test_finetune_validates_on_the_cases_step1_held_out_whatever_its_seed(data, step1, tmp_path):
    from lwi.data.dataset import load_dataset
    from lwi.data.split import split_cases

    held = _held_out(step1)
    assert len(held) == 1
    # A seed whose own split would hold out another case (a case Step 1 trained on).
    seed = next(s for s in range(1, 50) if [c.name for c in split_cases(load_dataset(data), s, 0.2)[1]] != held)
    out = tmp_path / "ft.lwi.safetensors"
    finetune(data, step1, out, epochs=1, seed=seed, **{k: v for k, v in SMALL.items() if k != "lr"})
    assert checkpoint.read_metadata(out)["provenance"]["held_out"] == held


def test_finetune_refuses_data_without_the_held_out_case(data, step1, tmp_path):
    import shutil

    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    meta = json.loads((changed / "dataset.json").read_text(encoding="utf-8"))
    gone = _held_out(step1)[0]
    meta["training"] = [e for e in meta["training"] if gone not in e["image"]]
    (changed / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(LWIError, match="data changed"):
        finetune(changed, step1, tmp_path / "ft.lwi.safetensors", epochs=1, device="cpu")
    assert not (tmp_path / "ft.lwi.safetensors").exists()


def test_unlabeled_images_that_are_held_out_cases_are_refused(data, tmp_path):
    with pytest.raises(LWIError, match="held-out validation cases"):
        pretrain(data, tmp_path / "s1.safetensors", unlabeled=[data / "imagesTr"], epochs=1, **SMALL)
    assert not (tmp_path / "s1.safetensors").exists()


def test_scratch_with_no_step1_budget_trains_exactly_the_step2_budget(data, tmp_path):
    result = train(
        data, tmp_path / "s.lwi.safetensors", strategy="scratch", pretrain_epochs=0, epochs=3,
        iterations_per_epoch=1, **SMALL,
    )
    assert result["iterations"] == {"train": 3}
    with pytest.raises(LWIError, match="scratch"):
        train(data, tmp_path / "l.lwi.safetensors", strategy="lwi", pretrain_epochs=0, epochs=3, **SMALL)


def test_train_without_a_strategy_follows_the_plans_rule_and_resumes_what_it_started(data, step1, tmp_path):
    """The Python API's default strategy is auto, as lwi train's: a short Step 2 is trained from scratch
    (lwi.strategy_choice.choose_strategy), a given Step-1 budget means lwi; resuming reads the strategy from the files."""
    import shutil

    from lwi.strategies import get_strategy
    from lwi.strategy_choice import resumed_strategy

    short = tmp_path / "short.lwi.safetensors"
    result = train(data, short, epochs=2, iterations_per_epoch=1, **SMALL)
    assert result["strategy"] == "scratch" and result["iterations"] == {"train": 2}  # Step 2's budget, as the plan's
    assert checkpoint.read_metadata(short)["provenance"]["strategy"] == "scratch"
    assert resumed_strategy(short) == "scratch"

    asked = tmp_path / "asked.lwi.safetensors"
    result = train(data, asked, pretrain_epochs=1, epochs=1, iterations_per_epoch=1, **SMALL)
    assert result["strategy"] == "lwi" and result["iterations"] == {"pretrain": 1, "finetune": 1}

    # A run stopped after Step 1 (only its Step-1 checkpoint there) resumes as lwi.
    stopped = tmp_path / "stopped.lwi.safetensors"
    shutil.copy(step1, derived_path(stopped, "step1"))
    assert resumed_strategy(stopped) == "lwi"
    resumed = train(data, stopped, resume=True, epochs=1, device="cpu")  # Step 2 of that run, no new Step 1
    assert resumed["strategy"] == "lwi" and resumed["iterations"]["finetune"] == 1
    with pytest.raises(LWIError, match="Nothing to resume"):
        resumed_strategy(tmp_path / "never.lwi.safetensors")
    with pytest.raises(LWIError, match="not a strategy"):
        get_strategy("auto")  # what lwi experiment and every strategy lookup say


def test_below_ten_cases_every_case_is_trained_by_default_and_from_ten_one_in_five_validates(tmp_path):
    """The small-data default (docs/evidence.md, section 3): with few cases a held-out one costs more
    in training than its validation gains; --val-fraction and dataset.json's list still hold cases out."""
    import json as json_

    from lwi.data.dataset import load_dataset
    from lwi.data.split import SMALL_DATA_CASES, split_cases

    folder = write_phantom_dataset(tmp_path / "ds", SMALL_DATA_CASES, seed=0, shape=(16, 16, 16))
    spec = json_.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    for n, held_by_default in ((3, 0), (5, 0), (SMALL_DATA_CASES - 1, 0), (SMALL_DATA_CASES, 2)):
        (folder / "dataset.json").write_text(json_.dumps({**spec, "training": spec["training"][:n]}), encoding="utf-8")
        dataset = load_dataset(folder)
        train_cases, held, why = split_cases(dataset, 0, None)
        assert (len(train_cases), len(held)) == (n - held_by_default, held_by_default), why
        assert ("fewer than 10 cases" in why) == (held_by_default == 0), why
        assert len(split_cases(dataset, 0, 0.2)[1]) == max(1, round(0.2 * n))  # asked for: held out
        assert split_cases(dataset, 0, 0.0)[1] == []
