"""LWITraining's settings -> ``lwi train`` command line, and progress events -> plot series
(LWITrainingLib/training_settings.py and LWITrainingLib/plots.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from LWICommon.process import parse_line  # noqa: E402
from LWITrainingLib import plots, training_settings  # noqa: E402
from LWITrainingLib.training_settings import TrainingSettings  # noqa: E402


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
    for planned in ("--strategy", "--arch", "--roi", "--pretrain-epochs", "--epochs", "--lr", "--batch-size", "--cube-size", "--time"):
        assert planned not in args
    assert _value(args, "--mask-ratio") == ["0.4"]
    assert _value(args, "--device") == ["auto"] and args[-2:] == ["--progress", "json"]
    # "auto" spacing and intensity leave the choice to the core (median spacing, dataset modality).
    assert "--spacing" not in args and "--modality" not in args
    assert "--resume" not in args and "--overwrite" not in args
    s.time_budget = "20m"
    assert _value(training_settings.train_args(s, "/d", "/o", python="/py"), "--time") == ["20m"]
    assert any("--time" in p for p in TrainingSettings(time_budget="soon").problems())


@pytest.mark.slow
def test_the_panel_shows_the_plan_lwi_plan_gives_and_leaves_auto_settings_to_it(slicer_app, tmp_path, monkeypatch):
    """Show plan: the logic runs ``lwi plan`` in the background on the cases as Train exports them, with
    Train's options; its plan equals the one a user gets from ``lwi plan`` on the dataset folder."""
    from LWITrainingLib.training_logic import TrainingLogic

    from lwi.data.phantoms import write_phantom_dataset

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(32, 32, 24), spacing=(6.0, 6.0, 8.0))
    logic = TrainingLogic()
    cases = logic.addCases(logic.collectCasesFromFolder(str(data)))
    # Everything "auto" but the device, and a budget below the planning overhead: Step 2 gets the
    # plan's floor (2 iterations) whatever the timing probe measures, so the two plans can be compared
    # exactly; without --time the CPU default (30 min) gives far more. So small a budget makes the
    # "auto" strategy scratch (lwi/strategy_choice.py).
    settings = TrainingSettings(device="cpu", time_budget="1s")
    started = time.monotonic()
    runner = logic.plan(cases, settings)
    assert time.monotonic() - started < 5.0 and runner.running  # in the background, as the panel runs it
    for planned in ("--strategy", "--arch", "--roi", "--lr", "--batch-size", "--epochs", "--pretrain-epochs", "--spacing"):
        assert planned not in runner.args  # left to the plan, exactly as Train leaves them
    assert _value(runner.args, "--time") == ["1s"]
    runner.wait(timeout=120)
    assert runner.returncode == 0, runner.error_message()
    shown = logic.lastPlan
    assert logic.planIsCurrent(cases, settings) and not os.path.exists(runner.temp_dir)

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cli = subprocess.run(
        [sys.executable, "-m", "lwi", "plan", "--data", str(data), "--device", "cpu", "--time", "1s", "--progress", "json"],
        env=env, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    expected = next(e for e in map(parse_line, cli.stdout.splitlines()) if e and e["event"] == "plan")
    measured = ("seconds", "warnings", "reasons", "summary")  # times from the probe differ run to run
    assert {k: v for k, v in shown.items() if k not in measured} == {k: v for k, v in expected.items() if k not in measured}
    assert shown["strategy"] == expected["strategy"] == "scratch"  # the plan's choice, never "auto"
    assert (shown["step1_iterations"], shown["step2_iterations"]) == (0, 2)
    assert shown["settings"]["arch"] == "segresnet" and shown["settings"]["roi"] == expected["settings"]["roi"]
    for key in ("arch", "roi", "lr", "spacing"):
        assert shown["reasons"][key] == expected["reasons"][key] != "given"
    assert shown["warnings"][1:] == expected["warnings"][1:] and len(shown["warnings"]) == len(expected["warnings"])
    assert shown["seconds"]["total"] is not None and set(shown["seconds"]) == set(expected["seconds"])
    # What the panel shows: the summary lines lwi plan prints, the time estimate and the GPU line included.
    text = training_settings.plan_text(shown)
    assert text.splitlines() == shown["summary"] and text.splitlines()[:5] == expected["summary"][:5]
    assert "estimated time: Step 1" in text and "total" in text and "On a CUDA GPU" in text
    assert text.splitlines()[1].startswith("  strategy: scratch  [") and "not been shown ahead" in text

    # A setting the user gives reaches the plan; changing one makes the plan shown out of date.
    given = TrainingSettings(device="cpu", time_budget="1s", roi=(32, 32, 32))
    assert not logic.planIsCurrent(cases, given)
    unstarted = logic.plan(cases, given, start=False)
    assert _value(unstarted.args, "--roi", 3) == ["32", "32", "32"]
    unstarted.cancel()
    assert not os.path.exists(unstarted.temp_dir)
    # A warning event as the core writes it, shown by the panel.
    assert training_settings.warning_text({"event": "warning", "message": "'spleen' is not being learned"}).startswith("Warning: ")


def test_the_preview_takes_auto_settings_from_the_plan_and_says_when_it_has_none():
    plan = {"arch": "unetr", "roi": [96, 96, 64], "spacing": [1.5, 1.5, 2.0], "cube_size": 16}
    auto = TrainingSettings()
    planned = auto.preview_options(plan)
    assert (planned["arch"], planned["roi"], planned["spacing"]) == ("unetr", [96, 96, 64], [1.5, 1.5, 2.0])
    note = training_settings.preview_note(auto, plan)
    assert note.startswith("From the plan shown") and "unetr" in note and "96x96x64" in note
    # No plan: stand-ins, and the note names each one, so the user is not misled.
    guessed = auto.preview_options()
    assert guessed["arch"] == training_settings.PREVIEW_STAND_INS["arch"] and guessed["spacing"] is None
    note = training_settings.preview_note(auto)
    assert note.startswith("No current plan") and "network segresnet" in note and "ROI 64x64x64" in note
    assert "the image's own spacing" in note and "Show plan" in note
    # Given settings win over the plan and need no note.
    given = TrainingSettings(architecture="swinunetr", roi=(64, 64, 32), spacing=(1.0, 1.0, 1.0))
    options = given.preview_options(plan)
    assert (options["arch"], options["roi"], options["spacing"]) == ("swinunetr", [64, 64, 32], [1.0, 1.0, 1.0])
    assert training_settings.preview_note(given) == training_settings.preview_note(given, plan) == ""
    assert training_settings.preview_note(TrainingSettings(roi=(64, 64, 32)), plan) == "From the plan shown: network unetr, spacing 1.5 1.5 2 mm."


@pytest.mark.slow
def test_the_panels_preview_shows_the_current_plans_network_and_roi(slicer_app, tmp_path, monkeypatch):
    """Preview Step-1 input with "auto" network and ROI: the plan's, once Show plan made a plan for
    these cases and settings (the preview's N is the plan network's at the plan's ROI); before, and
    once the settings changed, stand-ins that the preview's status names."""
    import slicer
    from LWISegmentationLib.segmentation_logic import SegmentationLogic
    from LWITrainingLib.training_logic import TrainingLogic

    from lwi.data.phantoms import write_phantom_dataset
    from lwi.preview import subvolumes_for

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    slicer_app.addPythonModule("LWISegmentation", SegmentationLogic())
    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(32, 32, 24), spacing=(6.0, 6.0, 8.0))
    logic = TrainingLogic()
    cases = logic.addCases(logic.collectCasesFromFolder(str(data)))
    settings = TrainingSettings(device="cpu", seed=3)
    case = cases.rows[0].source

    def previewArgs(s):
        runner = logic.startPreview(case, s)
        runner.cancel()  # not started: removes its folder
        return _value(runner.args, "--arch"), [int(v) for v in _value(runner.args, "--roi", 3)]

    assert previewArgs(settings) == (["segresnet"], [64, 64, 64])
    assert logic.lastPreviewNote.startswith("No current plan") and "ROI 64x64x64" in logic.lastPreviewNote

    plan = logic.plan(cases, settings, wait=True, probe=False)["settings"]  # Show plan: lwi plan, for real
    assert plan["roi"] != [64, 64, 64]  # the plan's ROI tells the two apart
    runner = logic.startPreview(case, settings)
    assert _value(runner.args, "--arch") == [plan["arch"]] and [int(v) for v in _value(runner.args, "--roi", 3)] == plan["roi"]
    assert [float(v) for v in _value(runner.args, "--spacing", 3)] == plan["spacing"]
    assert logic.lastPreviewNote.startswith("From the plan shown") and plan["arch"] in logic.lastPreviewNote
    runner.start()
    assert runner.wait(120) == 0, runner.error_message()
    layout = next(n for n in slicer_app.nodesByClass("vtkMRMLLabelMapVolumeNode") if n.GetName().endswith("LWI sub-volumes"))
    shown = int(slicer.util.arrayFromVolume(layout).max())
    assert shown == subvolumes_for(plan["arch"], plan["roi"], plan.get("arch_params")) != subvolumes_for("segresnet", [64, 64, 64])

    changed = TrainingSettings(device="cpu", seed=3, time_budget="5m")  # the plan shown is no longer this run's
    assert previewArgs(changed) == (["segresnet"], [64, 64, 64]) and logic.lastPreviewNote.startswith("No current plan")


