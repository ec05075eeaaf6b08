"""The settings of a training run: every number, its defaults, what a resumed run may change, and the
:class:`lwi.engine.Trainer` both steps build from them (:func:`make_trainer`, written once)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from lwi import records
from lwi.errors import LWIError
from lwi.names import MODALITIES
from lwi.progress import Progress

#: Version of the metadata layout of the training checkpoints (Step 1 and the resumable Step 2 state).
FORMAT_VERSION = 1


@dataclass
class Settings:
    """Every number of a training run; all have defaults meant for a few cases on one GPU.

    ``pretrain_epochs`` is Step 1's length and ``epochs`` Step 2's; an epoch is
    ``iterations_per_epoch`` iterations (default: the stage's number of images / batch size,
    rounded up). The warmup is ``warmup_epochs`` epochs when given, else 5 % of the stage's iterations.
    """

    arch: str = "unetr"
    arch_params: Dict[str, Any] = field(default_factory=dict)
    roi: Tuple[int, int, int] = (96, 96, 96)
    pretrain_epochs: int = 400
    epochs: int = 2000
    batch_size: int = 2
    iterations_per_epoch: Optional[int] = None
    lr: float = 1e-4
    pretrain_lr: Optional[float] = None  # Step 1's (and AnatoMask pre-training's) own; None: lr
    weight_decay: float = 1e-5
    warmup_epochs: Optional[int] = None
    mask_ratio: float = 0.4
    cube_size: int = 16
    w_rec: float = 1.0
    w_order: float = 1.0
    val_every: Optional[int] = None
    checkpoint_every: Optional[int] = None
    val_fraction: float = 0.2
    overlap: float = 0.5
    sw_batch_size: int = 4
    pos_fraction: float = 0.5
    spacing: Optional[Tuple[float, float, float]] = None
    modality: Optional[str] = None
    seed: int = 0
    amp: Optional[bool] = None
    clip_grad_norm: Optional[float] = None  # None: the strategy's default (AnatoMask pre-training 12, else off)
    # MedContext and AnatoMask (docs/strategies.md): own names, so no default collides with LWI's on resume.
    consistency_weight: float = 0.5
    consistency_mode: str = "share"
    consistency_share: float = 0.5
    context_mask_ratio: float = 0.6
    context_mask_shape: str = "tube"
    context_tube_axis: str = "z"
    ema_mode: str = "run"
    ema_momentum: Tuple[float, float] = (0.996, 1.0)
    mim_patch_size: int = 16
    anatomask_mask_ratio: float = 0.6
    guided_final_ratio: float = 0.5
    anatomask_ema_decay: Tuple[float, float] = (0.999, 0.9999)
    anatomask_schedule: str = "run"
    teacher_error_target: str = "normalized"
    anatomask_transfer: str = "encoder"

    def to_dict(self) -> Dict[str, Any]:
        return records.to_dict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Settings:
        return records.from_dict(cls, values, tuple_fields=TUPLE_FIELDS)


TUPLE_FIELDS = ("roi", "spacing", "ema_momentum", "anatomask_ema_decay")
#: The choices of the strategies' text settings.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "context_mask_shape": ("tube", "cube"),
    "context_tube_axis": ("x", "y", "z"),
    "consistency_mode": ("share", "code"),
    "ema_mode": ("run", "paper", "code"),
    "anatomask_schedule": ("run", "paper"),
    "teacher_error_target": ("normalized", "raw"),
    "anatomask_transfer": ("encoder", "all"),
}


# Settings a resumed run may change (the others define the run and come from its checkpoint).
RESUMABLE_CHANGES = ("pretrain_epochs", "epochs", "val_every", "checkpoint_every", "sw_batch_size", "amp")


def make_settings(
    options: Mapping[str, Any], stored: Optional[Mapping[str, Any]] = None, *, stage_epochs: Optional[str] = None
) -> Settings:
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
    for key in TUPLE_FIELDS:
        if key in options:
            options[key] = tuple(options[key])
    if stored is None:
        settings = Settings(**options)
    else:
        settings = Settings.from_dict(stored)
        for key, value in options.items():
            if key in RESUMABLE_CHANGES:
                setattr(settings, key, value)
            elif _normalise(value) != _normalise(getattr(settings, key)):
                raise LWIError(
                    f"A resumed run keeps its settings: {key} was {getattr(settings, key)!r}, not {value!r} "
                    "(leave it out, or start a new run)."
                )
    _check_settings(settings)
    return settings


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _ranges() -> Dict[str, Any]:
    """Each numeric setting's range type (the command line's, :mod:`lwi.segment_options`)."""
    from lwi.segment_options import FRACTION, POSITIVE, POSITIVE_NUMBER, number, whole

    return {
        "pretrain_epochs": whole(0),  # 0 Step-1 epochs: scratch only
        "epochs": POSITIVE, "batch_size": POSITIVE, "iterations_per_epoch": POSITIVE,
        "lr": POSITIVE_NUMBER, "pretrain_lr": POSITIVE_NUMBER, "consistency_share": number(0.0), "weight_decay": number(0.0), "warmup_epochs": whole(0), "mask_ratio": FRACTION,
        "cube_size": POSITIVE, "w_rec": number(0.0), "w_order": number(0.0), "val_every": POSITIVE,
        "checkpoint_every": POSITIVE, "val_fraction": FRACTION, "overlap": FRACTION, "sw_batch_size": POSITIVE,
        "pos_fraction": number(0.0, 1.0), "seed": whole(0), "consistency_weight": number(0.0),
        "context_mask_ratio": FRACTION, "anatomask_mask_ratio": FRACTION, "guided_final_ratio": FRACTION,
        "clip_grad_norm": POSITIVE_NUMBER, "mim_patch_size": POSITIVE,
    }


def _check_settings(s: Settings) -> None:
    """Every number in its range (None = the default): a value is refused, never quietly replaced."""
    import argparse

    if len(s.roi) != 3 or min(s.roi) < 1:
        raise LWIError(f"The ROI must be three positive sizes, got {list(s.roi)}.")
    for name, check in _ranges().items():
        value = getattr(s, name)
        if value is not None:
            try:
                check(value)
            except argparse.ArgumentTypeError as exc:
                raise LWIError(f"The setting {name} {exc}") from None
    if s.spacing is not None and (len(s.spacing) != 3 or min(float(v) for v in s.spacing) <= 0):
        raise LWIError(f"The spacing must be three positive numbers in mm, got {list(s.spacing)}.")
    for name, allowed in CHOICES.items():
        if getattr(s, name) not in allowed:
            raise LWIError(f"Unknown {name.replace('_', ' ')} {getattr(s, name)!r}; use {' or '.join(allowed)}.")
    for name in ("ema_momentum", "anatomask_ema_decay"):
        values = tuple(getattr(s, name))
        if len(values) != 2 or not 0.0 <= values[0] <= values[1] <= 1.0:
            raise LWIError(f"The {name.replace('_', ' ')} must be two numbers 0 <= start <= end <= 1.")
    if s.modality is not None and s.modality.upper() not in MODALITIES:
        raise LWIError(f"Unknown modality {s.modality!r}; use CT or MR.")


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
    """Total iterations of Step 1."""
    return settings.pretrain_epochs * epoch_iterations(settings, n_images)


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
