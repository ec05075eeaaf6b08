"""Report of an experiment (placeholder while being written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict


def write_report(out: Any, progress: Any = None) -> Dict[str, Any]:
    out = Path(out)
    (out / "report.md").write_text("# report\n")
    return {"report": str(out / "report.md"), "html": None, "plots": []}