def test_plan_and_train_get_the_same_options_from_the_settings():
    """One source of arguments: every option of the run Train starts is in the plan's command line."""
    import argparse

    from lwi.commands import plan, train, training_options

    s = TrainingSettings(architecture="unetr", strategy="scratch", epochs=7, roi=(64, 64, 32), spacing=(1.5, 1.5, 2.0),
                         intensity="MR", device="cpu", learning_rate=3e-4, batch_size=4, seed=5, time_budget="20m")
    def parse(command, args):
        assert args[3] == command.NAME
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        return parser.parse_args(args[4:])

    trained = parse(train, training_settings.train_args(s, "/d", "/o", python="/py"))
    planned = parse(plan, training_settings.plan_args(s, "/d", python="/py"))
    assert training_options.settings_from_args(trained) == training_options.settings_from_args(planned)
    assert training_options.settings_from_args(planned)["arch"] == "unetr"
    for name in ("data", "strategy", "device", "time"):
        assert getattr(trained, name) == getattr(planned, name)
    assert planned.probe and not parse(plan, training_settings.plan_args(s, "/d", python="/py", probe=False)).probe


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
    assert any("mask_ratio (--mask-ratio)" in p for p in TrainingSettings(mask_ratio=1.0).problems())
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
    assert args.data == "/d" and str(args.out) == "/o" and args.strategy == "auto"  # the plan chooses
    chosen = TrainingSettings(strategy="lwi")  # a strategy the user picks reaches lwi train as it is
    assert parser.parse_args(training_settings.train_args(chosen, "/d", "/o", python="/py")[4:]).strategy == "lwi"
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
