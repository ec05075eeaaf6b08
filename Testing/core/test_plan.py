"""The training plan's rules on synthetic fingerprints (spacing, ROI divisibility, memory, iteration
budget), the fingerprint of a real phantom dataset, and ``lwi train`` following a tiny time budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lwi import plan as plans
from lwi import strategy_choice as choice
from lwi.data.fingerprint import Fingerprint, fingerprint
from lwi.errors import LWIError
from lwi.probe import _build_on_meta, memory_estimator
from lwi.transformation import TransformationModule

REPO = Path(__file__).resolve().parents[2]


def _fp(spacings, shapes, extents=None, modality="MR") -> Fingerprint:
    extents = extents if extents is not None else {"organ": [tuple(np.asarray(s) * np.asarray(p) / 2) for s, p in zip(shapes, spacings)]}
    return Fingerprint(
        modality=modality, channels=1, labels={1: "organ"}, spacings=[tuple(s) for s in spacings],
        shapes=[tuple(s) for s in shapes], extents=extents,
    )


def test_spacing_is_the_median_for_isotropic_data():
    fp = _fp([(1.0, 1.0, 1.2), (1.0, 1.0, 1.0), (0.8, 0.8, 1.0)], [(100, 100, 80)] * 3)
    spacing, reason = plans.target_spacing(fp)
    assert spacing == pytest.approx((1.0, 1.0, 1.0))
    assert "median" in reason


def test_anisotropic_data_gets_the_10th_percentile_on_the_coarse_axis():
    # Thick slices (5 mm) in most cases, a few thin ones: nnU-Net's rule keeps z finer than the median.
    spacings = [(0.8, 0.8, 5.0)] * 8 + [(0.8, 0.8, 2.0)] * 2
    fp = _fp(spacings, [(400, 400, 40)] * 10)
    spacing, reason = plans.target_spacing(fp)
    assert spacing[:2] == pytest.approx((0.8, 0.8))
    assert spacing[2] == pytest.approx(np.percentile([s[2] for s in spacings], 10))
    assert spacing[2] < 5.0 and "anisotropic" in reason
    # Anisotropic spacing but not fewer voxels along z: the median stays.
    fp_many_slices = _fp([(0.8, 0.8, 5.0)] * 10, [(400, 400, 400)] * 10)
    assert plans.target_spacing(fp_many_slices)[0][2] == pytest.approx(5.0)


def test_abdominal_ct_gets_the_papers_spacing_where_it_is_finer():
    """M10: BTCV-like CT (0.59-0.98 mm pixels, 2.5-5 mm slices) kept its median, 0.8 x 0.8 x 3 mm, because
    the rule needed every axis finer than the paper's; now each finer axis takes the paper's 1.5 mm."""
    rng = np.random.default_rng(0)
    spacings = [(p, p, z) for p, z in zip(rng.uniform(0.59, 0.98, 30), rng.choice([2.5, 3.0, 3.0, 5.0], 30))]
    fp = _fp(spacings, [(512, 512, 120)] * 30, modality="CT")
    spacing, reason = plans.target_spacing(fp)
    assert spacing == pytest.approx((1.5, 1.5, 3.0))
    assert "paper's CT spacing" in reason and "R, A" in reason
    fine = _fp([(0.7, 0.7, 1.0)] * 5, [(512, 512, 300)] * 5, modality="CT")
    assert plans.target_spacing(fine)[0] == pytest.approx((1.5, 1.5, 2.0))
    mr = _fp(spacings, [(512, 512, 120)] * 30, modality="MR")
    assert plans.target_spacing(mr)[0][0] < 1.0  # MR keeps its median


@pytest.mark.parametrize("arch,params", [
    ("segresnet", {"init_filters": 8}),
    ("segresnet", {"blocks_down": [1, 1, 1], "blocks_up": [1, 1]}),
    ("unetr", {}),
    ("swinunetr", {}),
    ("mednext", {}),
])
def test_roi_obeys_the_network_and_the_step1_cube(arch, params):
    fp = _fp([(1.0, 1.0, 1.0)] * 4, [(70, 45, 30)] * 4)
    divisor, min_depth = plans.roi_rules(arch, params, cube_size=16)
    roi, _ = plans.choose_roi(fp, (1.0, 1.0, 1.0), divisor, min_depth, max_voxels=10**9)
    # The real network takes it, and Step 1 can shuffle and mask it.
    net = _build_on_meta(arch, params, 1, 2, roi)
    assert all(r % net.roi_divisor == 0 and r % 16 == 0 for r in roi)
    assert net.num_subvolumes >= 2
    TransformationModule(net.num_subvolumes, cube_size=16).check_shape(roi)
    # It covers the median volume (the smallest multiple above it).
    assert all(r >= s for r, s in zip(roi, (70, 45, 30)))
    assert all(r - divisor < max(s, m) for r, s, m in zip(roi, (70, 45, 30), (divisor, divisor, min_depth)))


def test_roi_shrinks_until_the_memory_estimate_fits():
    fp = _fp([(1.0, 1.0, 1.0)] * 3, [(200, 200, 160)] * 3)

    def memory(roi, batch):  # bytes grow with the crop's voxels
        return float(np.prod(roi)) * batch * 1000.0

    budget = 96 * 96 * 96 * 2 * 1000.0
    roi, reasons = plans.choose_roi(fp, (1, 1, 1), 16, 32, max_voxels=10**9, memory=memory, memory_budget=budget)
    assert memory(roi, 2) <= budget
    assert all(r % 16 == 0 for r in roi)
    # One more step on any axis would not have fitted, or was not allowed.
    assert any(memory(tuple(r + 16 if i == a else r for i, r in enumerate(roi)), 2) > budget for a in range(3))
    assert any("fit" in r for r in reasons)
    with pytest.raises(LWIError, match="does not fit"):
        plans.choose_roi(fp, (1, 1, 1), 16, 32, max_voxels=10**9, memory=memory, memory_budget=1.0)


def test_memory_estimate_grows_with_the_crop_and_the_batch():
    estimate = memory_estimator("segresnet", {"init_filters": 8}, 1, 3)
    small, large = estimate((32, 32, 32), 2), estimate((64, 64, 64), 2)
    assert large > small
    assert estimate((64, 64, 64), 4) > large
    # The activations of a 64^3 crop are 8x those of a 32^3 crop (fixed costs aside).
    fixed = estimate((32, 32, 32), 0)
    assert (large - fixed) / (small - fixed) == pytest.approx(8.0, rel=0.01)


def test_cpu_cap_limits_the_crop():
    fp = _fp([(1.0, 1.0, 1.0)] * 3, [(300, 300, 200)] * 3)
    roi, _ = plans.choose_roi(fp, (1, 1, 1), 16, 32, max_voxels=plans.MAX_ROI_VOXELS["cpu"])
    assert np.prod(roi) <= plans.MAX_ROI_VOXELS["cpu"]


def test_time_budget_is_split_in_the_papers_ratio_and_fits():
    seconds, t1, t2, overhead = 1200.0, 0.4, 0.5, 100.0
    i1, i2 = plans.split_budget(seconds, t1, t2, overhead)
    assert i1 * t1 + i2 * t2 + overhead <= seconds
    assert i1 / i2 == pytest.approx(plans.STEP1_SHARE, rel=0.02)
    assert (i2 + 5) * t2 + i1 * t1 + overhead > seconds * plans.SAFETY  # and uses the budget
    # Scratch: everything for Step 2.
    j1, j2 = plans.split_budget(seconds, t1, t2, overhead, with_step1=False)
    assert j1 == 0 and j2 > i2


def test_iteration_budget_does_not_depend_on_the_number_of_cases():
    totals = []
    for n in (4, 16, 40):
        s = plans.budget_settings(800, 5000, {}, n_train=n, batch_size=2)
        totals.append((s["pretrain_epochs"] * s["iterations_per_epoch"], s["epochs"] * s["iterations_per_epoch"]))
    assert totals[0] == totals[1] == totals[2]
    assert abs(totals[0][1] - 5000) <= plans.PLAN_EPOCHS and abs(totals[0][0] - 800) <= 5000 / plans.PLAN_EPOCHS
    # A user's --epochs keeps its meaning: an epoch is the training cases / batch size.
    s = plans.budget_settings(800, 5000, {"epochs": 10}, n_train=8, batch_size=2)
    assert s["epochs"] == 10 and s["iterations_per_epoch"] == 4
    # --iterations is exact when it divides into the plan's epochs.
    s = plans.budget_settings(800, 5000, {"iterations": 300, "pretrain_iterations": 60}, n_train=8, batch_size=2)
    assert s["epochs"] * s["iterations_per_epoch"] == 300 and s["pretrain_epochs"] * s["iterations_per_epoch"] == 60
    # Only Step 2's budget given: Step 1 keeps the paper's ratio to it, not the plan's full count.
    s = plans.budget_settings(800, 5000, {"epochs": 50}, n_train=8, batch_size=2)
    assert s["pretrain_epochs"] == round(plans.STEP1_SHARE * 50)
    # No Step 1 at all (scratch for exactly the Step-2 budget).
    s = plans.budget_settings(800, 5000, {"iterations": 300, "pretrain_iterations": 0}, n_train=8, batch_size=2)
    assert s["pretrain_epochs"] == 0 and s["epochs"] * s["iterations_per_epoch"] == 300


def test_plan_keeps_what_the_user_gave_and_fills_the_rest():
    fp = _fp([(1.0, 1.0, 1.0)] * 5, [(40, 50, 36)] * 5)
    plan = plans.make_plan(None, {}, device="cpu", fp=fp, n_train=4, n_validation=1, probe=False)
    s = plan.settings
    assert s["arch"] == "segresnet" and s["lr"] == plans.LEARNING_RATES["segresnet"]
    assert s["roi"] == [48, 64, 48] and s["batch_size"] == plans.BATCH_SIZE
    given = {"arch": "unetr", "roi": (32, 32, 64), "lr": 2e-4, "epochs": 7}
    s = plans.make_plan(None, given, device="cpu", fp=fp, n_train=4, probe=False).settings
    assert s["arch"] == "unetr" and s["arch_params"] == {} and s["roi"] == (32, 32, 64)
    assert s["lr"] == 2e-4 and s["epochs"] == 7 and s["iterations_per_epoch"] == 2  # 4 cases / batch 2
    assert plans.make_plan(None, {"arch": "unetr"}, device="cpu", fp=fp, probe=False).settings["lr"] == plans.PAPER_LR


def test_duration():
    from argparse import ArgumentTypeError

    from lwi.option_types import duration

    assert duration("20m") == 1200
    assert duration("1h30m") == 5400
    assert duration("1.5h") == 5400
    assert duration("45") == 45
    for bad in ("soon", "20x", "-5", "0"):
        with pytest.raises(ArgumentTypeError):
            duration(bad)


def test_fingerprint_of_phantoms(tmp_path):
    from lwi.data.dataset import load_dataset
    from lwi.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "ph", 2, seed=0, shape=(40, 36, 24), spacing=(3.0, 3.0, 4.0))
    fp = fingerprint(load_dataset(data))
    assert fp.n_cases == 2 and fp.modality == "CT"
    assert fp.median_spacing() == pytest.approx((3.0, 3.0, 4.0))
    assert all(s[i] <= (40, 36, 24)[i] for s in fp.shapes for i in range(3))
    assert set(fp.extents) == set(fp.labels.values())
    for sizes in fp.extents.values():
        assert sizes and all(0 < e <= lim for size in sizes for e, lim in zip(size, (120, 108, 96)))
    assert fp.intensity["p00_5"] <= fp.intensity["mean"] <= fp.intensity["p99_5"]
    assert Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp


@pytest.mark.slow
def test_train_without_options_prints_its_plan_first_and_keeps_the_time_budget(tmp_path):
    from lwi.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(40, 40, 24), spacing=(6.0, 6.0, 8.0))
    out = tmp_path / "m.lwi.safetensors"
    budget = 45.0  # fingerprint, probe, preprocessing and validation of a tiny run fit; a few iterations remain
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch, monai, lwi.strategies"], env=env, check=True)
    startup = time.monotonic() - start  # Python and library imports, before lwi train's clock starts
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lwi", "train", "--data", str(data), "--out", str(out), "--device", "cpu",
         "--strategy", "lwi", "--time", f"{budget:g}s", "--progress", "json"],  # both steps fit the budget
        capture_output=True, text=True, encoding="utf-8", env=env, timeout=300,
    )
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "plan" in kinds and kinds.index("plan") < kinds.index("progress")
    plan = events[kinds.index("plan")]
    assert plan["time_budget"] == budget and plan["settings"]["arch"] == "segresnet"
    assert plan["seconds"]["total"] <= budget
    assert proc.stderr.index("Plan for") < proc.stderr.index("Step 1:")
    result = events[-1]
    assert result["event"] == "result" and out.exists()
    assert result["iterations"]["pretrain"] == plan["step1_iterations"]
    assert result["iterations"]["finetune"] == plan["step2_iterations"]
    # The budget covers the command from its start; Python and library imports come on top.
    assert wall <= budget + startup + 3.0, (wall, startup)


@pytest.mark.slow
def test_train_without_a_strategy_on_a_tiny_budget_trains_scratch_and_says_so(tmp_path):
    """The default --strategy auto: the plan picks scratch for a budget of a few iterations, prints it,
    and the model's provenance (lwi info) names scratch; no Step-1 file is written."""
    from lwi import checkpoint
    from lwi.data.phantoms import write_phantom_dataset
    from lwi.names import derived_path

    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(32, 32, 24), spacing=(6.0, 6.0, 8.0))
    out = tmp_path / "m.lwi.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lwi", "train", "--data", str(data), "--out", str(out), "--device", "cpu",
         "--time", "1s", "--progress", "json"],
        capture_output=True, text=True, encoding="utf-8", env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "  strategy: scratch  [" in proc.stderr and proc.stderr.index("strategy: scratch") < proc.stderr.index("Step 2")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    plan = next(e for e in events if e["event"] == "plan")
    assert plan["strategy"] == "scratch" and plan["step1_iterations"] == 0 and "not been shown ahead" in plan["reasons"]["strategy"]
    result = events[-1]
    assert result["event"] == "result" and result["strategy"] == "scratch"
    assert result["iterations"] == {"train": plan["step2_iterations"]}
    assert checkpoint.read_metadata(out)["provenance"]["strategy"] == "scratch"
    assert not derived_path(out, "step1").exists()
    info = subprocess.run([sys.executable, "-m", "lwi", "info", str(out)], capture_output=True, text=True, encoding="utf-8", env=env, timeout=120)
    assert info.returncode == 0 and "strategy scratch" in info.stdout and "auto" not in info.stdout


