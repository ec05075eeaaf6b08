"""``--recipe paper``: LWI as the paper trains it, with none of the project's deviations; ``lwi plan``
names the recipe and lists each deviation of the default one with its reason."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lwi.commands.training_options import add_train_options, settings_from_args
from lwi.pretraining import Step1Model
from lwi.recipes import DEVIATIONS, PAPER
from lwi.strategies.settings import make_settings, step1_iterations, step2_iterations

REPO = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_train_options(parser)
    return settings_from_args(parser.parse_args(["--data", "x", *argv]))


def test_paper_recipe_sets_the_papers_training_and_given_options_win():
    options = _args("--recipe", "paper", "--lr", "2e-4", "--feature-size", "32")
    assert options["recipe"] == "paper" and options["arch"] == "unetr" and tuple(options["roi"]) == (96, 96, 96)
    assert options["spacing"] == (1.5, 1.5, 2.0) and options["weight_decay"] == 1e-5
    assert options["lr"] == 2e-4  # given
    assert options["arch_params"]["feature_size"] == 32 and options["arch_params"]["hidden_size"] == 768
    assert (options["order_head_norm"], options["output_bias"], options["step1_flips"]) == ("none", "default", "all")
    assert "recipe" not in _args()  # no --recipe: nothing set here, the Settings default (default) applies


def test_paper_recipe_switches_the_deviations_off():
    plain = Step1Model.build("unetr", 1, (32, 32, 64), normalise=False, hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4)
    default = Step1Model.build("unetr", 1, (32, 32, 64), hidden_size=32, mlp_dim=64, num_heads=2, feature_size=4)
    assert default.order_heads.normalise and not plain.order_heads.normalise
    s = make_settings({k: v for k, v in PAPER.items() if k not in ("iterations", "pretrain_iterations")}
                      | {"pretrain_iterations": PAPER["pretrain_iterations"], "iterations_per_epoch": 4500, "epochs": 20})
    assert step1_iterations(s, 18) == 14_400 and step2_iterations(s, 18)[1] == 90_000
    assert {d[0] for d in DEVIATIONS} >= {"order_head_norm", "output_bias", "step1_flips"}


@pytest.mark.parametrize("recipe, expected", [
    ("paper", ["Recipe: paper", "unetr", "Step 1 14400, Step 2 90000", "depth too"]),
    ("default", ["Recipe: default", "order_head_norm: layer (UNETR) instead of none", "output_bias: prior"]),
])
def test_plan_prints_the_recipe_and_the_defaults_deviations(tmp_path, recipe, expected):
    from lwi.data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(tmp_path / "ph", 3, seed=0, shape=(40, 40, 24), spacing=(6.0, 6.0, 8.0))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lwi", "plan", "--data", str(data), "--recipe", recipe, "--no-probe", "--device", "cpu"],
        capture_output=True, text=True, encoding="utf-8", env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for text in expected:
        assert text in proc.stderr
