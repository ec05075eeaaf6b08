"""The ``lwi`` command lines the modules run, the Python they run with, and its environment.

The command-line contract is docs/contracts.md: ``python -m lwi COMMAND ... --progress json``,
run with Slicer's own Python (``PythonSlicer``) and the bundled core on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from LWICommon.core_path import CORE_PACKAGE


def python_executable(
    which: Callable[[str], Optional[str]] = shutil.which, current: str = sys.executable
) -> str:
    """The Python that runs the core: ``PythonSlicer`` inside Slicer, else the current interpreter.

    Inside Slicer ``sys.executable`` is the application itself, not a Python interpreter, while the
    ``PythonSlicer`` launcher (on Slicer's PATH) sets up Slicer's Python environment.
    """
    found = which("PythonSlicer")
    return found if found else current


def subprocess_env(
    core_path: Optional[str],
    base_env: Optional[Mapping[str, str]] = None,
    extra: Optional[Mapping[str, str]] = None,
) -> Dict[str, str]:
    """The environment of a core subprocess: ``base_env`` with the core first on ``PYTHONPATH``.

    Output is unbuffered UTF-8 so JSON progress lines arrive as they are written, whatever the
    user's locale.
    """
    env = dict(os.environ if base_env is None else base_env)
    if core_path:
        paths = [core_path] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != core_path]
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def options_to_args(options: Optional[Mapping[str, Any]]) -> List[str]:
    """``{"roi": (96, 96, 96), "device": "cuda", "debug": True, "seed": None}`` ->
    ``["--roi", "96", "96", "96", "--device", "cuda", "--debug"]``.

    Keys use underscores for dashes; None and False leave an option out; True is a bare flag;
    lists and tuples give one value each.
    """
    args: List[str] = []
    for key, value in (options or {}).items():
        if value is None or value is False:
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args.append(flag)
            args += [str(v) for v in value]
        else:
            args += [flag, str(value)]
    return args


def lwi_command(
    command: str,
    positional: Sequence[Any] = (),
    options: Optional[Mapping[str, Any]] = None,
    python: Optional[str] = None,
    progress_json: bool = True,
    extra: Sequence[str] = (),
) -> List[str]:
    """``[python, "-m", "lwi", command, *positional, *options, *extra, "--progress", "json"]``."""
    args = [python or python_executable(), "-m", CORE_PACKAGE, command]
    args += [str(p) for p in positional]
    args += options_to_args(options)
    args += list(extra)
    if progress_json:
        args += ["--progress", "json"]
    return args


def segment_command(
    model: str,
    input_path: str,
    output_path: str,
    device: str = "auto",
    options: Optional[Mapping[str, Any]] = None,
    python: Optional[str] = None,
) -> List[str]:
    """``lwi segment --model MODEL --input IMAGE --output LABELMAP --device DEVICE`` plus the flags of
    ``options``, given as a worker request's (``sw_batch_size``, ``roi_size``, ``amp``, ...: the keys
    of ``lwi/segment_options.py``, whose table gives each one's flag)."""
    from LWICommon.vocabulary import segment_options

    merged: Dict[str, Any] = {"model": model, "input": input_path, "output": output_path, "device": device}
    return lwi_command("segment", options=merged, python=python, extra=segment_options.to_args(options))


def train_command(
    data_dir: str,
    output_model: str,
    strategy: Optional[str] = None,
    device: str = "auto",
    options: Optional[Mapping[str, Any]] = None,
    python: Optional[str] = None,
) -> List[str]:
    """``lwi train --data DIR --out MODEL --strategy S --device D`` plus any other options
    (``arch``, ``roi``, ``epochs``, ``pretrain_epochs``, ``seed``, ...); no ``strategy``: the core's
    default (``auto``: its plan chooses)."""
    merged: Dict[str, Any] = {"data": data_dir, "out": output_model, "strategy": strategy, "device": device}
    merged.update(options or {})
    return lwi_command("train", options=merged, python=python)


def preview_command(
    input_path: str, out_dir: str, options: Optional[Mapping[str, Any]] = None, python: Optional[str] = None
) -> List[str]:
    """``lwi preview --input IMAGE --out-dir DIR --json``: the Step-1 shuffled and masked views.

    ``lwi preview`` is short and reports through ``--json`` (one JSON document describing the
    views it wrote) rather than ``--progress json``.
    """
    merged: Dict[str, Any] = {"input": input_path, "out_dir": out_dir, "json": True}
    merged.update(options or {})
    return lwi_command("preview", options=merged, python=python, progress_json=False)


def info_command(model: str, python: Optional[str] = None) -> List[str]:
    """``lwi info MODEL --json``: the model's metadata as one JSON document on stdout."""
    return lwi_command("info", positional=[model], options={"json": True}, python=python, progress_json=False)


def quote_command(args: Iterable[str]) -> str:
    """A command line to show in the log (and to paste into a terminal)."""
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)