def test_timing_probe_uses_the_runs_own_mask_cube():
    """A given --cube-size 8 with a ROI that 16 does not divide must plan (the probe once used 16^3)."""
    from lwi.probe import time_iterations

    rates = time_iterations("segresnet", {"init_filters": 8}, (24, 32, 24), 1, 1, 3, "cpu", True, cube_size=8)
    assert rates["step1"] > 0 and rates["step2"] > 0
    with pytest.raises(LWIError, match="not divisible by the mask cube size 16"):
        time_iterations("segresnet", {"init_filters": 8}, (24, 32, 24), 1, 1, 3, "cpu", True, cube_size=16)


# -- the strategy: --strategy auto ----------------------------------------------------------------
RATES = {"step1": 0.5, "step2": 0.4, "build": 0.1, "window": 0.05}  # seconds, as the timing probe reports


@pytest.fixture
def fake_probe(monkeypatch):
    """The timing probe's answer fixed (a slow CPU), so the plan's arithmetic is exact; records what it was asked."""
    import lwi.probe

    asked = []

    def time_iterations(*args, **kwargs):
        asked.append(args[7])  # with_step1
        return dict(RATES)

    monkeypatch.setattr(lwi.probe, "time_iterations", time_iterations)
    return asked


def _plan(given=None, **kwargs):
    fp = _fp([(1.0, 1.0, 1.0)] * 5, [(40, 50, 36)] * 5)
    return plans.make_plan(None, dict(given or {}), fp=fp, n_train=5, started=time.monotonic(), **kwargs)


