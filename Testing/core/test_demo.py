"""``lwi demo --quick``: the whole pipeline (phantoms, LWI and scratch training, segmentation, Dice)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lwi.bundle import read_bundle_metadata
from lwi.demo import format_dice_table


@pytest.mark.slow
def test_quick_demo_trains_both_models_and_prints_a_dice_table(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "lwi", "demo", "--quick", "--out-dir", str(out), "--device", "cpu", "--progress", "none"],
        capture_output=True, text=True, encoding="utf-8", timeout=280,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("label"))
    assert "LWI" in header and "scratch" in header
    for organ in ("liver", "spleen", "kidney", "vertebra", "mean"):
        row = next(line for line in lines if line.startswith(organ))
        values = row.split()[1:]
        assert len(values) == 2 and all(v == "n/a" or 0.0 <= float(v) <= 1.0 for v in values), row

    report = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert set(report["dice"]) == {"lwi", "scratch"}
    # The printed table is the report's.
    assert format_dice_table(report).splitlines()[2] in lines
    # Both models are real bundles with the phantom labels, trained with the strategy they claim.
    for strategy in ("lwi", "scratch"):
        meta = read_bundle_metadata(report["models"][strategy])
        assert [entry["name"] for entry in meta["labels"]] == ["liver", "spleen", "kidney", "vertebra"]
        assert meta["provenance"]["strategy"] == strategy
        assert (out / f"{strategy}_segmentation.seg.nrrd").is_file()
    # Same total number of iterations for both (the paper's baseline).
    iters = report["training"]
    assert sum(iters["lwi"]["iterations"].values()) == sum(iters["scratch"]["iterations"].values())
