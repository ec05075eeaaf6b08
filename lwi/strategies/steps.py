"""LWI Step 1 (self-supervised pre-training) and Step 2 (supervised fine-tuning) as plain Python.

The building blocks the strategies combine (:mod:`lwi.strategies.lwi`, :mod:`lwi.strategies.scratch`)
and the API behind ``lwi pretrain`` and ``lwi finetune``. Everything long runs through
:class:`lwi.engine.Trainer`; this module decides *what* is trained, on which cases, and where the
files go:

* Step 1 writes one resumable checkpoint (``format: lwi-step1``): ``net.`` + ``order_heads.``
  weights, optimizer state, settings and preprocessing.
* Step 2 writes the best model (by mean validation Dice) as a bundle (:mod:`lwi.bundle`) to ``out``
  and the last, resumable state to ``out`` with a ``.last`` infix (:func:`derived_path`).

Held-out cases: the ``validation`` list of dataset.json, else an automatic split by ``seed``
(``val_fraction`` of the cases, at least one) when there are 3 or more cases; with 1 or 2 cases
everything is trained on and the last model is the result. The held-out cases are also left out
of Step 1, so validation Dice is measured on images the network has never seen.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from lwi.bundle import STEP1_FORMAT, STEP2_STATE_FORMAT
from lwi.errors import LWIError
from lwi.progress import Progress

FORMAT_VERSION = 1

PathLike = Union[str, Path]


@dataclass
class Settings:
    """Every number of a training run; all have defaults meant for a few cases on one GPU.

    ``pretrain_epochs`` is Step 1's length and ``epochs`` Step 2's; an epoch is
    ``iterations_per_epoch`` iterations (default: the stage's number of images / batch size,
    rounded up). ``warmup_epochs`` defaults to 5% of the stage's epochs.
    """

    arch: str = "unetr"
    arch_params: Dict[str, Any] = field(default_factory=dict)
    roi: Tuple[int, int, int] = (96, 96, 96)
    pretrain_epochs: int = 400
    epochs: int = 2000
    batch_size: int = 2
    iterations_per_epoch: Optional[int] = None
    lr: float = 1e-4
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

    def to_dict(self) -> Dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {k: v for k, v in values.items() if k in known}
        for key in ("roi", "spacing"):
            if clean.get(key) is not None:
                clean[key] = tuple(clean[key])
        return cls(**clean)


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
    for key in ("roi", "spacing"):
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


def _check_settings(s: Settings) -> None:
    if len(s.roi) != 3 or min(s.roi) < 1:
        raise LWIError(f"The ROI must be three positive sizes, got {list(s.roi)}.")
    for name in ("pretrain_epochs", "epochs", "batch_size"):
        if int(getattr(s, name)) < 1:
            raise LWIError(f"{name.replace('_', ' ').capitalize()} must be at least 1.")
    if s.lr <= 0:
        raise LWIError("The learning rate must be positive.")
    if not 0.0 <= s.mask_ratio < 1.0:
        raise LWIError("The mask ratio must be in [0, 1).")
    if not 0.0 <= s.val_fraction < 1.0:
        raise LWIError("The validation fraction must be in [0, 1).")
    if s.modality is not None and s.modality.upper() not in ("CT", "MR"):
        raise LWIError(f"Unknown modality {s.modality!r}; use CT or MR.")


def warmup_iterations(settings: Settings, epochs: int, iterations_per_epoch: int) -> int:
    warmup = settings.warmup_epochs if settings.warmup_epochs is not None else max(1, round(0.05 * epochs))
    return int(warmup) * iterations_per_epoch


def every(value: Optional[int], epochs: int, times: int = 20) -> int:
    """An explicit interval, or one that gives about ``times`` events over the stage."""
    return int(value) if value else max(1, epochs // times)


def trainer_schedule(settings: Settings, epochs: int, iterations_per_epoch: int) -> Dict[str, Any]:
    """The :class:`lwi.engine.Trainer` keyword arguments that both steps take from ``settings``: length,
    optimiser, warmup, precision, seed and checkpoint interval."""
    return {
        "epochs": epochs,
        "iterations_per_epoch": iterations_per_epoch,
        "lr": settings.lr,
        "weight_decay": settings.weight_decay,
        "warmup_iterations": warmup_iterations(settings, epochs, iterations_per_epoch),
        "amp": settings.amp,
        "seed": settings.seed,
        "checkpoint_every": every(settings.checkpoint_every, epochs, times=10),
    }


def derived_path(path: PathLike, infix: str) -> Path:
    """``model.lwi.safetensors`` + ``last`` -> ``model.last.lwi.safetensors`` (same folder)."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f"{stem}.{infix}{dot}{suffixes}" if dot else f"{stem}.{infix}")