def test_the_strategy_rule(monkeypatch):
    # No budget measured so far shows LWI ahead by draw: auto trains scratch unless Step 1 is asked for.
    assert choice.LWI_MIN_STEP2_ITERATIONS is None
    for budget in (100, 1200, 25000, 10**6):
        name, why = choice.choose_strategy(budget)
        assert name == "scratch" and "not been shown ahead" in why and "evidence.md" in why
    # What the user gives that asks for (or against) Step 1 is never overruled by the budget.
    assert choice.choose_strategy(100, step1_given=40)[0] == "lwi"
    assert choice.choose_strategy(10**6, step1_given=0)[0] == "scratch"
    assert choice.choose_strategy(100, unlabeled=True)[0] == "lwi"
    assert set(choice.AUTO_CHOICES) == {"lwi", "scratch"}
    # A threshold, once a measurement sets one, switches to lwi from that budget on.
    monkeypatch.setattr(choice, "LWI_MIN_STEP2_ITERATIONS", 440)
    assert choice.choose_strategy(439)[0] == "scratch" and choice.choose_strategy(440)[0] == "lwi"


def test_auto_on_a_small_cpu_budget_is_scratch_with_the_whole_budget_in_step2(fake_probe):
    budget = 200.0
    lwi = _plan(device="cpu", time_budget=budget, strategy="lwi")
    assert lwi.strategy == "lwi" and lwi.reasons["strategy"] == "given"  # an explicit strategy stays
    assert lwi.step2_iterations > 0 and lwi.step1_iterations > 0

    auto = _plan(device="cpu", time_budget=budget)  # the default: auto
    assert auto.strategy == "scratch" and "not been shown ahead" in auto.reasons["strategy"]
    assert fake_probe == [True, True]  # planned (and probed) as lwi, then re-split without Step 1
    # Scratch's plan is made for scratch: no Step 1, the time Step 1 would take goes to Step 2.
    assert auto.step1_iterations == 0 and auto.settings["pretrain_epochs"] == 0
    assert auto.step2_iterations == auto.settings["epochs"] * auto.settings["iterations_per_epoch"]
    assert auto.step2_iterations > lwi.step2_iterations
    assert auto.seconds["step1"] == 0 and auto.seconds["total"] <= budget
    assert auto.seconds["step2"] > lwi.seconds["step2"]
    overhead = auto.seconds["total"] - auto.seconds["step2"]  # planning, preprocessing, files, validation
    expected = plans.split_budget(budget, RATES["step1"], RATES["step2"], overhead, with_step1=False)
    assert expected[1] <= auto.step2_iterations < expected[1] + auto.settings["iterations_per_epoch"]  # whole epochs
    lines = auto.lines()
    assert lines[1].startswith("  strategy: scratch  [") and "not been shown ahead" in lines[1]
    assert "(strategy auto: scratch)" in auto.alternative  # what a GPU would run
    assert auto.to_dict()["strategy"] == "scratch"  # the plan event: a strategy's name, never auto
    # An explicit scratch gets the same plan.
    scratch = _plan(device="cpu", time_budget=budget, strategy="scratch")
    assert (scratch.step1_iterations, scratch.step2_iterations) == (auto.step1_iterations, auto.step2_iterations)


