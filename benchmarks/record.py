"""Where every benchmark's figures go: one JSON file per benchmark and device under ``benchmarks/results/``.

Each file holds the figures plus what is needed to judge them: the machine (CPU, cores, memory, GPU,
load average before and after the run: the CPU machines here are shared), the versions of Python,
torch, MONAI, SimpleITK and lwi, the command line and the date. ``render_tables.py`` turns the files
into the tables of docs/performance.md and docs/results.md, so no figure there is typed by hand.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def machine(device: Optional[str] = None) -> Dict[str, Any]:
    """The machine the figures were measured on."""
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "load_average_at_start": list(_LOAD_AT_START) if _LOAD_AT_START else None,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    if device is not None:
        info["device"] = str(device)
    return info


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "monai", "SimpleITK", "numpy", "lwi"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            pass
    try:
        import torch

        out["cuda"] = str(torch.version.cuda)
    except ImportError:
        pass
    return out


def display_path(path: Any) -> str:
    """A path as result files show it: relative inside the repository, else a file's name or a
    folder's last two parts (where data lie on the measuring machine says nothing to a reader)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        if not p.is_absolute():
            return str(p)
        return p.name if p.is_file() else str(Path(*p.parts[-2:]))


def _command() -> str:
    words = [display_path(a) if os.path.isabs(a) else a for a in sys.argv]
    return " ".join(["python", *map(shlex.quote, words)])


def write(name: str, device: str, figures: Dict[str, Any], command: Optional[str] = None) -> Path:
    """Write ``benchmarks/results/<name>-<device kind>.json`` (the latest run of each replaces the last)."""
    kind = str(device).split(":")[0]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{kind}.json"
    record = {
        "benchmark": name,
        "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command or _command(),
        "machine": machine(device),
        "versions": versions(),
        "figures": figures,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Figures written to {path.relative_to(ROOT)}", flush=True)
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None