def split_cases(dataset: Any, seed: int, val_fraction: float) -> Tuple[List[Any], List[Any], str]:
    """``(training cases, held-out cases, a sentence saying how)`` (see the module docstring)."""
    cases = list(dataset.cases)
    if dataset.validation:
        train, held = dataset.split()
        if not train:
            raise LWIError("Every case is listed under 'validation' in dataset.json; nothing is left to train on.")
        return train, held, f"Validating on the {len(held)} case(s) listed in dataset.json."
    if len(cases) <= 2 or val_fraction <= 0:
        why = "only 1 or 2 cases" if len(cases) <= 2 else "no validation split asked for"
        return cases, [], (
            f"Training on all {len(cases)} case(s) without validation ({why}); the result is the last model."
        )
    n_held = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    names = sorted(c.name for c in cases)
    held_names = set(random.Random(seed).sample(names, n_held))
    train = [c for c in cases if c.name not in held_names]
    held = [c for c in cases if c.name in held_names]
    return train, held, (
        f"Holding out {len(held)} of {len(cases)} cases for validation ({', '.join(sorted(held_names))}); "
        "add a 'validation' list to dataset.json to choose them."
    )


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse to replace earlier results silently."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise LWIError(
            f"{existing[0]} already exists; pass --resume to continue that run, --overwrite to replace it, "
            "or choose another --out."
        )


def preprocess_config(dataset: Any, settings: Settings, stored: Optional[Mapping[str, Any]] = None) -> Any:
    """The run's preprocessing: stored (resume, fine-tuning from Step 1) or from the dataset."""
    from lwi.data.preprocessing import PreprocessConfig, median_spacing

    if stored is not None:
        config = PreprocessConfig.from_dict(dict(stored))
        if settings.spacing is not None:
            config.spacing = tuple(float(s) for s in settings.spacing)
        if settings.modality is not None:
            config.modality = settings.modality.upper()
        return config
    spacing = settings.spacing or median_spacing(dataset.cases)
    modality = (settings.modality or dataset.modality or "MR").upper()
    return PreprocessConfig(spacing=tuple(float(s) for s in spacing), modality=modality)


def make_cache(cases: Sequence[Any], config: Any, device: Any, progress: Progress, with_labels: bool) -> Any:
    from lwi.data.cache import CaseCache

    return CaseCache(list(cases), config, device, progress=progress, with_labels=with_labels)


# -- Step 1 --------------------------------------------------------------------------------------
def run_step1(
    *,
    cache: Any,
    n_images: int,
    settings: Settings,
    device: Any,
    out: Path,
    progress: Progress,
    resume: bool,
    metadata: Mapping[str, Any],
    progress_offset: int = 0,
    on_epoch_end: Any = None,
) -> Dict[str, Any]:
    """Train the Step-1 model on ``cache`` (images only); the checkpoint ``out`` is written every
    K epochs and at the end. Returns the trainer's summary plus the checkpoint path."""
    import torch

    from lwi.engine import Trainer
    from lwi.pretraining import Step1Model, step1_losses
    from lwi.transformation import TransformationModule

    image, _ = cache.full_case(0)
    torch.manual_seed(settings.seed)
    model = Step1Model.build(settings.arch, int(image.shape[0]), settings.roi, **settings.arch_params).to(device)
    transform = TransformationModule(
        model.num_subvolumes, mask_ratio=settings.mask_ratio, cube_size=settings.cube_size
    )
    roi = tuple(settings.roi)

    def sample(generator):
        images, _ = cache.sample(settings.batch_size, roi, generator=generator, labelled=False)
        return images

    def step(net, images, generator):
        return step1_losses(net, images, transform, generator=generator, w_rec=settings.w_rec, w_order=settings.w_order)

    epochs = settings.pretrain_epochs
    ipe = settings.iterations_per_epoch or math.ceil(n_images / settings.batch_size)
    meta = {
        "format": STEP1_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.spec(),
        "step1": {
            "num_subvolumes": model.num_subvolumes,
            "mask_ratio": settings.mask_ratio,
            "cube_size": settings.cube_size,
            "level_channels": list(model.net.level_channels),
        },
        **metadata,
        "settings": settings.to_dict(),
    }
    trainer = Trainer(
        model,
        step,
        sample,
        stage="pretrain",
        **trainer_schedule(settings, epochs, ipe),
        device=device,
        checkpoint_path=out,
        metadata=meta,
        progress=progress,
        progress_offset=progress_offset,
        on_epoch_end=on_epoch_end,
    )
    if resume:
        trainer.load_checkpoint(out)
        progress.log(f"Resuming Step 1 from {out} at iteration {trainer.iteration} of {trainer.total_iterations}.")
    progress.log(
        f"Step 1: {settings.arch} at ROI {list(roi)}, {model.num_subvolumes} sub-volumes, mask ratio "
        f"{settings.mask_ratio}, {trainer.total_iterations} iterations ({epochs} epochs x {ipe}) on {device}."
    )
    summary = trainer.run()
    summary["checkpoint"] = str(out)
    summary["model"] = model
    return summary