def test_auto_with_the_gpu_budget_or_many_given_iterations_is_scratch_unless_step1_is_asked_for(monkeypatch, fake_probe):
    """Probe answers fixed (``fake_probe``): only the rule and the budget arithmetic run."""
    import torch

    import lwi.devices

    # The plan of a CUDA device, on this CPU machine: no probe, memory budget given.
    with monkeypatch.context() as patch:
        patch.setattr(lwi.devices, "resolve_device", lambda device: torch.device("cuda", 0))
        gpu = _plan(device="cuda", probe=False, memory_budget=80 * 2**30)
        gpu_lwi = _plan(device="cuda", probe=False, memory_budget=80 * 2**30, strategy="lwi")
    assert gpu.strategy == "scratch" and "not been shown ahead" in gpu.reasons["strategy"]
    assert (gpu.step1_iterations, gpu.step2_iterations) == (0, plans.GPU_STEP2_ITERATIONS)
    assert gpu.lines()[1].startswith("  strategy: scratch  [")
    # lwi, asked for: Step 1 gets the paper's share, in whole epochs, next to the same Step 2.
    assert gpu_lwi.step2_iterations == plans.GPU_STEP2_ITERATIONS
    assert abs(gpu_lwi.step1_iterations - plans.STEP1_SHARE * plans.GPU_STEP2_ITERATIONS) <= gpu_lwi.settings["iterations_per_epoch"]

    many = _plan({"iterations": 5000}, device="cpu")
    assert many.strategy == "scratch" and (many.step1_iterations, many.step2_iterations) == (0, 5000)
    few = _plan({"iterations": 300}, device="cpu")
    assert few.strategy == "scratch" and (few.step1_iterations, few.step2_iterations) == (0, 300)
    # A Step-1 budget asks for Step 1, and a Step-1 budget of 0 for none, whatever the Step-2 budget.
    asked = _plan({"iterations": 300, "pretrain_iterations": 60}, device="cpu")
    assert asked.strategy == "lwi" and (asked.step1_iterations, asked.step2_iterations) == (60, 300)
    none = _plan({"iterations": 5000, "pretrain_iterations": 0}, device="cpu")
    assert none.strategy == "scratch" and (none.step1_iterations, none.step2_iterations) == (0, 5000)
    # Unlabelled images are only used by Step 1: auto keeps it.
    assert _plan(device="cpu", time_budget=600.0, unlabeled=True).strategy == "lwi"
    # An explicit strategy is never changed, whatever the budget.
    assert _plan({"iterations": 300}, device="cpu", strategy="lwi").strategy == "lwi"
    assert _plan({"iterations": 5000}, device="cpu", strategy="scratch").strategy == "scratch"


@pytest.mark.parametrize("given, i1, i2", [
    ({"pretrain_iterations": 28800, "iterations": 180000}, 28800, 180000),  # was 27,000
    ({"pretrain_iterations": 30, "iterations": 1000}, 30, 1000),  # was 50
    ({}, 4000, 25000),  # the GPU default: was 3750
])
def test_step1_iterations_are_exact_not_rounded_to_epochs(given, i1, i2):
    """M6: Step 1 runs exactly the planned or given iterations (its last epoch may be partial)."""
    from lwi.strategies.settings import make_settings, step1_iterations, step2_iterations

    out = plans.budget_settings(4000, 25000, given, n_train=18, batch_size=2)
    settings = make_settings(out)
    assert step1_iterations(settings, 18) == i1
    assert step2_iterations(settings, 18)[1] == i2
