"""``lwi experiment`` end to end in real subprocesses on phantoms at a tiny budget: the draws, one
results line per run with per-case scores, the report and plots, JSON progress, resumption that
skips finished runs, and an output folder that is never silently replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lwi.data.phantoms import write_phantom_dataset
from lwi.data.split import draw_training_cases, hold_out
from lwi.experiment import read_results
from lwi.report import case_mean
from lwi.statistics import paired_comparison

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]", "--arch-param", "blocks_up=[1]",
    "--roi", "16", "16", "16", "--cube-size", "8", "--batch-size", "1", "--pretrain-epochs", "2", "--epochs", "3",
    "--device", "cpu",
]


def _lwi(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "lwi", *args], capture_output=True, text=True, encoding="utf-8", env=env, timeout=600
    )


def _events(proc: subprocess.CompletedProcess) -> list:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_draws_are_nested_and_fixed():
    pool = [f"case{i:02d}" for i in range(12)]
    five = draw_training_cases(pool, 5, seed=1)
    assert len(five) == 5 and set(five) <= set(pool)
    assert set(five) <= set(draw_training_cases(pool, 8, seed=1))  # K=5 is inside K=8 of the same seed
    assert five == draw_training_cases(list(reversed(pool)), 5, seed=1)  # independent of listing order
    assert five != draw_training_cases(pool, 5, seed=2)
    test = hold_out(pool, 3)
    assert len(test) == 3 and test == hold_out(pool, 3)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    data = write_phantom_dataset(root / "phantoms", 5, seed=0, shape=(24, 24, 16), spacing=(8.0, 8.0, 12.0))
    out = root / "run"
    args = [
        "experiment", "--data", str(data), "--test-cases", "2", "--strategies", "lwi", "scratch", "--k", "1", "2",
        "--seeds", "0", "--out", str(out), "--parallel", "2", *TINY,
    ]
    proc = _lwi(*args, "--progress", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "args": args, "events": _events(proc), "data": data}


@pytest.mark.slow
def test_every_run_is_trained_evaluated_and_recorded(experiment):
    out = experiment["out"]
    config = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    assert len(config["test_cases"]) == 2 and len(config["pool"]) == 3
    assert not set(config["test_cases"]) & set(config["pool"])
    results = read_results(out / "results.jsonl")
    assert sorted(r["run"] for r in results) == [
        "k1-seed0-lwi", "k1-seed0-scratch", "k2-seed0-lwi", "k2-seed0-scratch",
    ]
    for r in results:
        assert len(r["train_cases"]) == r["k"] and set(r["train_cases"]) <= set(config["pool"])
        assert [c["case"] for c in r["cases"]] == config["test_cases"]
        for case in r["cases"]:
            assert set(case["dice"]) == set(case["hd95"]) == {"liver", "spleen", "kidney", "vertebra"}
        assert (out / r["model"]).is_file()
        # Same number of iterations for both strategies (scratch is matched to Step 1 + Step 2).
        assert r["curve"]  # the training curve came through the JSON progress
    by = {r["run"]: r for r in results}
    for k in (1, 2):
        lwi, scratch = by[f"k{k}-seed0-lwi"], by[f"k{k}-seed0-scratch"]
        assert lwi["train_cases"] == scratch["train_cases"]
        assert sum(lwi["iterations"].values()) == sum(scratch["iterations"].values())
        assert set(lwi["curve"]) == {"pretrain", "finetune"} and set(scratch["curve"]) == {"train"}


@pytest.mark.slow
def test_json_progress_and_report(experiment):
    out, events = experiment["out"], experiment["events"]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1 and "error" not in kinds
    assert kinds.count("run_started") == kinds.count("run_finished") == 4
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["stage"] == "experiment" and 0 <= e["fraction"] <= 1 for e in progress)
    result = events[-1]
    assert result["finished"] == 4 and result["failed"] == []
    # The report's paired comparison equals the statistics recomputed from results.jsonl.
    by = {r["run"]: r for r in read_results(out / "results.jsonl")}
    for k in (1, 2):
        a, b = by[f"k{k}-seed0-lwi"]["cases"], by[f"k{k}-seed0-scratch"]["cases"]
        expected = paired_comparison([case_mean(c["dice"]) for c in a], [case_mean(c["dice"]) for c in b])
        row = next(c for c in result["comparisons"] if c["k"] == k and c["metric"] == "Dice (mean of labels)")
        pooled = row["pooled"]
        assert pooled["n"] == 2 and pooled["mean_difference"] == pytest.approx(expected["mean_difference"], abs=1e-5)
        assert row["n_draws"] == 1 and row["mean_difference"] == pytest.approx(expected["mean_difference"], abs=1e-5)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| lwi | 1 | 1 |" in md and "| scratch | 2 | 1 |" in md and "lwi vs scratch" in md
    assert "by draw (main)" in md and "cannot show a difference" in md  # one draw
    assert "<table>" in (out / "report.html").read_text(encoding="utf-8")
    for name in ("learning_curve.png", "scatter_lwi_vs_scratch.png", "training_curves.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_existing_experiment_is_not_replaced_and_resume_skips_finished_runs(experiment):
    out, args = experiment["out"], experiment["args"]
    before = (out / "results.jsonl").read_text(encoding="utf-8")
    refused = _lwi(*args)
    assert refused.returncode == 1 and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert (out / "results.jsonl").read_text(encoding="utf-8") == before

    # Forget one finished run (as if the experiment had stopped during its evaluation).
    lines = before.splitlines()
    kept = [line for line in lines if json.loads(line)["run"] != "k2-seed0-scratch"]
    (out / "results.jsonl").write_text("\n".join(kept) + "\n")
    model = out / "runs" / "k2-seed0-scratch" / "model.lwi.safetensors"
    stamp = model.stat().st_mtime_ns
    resumed = _lwi(*args, "--resume", "--progress", "json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = _events(resumed)
    assert sorted(e["run"] for e in events if e["event"] == "run_skipped") == [
        "k1-seed0-lwi", "k1-seed0-scratch", "k2-seed0-lwi",
    ]
    assert [e["run"] for e in events if e["event"] == "run_started"] == ["k2-seed0-scratch"]
    assert model.stat().st_mtime_ns == stamp  # its training had finished: only evaluated again
    results = read_results(out / "results.jsonl")
    assert sorted(r["run"] for r in results) == sorted(json.loads(line)["run"] for line in lines)


@pytest.mark.slow
def test_bad_requests_fail_before_any_work(tmp_path, experiment):
    data = str(experiment["data"])
    too_many = _lwi("experiment", "--data", data, "--test-cases", "2", "--k", "4", "--out", str(tmp_path / "a"), *TINY)
    assert too_many.returncode == 1 and "K=4" in too_many.stderr and not (tmp_path / "a").exists()
    seed = _lwi("experiment", "--data", data, "--test-cases", "2", "--k", "1", "--seed", "3", "--out", str(tmp_path / "b"))
    assert seed.returncode == 1 and "--seeds" in seed.stderr and not (tmp_path / "b").exists()
    under_torchrun = _lwi(
        "experiment", "--data", data, "--test-cases", "2", "--k", "1", "--out", str(tmp_path / "c"), WORLD_SIZE="2"
    )
    assert under_torchrun.returncode == 1 and "torchrun" in under_torchrun.stderr and not (tmp_path / "c").exists()


def test_auto_is_not_a_strategy_to_compare(tmp_path):
    """auto is lwi train's choice of lwi or scratch: an experiment names the strategies it compares."""
    from lwi.errors import LWIError
    from lwi.experiment import run_experiment

    proc = _lwi("experiment", "--data", str(tmp_path), "--test-cases", "1", "--k", "1", "--strategies", "auto", "scratch",
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 2 and "invalid choice: 'auto'" in proc.stderr and not (tmp_path / "run").exists()
    with pytest.raises(LWIError, match="not a strategy"):
        run_experiment(tmp_path, tmp_path / "run", strategies=["auto", "scratch"], ks=[1], seeds=[0], test_cases=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_report_without_matplotlib_says_how_to_get_the_plots(experiment, tmp_path, monkeypatch):
    from lwi.report import write_report

    for name in ("experiment.json", "results.jsonl"):
        shutil.copy(experiment["out"] / name, tmp_path / name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    result = write_report(tmp_path)
    assert result["plots"] == [] and not (tmp_path / "plots").exists()
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "pip install 'lwi[report]'" in md and "![" not in md
    assert "| lwi | 2 | 1 |" in md  # the tables are still there


def test_separate_test_folder_cases_are_never_drawn_and_overwrite_removes_only_ours(tmp_path):
    from lwi.data.dataset import load_dataset
    from lwi.experiment import Experiment, write_subset
    from lwi.progress import Progress

    data = write_phantom_dataset(tmp_path / "phantoms", 5, seed=0, shape=(16, 16, 8))
    test = write_subset(tmp_path / "test", load_dataset(data), ["phantom_001", "phantom_003"], "test")
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    experiment = Experiment(out)
    specs = experiment.prepare(
        data=data, test=test, test_cases=None, strategies=["scratch"], ks=[2, 3], seeds=[0, 1], options={},
        unlabeled=None, resume=False, overwrite=False, progress=Progress("none"),
    )
    assert experiment.config["pool"] == ["phantom_000", "phantom_002", "phantom_004"]
    assert experiment.config["test_cases"] == ["phantom_001", "phantom_003"]
    assert [s.id for s in specs] == ["k2-seed0-scratch", "k2-seed1-scratch", "k3-seed0-scratch", "k3-seed1-scratch"]
    draw = load_dataset(out / "splits" / "k2-seed1")  # a real dataset folder pointing at the original files
    assert len(draw.cases) == 2 and all(c.image.parent == data / "imagesTr" for c in draw.cases)
    with pytest.raises(Exception, match="--resume"):
        Experiment(out).check_folder(resume=False, overwrite=False)
    Experiment(out).check_folder(resume=False, overwrite=True)  # only checks: nothing goes before the work
    assert (out / "experiment.json").is_file()
    Experiment(out).remove_earlier()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_failing_first_run_stops_the_experiment_with_one_error(tmp_path, experiment):
    # An unreadable extra image for Step 1 is only read by the run itself: every run would fail.
    junk = tmp_path / "unlabeled"
    junk.mkdir()
    (junk / "junk.nii.gz").write_bytes(b"not an image" * 100)
    out = tmp_path / "run"
    proc = _lwi(
        "experiment", "--data", str(experiment["data"]), "--test-cases", "2", "--strategies", "lwi", "--k", "1",
        "--seeds", "0", "1", "--out", str(out), *TINY, "--unlabeled", str(junk), "--progress", "json",
    )
    assert proc.returncode == 1
    events = _events(proc)
    kinds = [e["event"] for e in events]
    assert kinds.count("run_started") == 1 and kinds.count("run_failed") == 1  # the second run never started
    assert kinds[-1] == "error" and "result" not in kinds and "--resume" in events[-1]["message"]
    assert "junk.nii.gz" in next(e for e in events if e["event"] == "run_failed")["message"]
    assert read_results(out / "results.jsonl") == [] and (out / "report.md").exists()


@pytest.mark.slow
def test_a_setting_the_plan_refuses_fails_before_any_run(tmp_path, experiment):
    bad = list(TINY)
    bad[bad.index("--init-filters") + 1] = "4"  # not divisible into SegResNet's 8 normalisation groups
    out = tmp_path / "run"
    proc = _lwi("experiment", "--data", str(experiment["data"]), "--test-cases", "2", "--k", "1", "--out", str(out), *bad)
    assert proc.returncode == 1 and "divisible" in proc.stderr and "Started" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())  # nothing of an experiment: the same command can run again


def _prepare(tmp_path, data, **kw):
    from lwi.experiment import Experiment
    from lwi.progress import Progress

    args = dict(
        data=data, test=None, test_cases=2, strategies=["scratch"], ks=[2], seeds=[0], options={}, unlabeled=None,
        resume=False, overwrite=False, progress=Progress("none"),
    )
    args.update(kw)
    experiment = Experiment(tmp_path / "run")
    return experiment, experiment.prepare(**args)


def test_unlabeled_test_images_are_refused_by_name_and_by_content(tmp_path):
    """Step 1 must never see the test images (M5): the data's own imagesTr, or a test image renamed."""
    from lwi.errors import LWIError

    data = write_phantom_dataset(tmp_path / "phantoms", 6, seed=0, shape=(16, 16, 8))
    with pytest.raises(LWIError, match="are test cases of this experiment"):
        _prepare(tmp_path, data, unlabeled=[data / "imagesTr"])
    assert not (tmp_path / "run" / "experiment.json").exists()
    test = hold_out([f"phantom_{i:03d}" for i in range(6)], 2)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    source = next((data / "imagesTr").glob(f"{test[0]}*"))
    shutil.copy(source, renamed / ("other_name" + "".join(source.suffixes)))
    with pytest.raises(LWIError, match="other_name"):
        _prepare(tmp_path, data, unlabeled=[renamed])
    # Images that are not test cases are accepted.
    clean = tmp_path / "clean"
    clean.mkdir()
    train_name = next(n for n in (f"phantom_{i:03d}" for i in range(6)) if n not in test)
    shutil.copy(next((data / "imagesTr").glob(f"{train_name}*")), clean / ("x" + "".join(source.suffixes)))
    experiment, _ = _prepare(tmp_path, data, unlabeled=[clean])
    assert experiment.config["unlabeled"] == [str(clean.resolve())]


def test_step1_takes_each_image_once(tmp_path):
    """Unlabelled images that are training cases, or repeats under another name, enter Step 1 once."""
    from lwi.strategies.run import Run
    from lwi.strategies.settings import make_settings

    data = write_phantom_dataset(tmp_path / "phantoms", 4, seed=0, shape=(16, 16, 8))
    extra = tmp_path / "extra"
    extra.mkdir()
    first = sorted((data / "imagesTr").iterdir())[0]
    shutil.copy(first, extra / ("copy_a" + "".join(first.suffixes)))
    shutil.copy(first, extra / ("copy_b" + "".join(first.suffixes)))
    other = write_phantom_dataset(tmp_path / "other", 1, seed=9, shape=(16, 16, 8))
    new = next((other / "imagesTr").iterdir())
    shutil.copy(new, extra / ("new" + "".join(new.suffixes)))
    run = Run(data, make_settings({"val_fraction": 0.0, "seed": 0}), device="cpu",
              unlabeled=[data / "imagesTr", extra])
    assert len(run.train_cases) == 4
    assert [c.name for c in run.unlabeled] == ["new"] and run.n_step1_images == 5


def test_each_strategy_gets_its_own_plan_in_any_order(tmp_path):
    """scratch listed first used to plan every run without Step 1, so lwi's runs failed (M11)."""
    from lwi.experiment import strategy_planner

    data = write_phantom_dataset(tmp_path / "phantoms", 5, seed=0, shape=(24, 24, 16), spacing=(8.0, 8.0, 12.0))
    options = {
        "arch": "segresnet", "arch_params": {"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]},
        "roi": (16, 16, 16), "cube_size": 8, "batch_size": 1, "iterations": 10, "val_fraction": 0.0,
    }
    strategies = ["scratch", "lwi"]
    planner = strategy_planner(options, strategies, device="cpu", probe=False)
    experiment, specs = _prepare(tmp_path, data, strategies=strategies, options=options, plan=planner)
    lwi, scratch = experiment.options_for("lwi"), experiment.options_for("scratch")
    assert lwi["pretrain_epochs"] >= 1  # lwi's runs have a Step 1
    assert scratch == lwi  # a fixed budget: scratch matches lwi's Step 1 + Step 2
    spec = json.loads(experiment.spec_file(next(s for s in specs if s.strategy == "lwi"), "cpu").read_text(encoding="utf-8"))
    assert spec["options"]["pretrain_epochs"] == lwi["pretrain_epochs"]
    assert set(json.loads((tmp_path / "run" / "experiment.json").read_text(encoding="utf-8"))["plans"]) == {"scratch", "lwi"}