def step1_iterations(settings: Settings, n_images: int) -> int:
    ipe = settings.iterations_per_epoch or math.ceil(n_images / settings.batch_size)
    return settings.pretrain_epochs * ipe


def step2_iterations(settings: Settings, n_cases: int, epochs: Optional[int] = None) -> Tuple[int, int]:
    """``(iterations per epoch, total iterations)`` of Step 2."""
    ipe = settings.iterations_per_epoch or math.ceil(n_cases / settings.batch_size)
    return ipe, (epochs or settings.epochs) * ipe


# -- Step 2 --------------------------------------------------------------------------------------
def load_step1(path: PathLike) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The model tensors and metadata of a Step-1 checkpoint (clear error for any other file)."""
    from lwi import checkpoint
    from lwi.engine import model_tensors

    tensors, meta = checkpoint.load(path)
    if meta.get("format") != STEP1_FORMAT:
        raise LWIError(
            f"{path} is not a Step-1 checkpoint (format {meta.get('format')!r}); make one with lwi pretrain."
        )
    return model_tensors(tensors), meta


def build_step2_model(
    settings: Settings,
    in_channels: int,
    out_channels: int,
    init: Optional[Tuple[Mapping[str, Any], str]] = None,
    progress: Optional[Progress] = None,
) -> Tuple[Any, Dict[str, Any]]:
    """The segmentation network of Step 2 (a plain adapter: no order heads), seeded, with every
    Step-1 weight but the output layer when ``init = (step1 tensors, name)`` is given.

    Returns ``(adapter, {"init", "loaded_tensors", "new_tensors"} or {})``.
    """
    import torch

    from lwi.architectures import build
    from lwi.pretraining import transfer_step1_weights

    torch.manual_seed(settings.seed)
    model = build(settings.arch, in_channels, out_channels, settings.roi, **settings.arch_params)
    if init is None:
        return model, {}
    tensors, name = init
    loaded, new = transfer_step1_weights(tensors, model)
    if progress is not None:
        progress.log(
            f"Initialised from Step 1 ({name}): {len(loaded)} tensors loaded, {len(new)} new "
            f"(output layer: {', '.join(sorted({k.rsplit('.', 1)[0] for k in new}))}); order heads dropped."
        )
    return model, {"init": name, "loaded_tensors": len(loaded), "new_tensors": len(new)}


def run_step2(
    *,
    train_cache: Any,
    n_train: int,
    validation_cases: Sequence[Tuple[Any, Any]],
    labels: Mapping[int, str],
    settings: Settings,
    preprocessing: Any,
    device: Any,
    out: Path,
    last: Path,
    progress: Progress,
    resume: bool,
    init: Optional[Tuple[Mapping[str, Any], str]] = None,
    epochs: Optional[int] = None,
    max_iterations: Optional[int] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    progress_offset: int = 0,
    stage: str = "finetune",
    on_epoch_end: Any = None,
) -> Dict[str, Any]:
    """Supervised training (DiceCE) of a segmentation network: from Step-1 weights (``init`` =
    (tensors, name)) or from random initialisation. Best model -> ``out`` (bundle), last -> ``last``."""
    import torch
    from monai.losses import DiceCELoss

    from lwi.bundle import save_bundle
    from lwi.engine import Trainer, Validator

    image, _ = train_cache.full_case(0)
    out_channels = max(int(v) for v in labels) + 1
    model, transfer = build_step2_model(settings, int(image.shape[0]), out_channels, init, progress)
    model = model.to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    roi = tuple(settings.roi)
    epochs = epochs or settings.epochs
    ipe, _ = step2_iterations(settings, n_train, epochs)

    def sample(generator):
        return train_cache.sample(
            settings.batch_size, roi, generator=generator, labelled=True, pos_fraction=settings.pos_fraction
        )

    def step(net, batch, generator):
        images, targets = batch
        logits = net(images)
        loss = loss_fn(logits.float(), targets)  # the loss in float32 even under autocast
        return {"total": loss}

    use_amp = settings.amp if settings.amp is not None else torch.device(device).type == "cuda"
    validator = None
    if validation_cases:
        validator = Validator(
            validation_cases, labels, roi, overlap=settings.overlap, sw_batch_size=settings.sw_batch_size, amp=use_amp
        )
    inference = {"roi_size": list(roi), "overlap": settings.overlap, "sw_batch_size": settings.sw_batch_size}
    base_provenance = {**dict(provenance or {}), "epochs": epochs, **transfer}

    def bundle_provenance(trainer: Trainer, metrics: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        prov = dict(base_provenance)
        prov["iterations"] = {**prov.get("iterations", {}), stage: trainer.iteration}
        if metrics is not None:
            prov["validation_dice"] = metrics.get("dice")
            prov["mean_validation_dice"] = _finite(metrics.get("mean_dice"))
            prov["best_epoch"] = metrics.get("epoch")
        return prov

    def write_best(net, metrics):
        save_bundle(out, net, labels, preprocessing.to_dict(), inference, bundle_provenance(trainer, metrics))

    meta = {
        "format": STEP2_STATE_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.spec(),
        "labels": {str(k): v for k, v in labels.items()},
        "preprocessing": preprocessing.to_dict(),
        "inference": inference,
        **dict(metadata or {}),
        "provenance": base_provenance,
        "settings": settings.to_dict(),
    }
    trainer = Trainer(
        model,
        step,
        sample,
        stage=stage,
        **trainer_schedule(settings, epochs, ipe),
        max_iterations=max_iterations,
        device=device,
        checkpoint_path=last,
        metadata=meta,
        validate_fn=validator,
        val_every=every(settings.val_every, epochs),
        on_best=write_best,
        progress=progress,
        progress_offset=progress_offset,
        on_epoch_end=on_epoch_end,
    )
    if resume:
        trainer.load_checkpoint(last)
        progress.log(f"Resuming Step 2 from {last} at iteration {trainer.iteration} of {trainer.total_iterations}.")
    progress.log(
        f"Step 2 ({stage}): {settings.arch} at ROI {list(roi)}, {out_channels} output channels, "
        f"{trainer.total_iterations} iterations on {device}, "
        f"{'validating on ' + str(len(validation_cases)) + ' case(s)' if validator else 'no validation'}."
    )
    summary = trainer.run()
    if validator is None or trainer.best is None:
        write_best(model, None)  # nothing to choose by: the result is the last model
    summary.update(model=str(out), last=str(last), **transfer)
    best = trainer.best or {}
    summary["validation_dice"] = best.get("dice")
    summary["mean_validation_dice"] = _finite(best.get("mean_dice"))
    summary["best_epoch"] = best.get("epoch")
    summary["network"] = model
    return summary


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


# -- one run's data ------------------------------------------------------------------------------
class Run:
    """A training run's validated dataset, split, preprocessing, device and (lazily) case caches.

    Creating it validates the dataset (every problem at once) before anything is written.
    """

    @classmethod
    def from_options(
        cls,
        data: PathLike,
        options: Mapping[str, Any],
        stored: Optional[Mapping[str, Any]] = None,
        *,
        stage_epochs: Optional[str] = None,
        stored_preprocessing: Optional[Mapping[str, Any]] = None,
        **kwargs: Any,
    ) -> Run:
        """A run whose settings are ``options`` on top of a resumed run's ``stored`` settings (see
        :func:`make_settings`), preprocessed as the stored run was."""
        settings = make_settings(options, stored["settings"] if stored else None, stage_epochs=stage_epochs)
        if stored_preprocessing is None and stored:
            stored_preprocessing = stored["preprocessing"]
        return cls(data, settings, stored_preprocessing=stored_preprocessing, **kwargs)

    def __init__(
        self,
        data: PathLike,
        settings: Settings,
        *,
        device: Any = "auto",
        progress: Optional[Progress] = None,
        unlabeled: Optional[Sequence[PathLike]] = None,
        require_labels: bool = True,
        stored_preprocessing: Optional[Mapping[str, Any]] = None,
    ):
        from lwi.data.dataset import Case, case_name, list_images, load_dataset
        from lwi.engine import resolve_device

        self.settings = settings
        self.progress = progress or Progress("none")
        self.dataset = load_dataset(data, require_labels=require_labels)
        self.unlabeled = [
            Case(name=case_name(p), image=Path(p), label=None) for folder in (unlabeled or []) for p in list_images(folder)
        ]
        self.train_cases, self.held_cases, self.split_message = split_cases(
            self.dataset, settings.seed, settings.val_fraction
        )
        self.config = preprocess_config(self.dataset, settings, stored_preprocessing)
        self.device = resolve_device(device)
        self._caches: Dict[str, Any] = {}

    @property
    def labels(self) -> Dict[int, str]:
        return dict(self.dataset.labels)

    @property
    def n_step1_images(self) -> int:
        return len(self.train_cases) + len(self.unlabeled)

    def _cache(self, key: str, cases: Sequence[Any], with_labels: bool) -> Any:
        if key not in self._caches:
            self._caches[key] = make_cache(cases, self.config, self.device, self.progress, with_labels)
        return self._caches[key]

    def train_cache(self) -> Any:
        """The training cases with their labels (Step 2)."""
        return self._cache("train", self.train_cases, True)

    def step1_cache(self) -> Any:
        """The Step-1 images: the training cases (their labels unused) plus any unlabelled images."""
        if not self.unlabeled and all(c.label is not None for c in self.train_cases):
            return self.train_cache()  # preprocess once for both steps
        from lwi.data.dataset import Case

        images = [Case(name=c.name, image=c.image, label=None) for c in self.train_cases] + self.unlabeled
        return self._cache("step1", images, False)

    def validation_pairs(self) -> List[Tuple[Any, Any]]:
        """``(image, label)`` tensors of the held-out cases, on the device."""
        if not self.held_cases:
            return []
        cache = self._cache("validation", self.held_cases, True)
        return [cache.full_case(i) for i in range(len(self.held_cases))]

    def step2(
        self, out: Path, last: Path, *, validation_cases: Sequence[Tuple[Any, Any]], resume: bool, **options: Any
    ) -> Dict[str, Any]:
        """:func:`run_step2` on this run's training cache, labels, settings, preprocessing, device and
        progress; ``options`` are run_step2's other keyword arguments."""
        return run_step2(
            train_cache=self.train_cache(),
            n_train=len(self.train_cases),
            validation_cases=validation_cases,
            labels=self.labels,
            settings=self.settings,
            preprocessing=self.config,
            device=self.device,
            out=out,
            last=last,
            progress=self.progress,
            resume=resume,
            **options,
        )

    def describe_split(self) -> Dict[str, Any]:
        return {
            "cases": len(self.train_cases),
            "validation_cases": len(self.held_cases),
            "held_out": sorted(c.name for c in self.held_cases),
        }


