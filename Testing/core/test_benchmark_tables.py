"""The README's benchmark tables are the rendering of benchmarks/results/*.json, not typed figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _render_tables():
    spec = importlib.util.spec_from_file_location("render_tables", REPO / "benchmarks" / "render_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tables_match_the_result_files():
    """Every table of the README and docs/ (docs/performance.md, docs/results.md, ...) is its file's."""
    render = _render_tables()
    names = []
    for page in render.PAGES:
        page_text = page.read_text(encoding="utf-8")
        assert render.rendered_readme(page_text) == page_text, f"run python benchmarks/render_tables.py ({page.name})"
        names += [m.group("name") for m in render.MARKER.finditer(page_text)]
    assert {"train-cpu", "train-cuda", "folder-cpu", "ct-lowres-cpu", "segment-cuda", "train-ddp-cuda"} <= set(names)
    performance = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "<!-- results:train-cpu -->" in performance and "<!-- results:segment-cpu -->" in performance
    for path in (REPO / "benchmarks" / "results").glob("*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        assert {"machine", "versions", "command", "figures", "date"} <= set(record), path.name
        assert path.stem in names, f"{path.name} is in no README or docs/ table"


def test_a_missing_result_says_how_to_measure_it(tmp_path, monkeypatch):
    render = _render_tables()
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    text = "a\n<!-- results:train-cuda -->\nold figures\n<!-- /results:train-cuda -->\nb\n"
    out = render.rendered_readme(text)
    assert "old figures" not in out and "Still to be measured: run `benchmarks/run_all_gpu.sh`" in out
    (tmp_path / "train-cuda.json").write_text(json.dumps({
        "device": "cuda:0", "date": "d", "command": "c", "versions": {}, "machine": {"gpus": ["G"]},
        "figures": {"network": {"arch": "unetr", "batch": 4, "roi": [96, 96, 96]}, "tutorial_workers": 4,
                    "iterations_per_second": {"ours": 6.0, "tutorial": 2.0, "model only": 7.5},
                    "ratios": {"ours / tutorial": 3.0, "ours / model only": 0.8}},
    }))
    out = render.rendered_readme(text)
    assert "| 6.00 |" in out and "3.00x" in out and "0.80x" in out and "Still to be measured" not in out
