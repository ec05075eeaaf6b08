"""The settings of a training run: every number, its defaults, what a resumed run may change, and the
:class:`lwi.engine.Trainer` both steps build from them (:func:`make_trainer`, written once)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from lwi import records
from lwi.errors import LWIError
from lwi.names import FORMAT_VERSION
from lwi.progress import Progress
from lwi.training_options import (
    OPTIONS,
    PARAM_KEYS,
    RESUMABLE_CHANGES,
    SETTING_KEYS,
    TUPLE_FIELDS,
    check_value,
)


def _settings_fields() -> List[Tuple[str, Any, Any]]:
    """The dataclass fields of :class:`Settings`: one per setting of the option table, plus ``arch_params``."""
    fields = [(key, Any, field(default=OPTIONS[key].default)) for key in SETTING_KEYS]
    return fields + [("arch_params", Dict[str, Any], field(default_factory=dict))]


def _post_init(self: Any) -> None:
    for key in TUPLE_FIELDS:
        if getattr(self, key) is not None:
            setattr(self, key, tuple(getattr(self, key)))
    check_settings(self)


def _to_dict(self: Any) -> Dict[str, Any]:
    return records.to_dict(self)


def _from_dict(cls: Any, values: Mapping[str, Any]) -> Any:
    return records.from_dict(cls, values, tuple_fields=TUPLE_FIELDS)


#: Every number of a training run: the fields, defaults and ranges of :mod:`lwi.training_options`
#: (``lwi train --help`` lists them), meant for a few cases on one GPU; every value is range-checked
#: when made. ``pretrain_epochs`` is Step 1's length and ``epochs`` Step 2's; an epoch is
#: ``iterations_per_epoch`` iterations (default: the stage's images / batch size, rounded up).
Settings = dataclasses.make_dataclass(
    "Settings",
    _settings_fields(),
    namespace={
        "__doc__": "Every number of a training run (fields, defaults, ranges: lwi/training_options.py).",
        "__post_init__": _post_init,
        "to_dict": _to_dict,
        "from_dict": classmethod(_from_dict),
    },
)
Settings.__module__ = __name__


def make_settings(
    options: Mapping[str, Any], stored: Optional[Mapping[str, Any]] = None, *, stage_epochs: Optional[str] = None
) -> Any:
    """Settings from keyword options (None = not given), on top of a resumed run's stored ones.

    ``stage_epochs`` names the field that a plain ``epochs`` option means (``"pretrain_epochs"``
    for ``pretrain()``, whose own stage is Step 1).
    """
    options = {k: v for k, v in options.items() if v is not None}
    if stage_epochs and "epochs" in options:
        options[stage_epochs] = options.pop("epochs")
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown training option(s): {', '.join(unknown)}")
    if stored is None:
        return Settings(**options)
    settings = Settings.from_dict(stored)
    for key, value in options.items():
        if key in RESUMABLE_CHANGES:
            setattr(settings, key, value)
        elif _normalise(value) != _normalise(getattr(settings, key)):
            raise LWIError(
                f"A resumed run keeps its settings: {key} was {getattr(settings, key)!r}, not {value!r} "
                "(leave it out, or start a new run)."
            )
    check_settings(settings)
    return settings


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def check_settings(s: Any) -> None:
    """Every value in its range (:func:`lwi.training_options.check_value`; None = the default): a value
    is refused, never quietly replaced."""
    params = s.arch_params or {}
    try:
        for key in SETTING_KEYS:
            check_value(key, getattr(s, key))
        for key in PARAM_KEYS:  # the network parameters the table names (--feature-size, ...)
            check_value(key, params.get(key))
    except ValueError as exc:
        raise LWIError(str(exc)) from None


WARMUP_SHARE = 0.05  # of a stage's iterations (the authors' UNETR code: 50 of 800-5000 epochs, 1-6 %)


def warmup_iterations(settings: Settings, total_iterations: int, iterations_per_epoch: int) -> int:
    """The stage's linear warmup: ``warmup_epochs`` whole epochs when given, else :data:`WARMUP_SHARE` of
    its iterations (at least 1), so a stage of a few long epochs does not warm up for a third of it."""
    if settings.warmup_epochs is not None:
        return int(settings.warmup_epochs) * iterations_per_epoch
    return max(1, round(WARMUP_SHARE * int(total_iterations)))


def every(value: Optional[int], epochs: int, times: int = 20) -> int:
    """An explicit interval, or one that gives about ``times`` events over the stage."""
    return int(value) if value else max(1, epochs // times)


def trainer_schedule(
    settings: Settings, epochs: int, iterations_per_epoch: int, *, pretraining: bool = False,
    max_iterations: Optional[int] = None,
) -> Dict[str, Any]:
    """The :class:`lwi.engine.Trainer` keyword arguments that both steps take from ``settings``: length,
    optimiser (``pretraining``: Step 1's ``pretrain_lr`` when given), warmup, precision, seed and
    checkpoint interval."""
    total = epochs * iterations_per_epoch
    if max_iterations:
        total = min(total, int(max_iterations))
    lr = settings.pretrain_lr if pretraining and settings.pretrain_lr is not None else settings.lr
    return {
        "epochs": epochs,
        "iterations_per_epoch": iterations_per_epoch,
        "lr": lr,
        "weight_decay": settings.weight_decay,
        "warmup_iterations": warmup_iterations(settings, total, iterations_per_epoch),
        "amp": settings.amp,
        "seed": settings.seed,
        "checkpoint_every": every(settings.checkpoint_every, epochs, times=10),
    }


def epoch_iterations(settings: Settings, n_images: int) -> int:
    """Iterations per epoch of a stage on ``n_images``: the setting, else one pass over the images.

    Under torchrun an iteration takes ``world size x batch size`` crops (docs/distributed.md).
    """
    from lwi import distributed

    return settings.iterations_per_epoch or math.ceil(n_images / (settings.batch_size * distributed.world_size()))


def step1_iterations(settings: Settings, n_images: int) -> int:
    """Total iterations of Step 1: ``pretrain_iterations`` exactly when set (not rounded to epochs),
    else ``pretrain_epochs`` epochs."""
    if settings.pretrain_iterations is not None:
        return int(settings.pretrain_iterations)
    return settings.pretrain_epochs * epoch_iterations(settings, n_images)


def step1_epochs(settings: Settings, n_images: int) -> int:
    """Step 1's epochs: enough epochs of its iterations per epoch to hold :func:`step1_iterations` (the
    trainer stops at exactly that many; the last epoch may be partial)."""
    if settings.pretrain_iterations is not None:
        return max(1, math.ceil(int(settings.pretrain_iterations) / epoch_iterations(settings, n_images)))
    return settings.pretrain_epochs


def step2_iterations(settings: Settings, n_cases: int, epochs: Optional[int] = None) -> Tuple[int, int]:
    """``(iterations per epoch, total iterations)`` of Step 2."""
    ipe = epoch_iterations(settings, n_cases)
    return ipe, (epochs or settings.epochs) * ipe


def matched_iterations(settings: Settings, n_step1_images: int, n_train: int) -> Tuple[int, int, int]:
    """A single-stage strategy's budget, equal to ``lwi``'s total: ``(Step-1 iterations, Step-2
    iterations, epochs)`` where the epochs (of Step 2's length, the last one possibly cut short) cover
    both; the stage runs ``max_iterations = i1 + i2``."""
    i1 = step1_iterations(settings, n_step1_images)
    ipe, i2 = step2_iterations(settings, n_train)
    return i1, i2, settings.epochs + math.ceil(i1 / ipe)


def make_trainer(
    model: Any,
    step: Callable[..., Any],
    sample: Callable[..., Any],
    *,
    settings: Settings,
    epochs: int,
    iterations_per_epoch: int,
    stage: str,
    title: str,
    device: Any,
    checkpoint_path: Path,
    checkpoint_format: str,
    metadata: Mapping[str, Any],
    progress: Progress,
    resume: bool,
    progress_offset: int = 0,
    on_epoch_end: Any = None,
    **extra: Any,
) -> Any:
    """The :class:`lwi.engine.Trainer` of one step with the schedule of ``settings``
    (:func:`trainer_schedule`; gradients clipped at ``settings.clip_grad_norm`` unless ``extra`` gives
    ``clip_grad_norm``, a strategy's own default); with ``resume`` it continues from ``checkpoint_path``
    (and says so, naming the step by ``title``). ``extra``: the Trainer's other arguments (validation,
    ``on_best``, ``max_iterations``, ``after_step``).

    The checkpoint's metadata is ``{"format": checkpoint_format, "format_version", "architecture":
    model.spec(), **metadata, "settings"}`` (what resuming reads back: :func:`stored_settings`).
    """
    from lwi.engine import Trainer

    trainer = Trainer(
        model,
        step,
        sample,
        stage=stage,
        **trainer_schedule(
            settings, epochs, iterations_per_epoch, pretraining=stage == "pretrain",
            max_iterations=extra.get("max_iterations"),
        ),
        device=device,
        checkpoint_path=checkpoint_path,
        metadata={
            "format": checkpoint_format,
            "format_version": FORMAT_VERSION,
            "architecture": model.spec(),
            **metadata,
            "settings": settings.to_dict(),
        },
        progress=progress,
        progress_offset=progress_offset,
        on_epoch_end=on_epoch_end,
        **{"clip_grad_norm": settings.clip_grad_norm, **extra},
    )
    if resume:
        trainer.load_checkpoint(checkpoint_path)
        progress.log(
            f"Resuming {title} from {checkpoint_path} at iteration {trainer.iteration} of {trainer.total_iterations}."
        )
    return trainer