def _public(summary: Mapping[str, Any]) -> Dict[str, Any]:
    """A summary without live objects (networks), JSON-able for result lines."""
    hidden = ("network", "best", "last_validation")  # objects, and duplicates of validation_dice
    return {k: v for k, v in summary.items() if k not in hidden and not hasattr(v, "state_dict")}


def _stored_settings(path: Path, formats: Sequence[str]) -> Dict[str, Any]:
    from lwi import checkpoint

    meta = checkpoint.read_metadata(path)
    if meta.get("format") not in formats or "settings" not in meta:
        raise LWIError(f"{path} is not a resumable LWI training checkpoint.")
    return meta


# -- the public API --------------------------------------------------------------------------------
def pretrain(
    data: PathLike,
    out: PathLike,
    *,
    unlabeled: Optional[Sequence[PathLike]] = None,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    on_epoch_end: Any = None,
    **options: Any,
) -> Dict[str, Any]:
    """LWI Step 1 on the images of ``data`` (labels not needed) plus ``unlabeled`` image folders.

    ``options`` are :class:`Settings` fields; ``epochs`` means Step 1's epochs here. Writes the
    resumable Step-1 checkpoint ``out`` (every ``checkpoint_every`` epochs and at the end);
    ``resume=True`` continues it from its last saved iteration with its own settings.
    Returns a summary (iterations, last losses, checkpoint path).
    """
    progress = progress or Progress("none")
    out = Path(out)
    stored = None
    if resume:
        if not out.exists():
            raise LWIError(f"Nothing to resume: {out} does not exist.")
        stored = _stored_settings(out, (STEP1_FORMAT,))
    run = Run.from_options(
        data, options, stored, stage_epochs="pretrain_epochs", device=device, progress=progress,
        unlabeled=unlabeled, require_labels=False,
    )
    settings = run.settings
    if not resume:
        check_outputs([out], overwrite)
    if run.held_cases:
        progress.log(run.split_message.replace("for validation", "for Step 2's validation (not used in Step 1)"))
    summary = run_step1(
        cache=run.step1_cache(),
        n_images=run.n_step1_images,
        settings=settings,
        device=run.device,
        out=out,
        progress=progress,
        resume=resume,
        metadata={"preprocessing": run.config.to_dict(), "data": {**run.describe_split(), "unlabeled": len(run.unlabeled)}},
        on_epoch_end=on_epoch_end,
    )
    return _public(summary)


