"""The files of an ``lwi experiment`` folder that both the experiment (which writes them) and its
report (which reads them) name: the configuration, the results lines and how to read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

CONFIG = "experiment.json"
RESULTS = "results.jsonl"


def read_results(path: Path) -> List[Dict[str, Any]]:
    """The lines of a results.jsonl (a torn last line from a crash is ignored)."""
    if not path.exists():
        return []
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return results
