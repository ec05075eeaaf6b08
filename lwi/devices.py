"""Where the core runs: the device a user names, and how many CPU threads are worth using."""

from __future__ import annotations

import os
from typing import Union

import torch

from lwi.errors import LWIError


def resolve_device(spec: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA GPU when PyTorch sees one, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``."""
    if isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LWIError(f"Device {spec!r} was requested but PyTorch sees no CUDA GPU; use --device cpu or auto.")
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LWIError(f"Device {spec!r} does not exist: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s).")
        return device
    raise LWIError(f"Unknown device {spec!r}; use auto, cpu, cuda or cuda:N.")


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not speed up convolutions)."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        available = os.cpu_count() or 1
    cores = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            physical = core = None
            for line in f:
                if line.startswith("physical id"):
                    physical = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((physical, core))
                    physical = core = None
            if core is not None:
                cores.add((physical, core))
    except OSError:
        pass
    return max(1, min(available, len(cores)) if cores else available)
