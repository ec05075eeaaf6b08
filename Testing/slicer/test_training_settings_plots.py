"""LWITraining's settings -> ``lwi train`` command line, and progress events -> plot series
(LWICommon/training_settings.py and LWICommon/plots.py)."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import plots, training_settings  # noqa: E402
from LWICommon.process import parse_line  # noqa: E402
from LWICommon.training_settings import TrainingSettings  # noqa: E402


def _value(args, flag, n=1):
    i = args.index(flag)
    return args[i + 1 : i + 1 + n]


def test_default_settings_leave_the_plan_to_the_core():
    # One source of defaults: the panel passes nothing the user did not set, so lwi train's plan
    # (the same as lwi plan's) chooses network, ROI, batch and iterations.
    s = TrainingSettings()
    assert s.problems() == []
    args = training_settings.train_args(s, "/data/set", "/models/m.lwi.safetensors", python="/py")
    assert args[:4] == ["/py", "-m", "lwi", "train"]
    assert _value(args, "--data") == ["/data/set"] and _value(args, "--out") == ["/models/m.lwi.safetensors"]
    assert _value(args, "--strategy") == ["lwi"]
    for planned in ("--arch", "--roi", "--pretrain-epochs", "--epochs", "--lr", "--batch-size", "--cube-size", "--time"):
        assert planned not in args
    assert _value(args, "--mask-ratio") == ["0.4"]
    assert _value(args, "--device") == ["auto"] and args[-2:] == ["--progress", "json"]
    # "auto" spacing and intensity leave the choice to the core (median spacing, dataset modality).
    assert "--spacing" not in args and "--modality" not in args
    assert "--resume" not in args and "--overwrite" not in args
    s.time_budget = "20m"
    assert _value(training_settings.train_args(s, "/d", "/o", python="/py"), "--time") == ["20m"]
    assert any("time budget" in p for p in TrainingSettings(time_budget="soon").problems())


def test_the_panel_gets_the_same_plan_as_the_command_line(tmp_path):
    from lwi.data.phantoms import write_phantom_dataset
    from lwi.plan import plan_options

    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(32, 32, 24), spacing=(6.0, 6.0, 8.0))
    s = TrainingSettings(device="cpu", epochs=4, pretrain_epochs=1)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    plan = training_settings.query_plan(s, str(data), python=sys.executable, env=env, probe=False)
    options, cli_plan = plan_options(str(data), {"epochs": 4, "pretrain_epochs": 1, "mask_ratio": 0.4, "seed": 0}, device="cpu", probe=False)
    assert plan["settings"] == json.loads(json.dumps(cli_plan.settings))
    assert plan["settings"]["epochs"] == 4 and plan["summary"][0].startswith("Plan for")
    # A warning event as the core writes it, shown by the panel.
    assert training_settings.warning_text({"event": "warning", "message": "'spleen' is not being learned"}).startswith("Warning: ")


def test_every_setting_reaches_the_command_line():
    s = TrainingSettings(
        architecture="segresnet",
        strategy="scratch",
        pretrain_epochs=3,
        epochs=7,
        roi=(64, 64, 32),
        spacing=(1.5, 1.5, 2.0),
        intensity="CT",
        device="cpu",
        learning_rate=3e-4,
        mask_ratio=0.6,
        cube_size=8,
        batch_size=4,
        seed=5,
    )
    args = training_settings.train_args(s, "/d", "/o", resume=True, overwrite=True, python="/py")
    assert _value(args, "--arch") == ["segresnet"] and _value(args, "--strategy") == ["scratch"]
    assert _value(args, "--roi", 3) == ["64", "64", "32"] and _value(args, "--spacing", 3) == ["1.5", "1.5", "2.0"]
    assert _value(args, "--modality") == ["CT"] and _value(args, "--device") == ["cpu"]
    assert _value(args, "--lr") == ["0.0003"] and _value(args, "--mask-ratio") == ["0.6"]
    assert _value(args, "--cube-size") == ["8"] and _value(args, "--batch-size") == ["4"]
    assert _value(args, "--seed") == ["5"] and _value(args, "--epochs") == ["7"]
    assert "--resume" in args and "--overwrite" not in args  # resuming never overwrites

    preview = s.preview_options()
    assert preview["arch"] == "segresnet" and preview["roi"] == [64, 64, 32]
    assert preview["mask_ratio"] == 0.6 and preview["cube_size"] == 8 and preview["modality"] == "CT"


def test_settings_round_trip_and_problems():
    s = TrainingSettings(roi=(96, 96, 64), spacing=(1.0, 1.0, 1.0))
    assert TrainingSettings.from_dict(s.to_dict()) == s
    assert TrainingSettings.from_dict({"epochs": 5, "unknown": 1}).epochs == 5
    assert any("cube" in p for p in TrainingSettings(roi=(96, 96, 40)).problems())
    assert any("mask ratio" in p for p in TrainingSettings(mask_ratio=1.0).problems())
    assert any("Name" in p for p in TrainingSettings(model_name=" ").problems())
    assert any("strategy" in p for p in TrainingSettings(strategy="magic").problems())


def test_spacing_text():
    assert training_settings.parse_spacing("") is None and training_settings.parse_spacing("auto") is None
    assert training_settings.parse_spacing("1.5") == (1.5, 1.5, 1.5)
    assert training_settings.parse_spacing("1.5, 1.5 2") == (1.5, 1.5, 2.0)
    assert training_settings.format_spacing((1.5, 1.5, 2.0)) == "1.5 1.5 2"
    for bad in ("1 2", "a b c", "1 -1 1"):
        with pytest.raises(ValueError):
            training_settings.parse_spacing(bad)


def test_the_command_line_parses_with_the_core_train_command():
    train = pytest.importorskip("lwi.commands.train", reason="lwi train is not there yet")
    import argparse

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    s = TrainingSettings(spacing=(1.5, 1.5, 2.0), intensity="MR", roi=(64, 64, 64))
    args = parser.parse_args(training_settings.train_args(s, "/d", "/o", resume=True, python="/py")[4:])
    assert args.data == "/d" and str(args.out) == "/o" and args.strategy == "lwi"
    assert list(args.roi) == [64, 64, 64] and args.pretrain_epochs is None and args.epochs is None


# -- plots ----------------------------------------------------------------------------------


def _events():
    """Events as the core writes them (lwi.progress.Progress in JSON mode), read back as the module does."""
    from lwi.progress import Progress

    stream = io.StringIO()
    p = Progress("json", stream=stream)
    p.plan(8)
    p.start("preprocess", 3)
    p.update(3, 3)
    p.start("pretrain", 4, offset=0)
    for it in (2, 4):
        p.update(it, 4, epoch=it // 2, epochs=2, iteration=it, iterations=4, loss=1.0 / it,
                 reconstruction=0.5 / it, order=[0.25 / it, 0.25 / it], lr=1e-4)
    p.start("finetune", 4, offset=4)
    for it in (2, 4):
        p.update(it, 4, epoch=it // 2, epochs=2, iteration=it, iterations=4, loss=2.0 / it, lr=1e-4)
        p.update(it, 4, epochs=2, iterations=4, epoch=it // 2, iteration=it,
                 dice={"liver": 0.5 * it / 4, "spleen": None}, mean_dice=0.5 * it / 4, loss=2.0 / it)
    p.log("saved")
    p.result(model="/m")
    return [parse_line(line) for line in stream.getvalue().splitlines()]


def test_progress_events_become_loss_and_dice_series():
    curves = plots.TrainingCurves()
    changed = [curves.add(e) for e in _events()]
    assert sum(changed) == 6  # 2 Step-1 points, 2 Step-2 points, 2 validations; nothing else

    columns, rows = curves.table("step1")
    assert columns == ["epoch", "loss", "reconstruction", "order"]
    assert rows == [[1.0, 0.5, 0.25, 0.25], [2.0, 0.25, 0.125, 0.125]]

    columns, rows = curves.table("step2")
    assert columns == ["epoch", "loss"]
    assert [r[0] for r in rows] == [3.0, 4.0]  # Step 2 continues after Step 1's 2 epochs
    assert [r[1] for r in rows] == [1.0, 0.5]

    columns, rows = curves.table("validation")
    assert columns == ["epoch", "mean Dice", "Dice liver", "Dice spleen"]
    assert [r[:3] for r in rows] == [[3.0, 0.25, 0.25], [4.0, 0.5, 0.5]]
    assert all(r[3] != r[3] for r in rows)  # a label without a score is NaN (a gap), not 0

    names = [s.name for s in curves.series()]
    assert names == [
        "Step 1 loss", "Step 1 reconstruction", "Step 1 order", "Step 2 loss",
        "validation mean Dice", "validation Dice liver", "validation Dice spleen",
    ]


def test_scratch_runs_have_only_step2_series_and_titles_name_the_steps():
    curves = plots.TrainingCurves()
    curves.add({"event": "progress", "stage": "finetune", "epoch": 1, "epochs": 4, "iteration": 2,
                "iterations": 8, "loss": 0.9})
    assert curves.table("step1")[1] == [] and curves.table("step2")[1] == [[1.0, 0.9]]
    assert [s.table for s in curves.series()] == ["step2"]
    assert plots.stage_title("pretrain").startswith("Step 1") and plots.stage_title("finetune").startswith("Step 2")
    assert not curves.add({"event": "log", "message": "x"})