def finetune(
    data: PathLike,
    init: PathLike,
    out: PathLike,
    *,
    device: Any = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[Progress] = None,
    on_epoch_end: Any = None,
    **options: Any,
) -> Dict[str, Any]:
    """LWI Step 2: fine-tune the Step-1 checkpoint ``init`` on the labelled cases of ``data``.

    The network (architecture, parameters, ROI) and preprocessing come from ``init``; every Step-1
    weight except the output layer and the order heads is loaded. ``options`` are :class:`Settings`
    fields (``epochs`` = Step 2's). The best model (mean validation Dice) is written to ``out`` as a
    bundle, the last resumable state to ``derived_path(out, "last")``.
    """
    progress = progress or Progress("none")
    out = Path(out)
    last = derived_path(out, "last")
    tensors, init_meta = load_step1(init)
    stored = None
    if resume:
        if not last.exists():
            raise LWIError(f"Nothing to resume: {last} does not exist.")
        stored = _stored_settings(last, (STEP2_STATE_FORMAT,))
    base = None
    if stored is None:
        spec = init_meta.get("architecture", {})
        arch = options.get("arch")
        if arch is not None and str(arch).lower() != spec.get("arch"):
            raise LWIError(f"{init} was pre-trained for {spec.get('arch')}, not {arch}; fine-tune it as {spec.get('arch')}.")
        base = {**init_meta.get("settings", {}), "arch": spec.get("arch"), "arch_params": spec.get("params", {})}
        base = {k: v for k, v in base.items() if k in ("arch", "arch_params", "roi", "seed", "val_fraction", "spacing", "modality", "pretrain_epochs")}
        base.update({k: v for k, v in options.items() if v is not None})
        options = base
    run = Run.from_options(
        data, options, stored, stored_preprocessing=(stored or init_meta).get("preprocessing"),
        device=device, progress=progress, require_labels=True,
    )
    settings = run.settings
    if not resume:
        check_outputs([out, last], overwrite)
    progress.log(run.split_message)
    train_cache = run.train_cache()
    channels = int(train_cache.full_case(0)[0].shape[0])
    pretrained_channels = int(init_meta.get("architecture", {}).get("in_channels", channels))
    if channels != pretrained_channels:
        raise LWIError(
            f"{init} was pre-trained on images with {pretrained_channels} channel(s); these have {channels}."
        )
    ipe, total = step2_iterations(settings, len(run.train_cases))
    summary = run.step2(
        out,
        last,
        validation_cases=run.validation_pairs(),
        resume=resume,
        init=(tensors, Path(init).name),
        provenance={
            "strategy": "lwi",
            "pretrain_epochs": (init_meta.get("training") or {}).get("epochs", settings.pretrain_epochs),
            **run.describe_split(),
            "iterations": {"pretrain": (init_meta.get("training") or {}).get("iteration")},
            "seed": settings.seed,
        },
        on_epoch_end=on_epoch_end,
    )
    return _public(summary)
