"""LWI Step 2: supervised fine-tuning (DiceCE) of the segmentation network, from a Step-1
checkpoint's weights (all but the output layer; the order heads are dropped), from another
pre-training's encoder (AnatoMask), or from random initialisation; a strategy may replace the
recipe (model, loss, exported network, a hook after each step: MedContext). Writes the best model
(by mean validation Dice) as a bundle (:mod:`lwi.bundle`) and the last, resumable state
(``format: lwi-step2-state``) beside it with a ``.last`` infix."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from lwi.errors import LWIError
from lwi.names import STEP1_FORMAT, STEP2_STATE_FORMAT, PathLike
from lwi.progress import Progress
from lwi.strategies.settings import Settings, every, make_trainer, step2_iterations


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
    encoder_only: bool = False,
) -> Tuple[Any, Dict[str, Any]]:
    """The segmentation network of Step 2 (a plain adapter: no order heads), seeded, with every
    pre-trained ``net.`` weight but the output layer when ``init = (tensors, name)`` is given (only
    the encoder's, ``Adapter.encoder_prefixes``, with ``encoder_only``).

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
    loaded, new = transfer_step1_weights(tensors, model, only=model.encoder_prefixes if encoder_only else None)
    if progress is not None:
        fresh = "decoder and output layer" if encoder_only else "output layer: " + ", ".join(
            sorted({k.rsplit(".", 1)[0] for k in new})
        )
        progress.log(
            f"Initialised from {name}: {len(loaded)} tensors loaded, {len(new)} new ({fresh}); "
            "other pre-training tensors (order heads, teachers) dropped."
        )
    return model, {"init": name, "loaded_tensors": len(loaded), "new_tensors": len(new)}


def load_whole_model(adapter: Any, tensors: Mapping[str, Any], name: str) -> Dict[str, Any]:
    """Load a model bundle's tensors (every one, strictly) into a freshly built ``adapter`` of the same
    network; returns the provenance of the start (``init``, ``loaded_tensors``, ``new_tensors``)."""
    try:
        adapter.load_state_dict(dict(tensors), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LWIError(f"The weights of {name} do not fit the network being trained ({first}).") from None
    return {"init": name, "loaded_tensors": len(tensors), "new_tensors": 0}


def supervised_loss() -> Any:
    """Step 2's loss: Dice + cross-entropy on softmax logits against integer label maps (MONAI)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


PRIOR_FLOOR = 0.01  # RetinaNet's prior probability for a rare class (Lin et al., 2017)


def start_at_label_prior(adapter: Any, frequencies: Sequence[float]) -> Optional[List[float]]:
    """Set the freshly initialised output layer's bias to the log of the class priors, so that the
    untrained network predicts each class at its voxel frequency in the training labels (every
    foreground class at least :data:`PRIOR_FLOOR`) instead of every class at 1/C.

    Why: from 1/C, the first iterations are spent pushing every foreground probability down on the
    ~95% background voxels; a class pushed far enough saturates the softmax (the Dice gradient
    through it scales with that class's probability) and, at few-shot budgets, may never recover:
    on five hippocampus cases one training seed left the posterior label at Dice 0 for the whole
    run. This is the prior-probability initialisation of the classifier bias in RetinaNet (Lin et
    al., 2017). Returns the priors set, or None when the output layer has no bias."""
    import torch

    bias = adapter.output_bias()
    if bias is None:
        return None
    freq = torch.tensor([float(f) for f in frequencies], dtype=torch.float64)
    prior = freq.clone()
    prior[1:] = prior[1:].clamp_min(PRIOR_FLOOR)
    prior[0] = max(1.0 - float(prior[1:].sum()), PRIOR_FLOOR)
    prior = prior / prior.sum()
    with torch.no_grad():
        bias.copy_(prior.log().to(bias.dtype))
    return [float(p) for p in prior]


@dataclass(frozen=True)
class Step2Recipe:
    """What a strategy may change in Step 2 (MONAI's engine with handlers, as plain functions); the
    default is DiceCE on the adapter. ``make_model(adapter) -> module`` wraps the initialised adapter
    into what is trained and checkpointed (its ``forward`` gives the segmentation logits, which
    validation uses); ``step(model, (images, targets), generator) -> {"total", ...}`` is the loss;
    ``export(model) -> adapter`` is the network written to the bundle; ``after_step(trainer)`` runs
    after every optimiser step (an EMA teacher's update); ``encoder_only``: of pre-trained weights
    (``init``) only the encoder's are loaded."""

    make_model: Optional[Callable[[Any], Any]] = None
    step: Optional[Callable[..., Dict[str, Any]]] = None
    export: Optional[Callable[[Any], Any]] = None
    after_step: Optional[Callable[[Any], None]] = None
    encoder_only: bool = False


def run_step2(
    run: Any,
    out: Path,
    last: Path,
    *,
    resume: bool,
    recipe: Step2Recipe = Step2Recipe(),
    init: Optional[Tuple[Mapping[str, Any], str]] = None,
    start: Optional[Tuple[Mapping[str, Any], str]] = None,
    epochs: Optional[int] = None,
    max_iterations: Optional[int] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    progress_offset: int = 0,
    stage: str = "finetune",
    on_epoch_end: Any = None,
) -> Dict[str, Any]:
    """Supervised training of ``run``'s segmentation network (a :class:`lwi.strategies.run.Run`: its
    training cases, validation cases, labels, settings, preprocessing, device and progress), with
    ``recipe``: from pre-trained weights (``init`` = (tensors, name)), from a finished model's whole
    network (``start`` = (bundle tensors, name): improving it, :mod:`lwi.improve`) or from random
    initialisation. Best model -> ``out`` (bundle), last -> ``last``."""
    import torch

    from lwi import distributed
    from lwi.bundle import save_bundle
    from lwi.engine import Validator
    from lwi.label_watch import LabelWatch, TrainingDice

    train_cache, n_train, labels, settings = run.train_cache(), len(run.train_cases), run.labels, run.settings
    validation_cases, preprocessing, device, progress = run.validation_pairs(), run.config, run.device, run.progress
    make_model, step, export, after_step = recipe.make_model, recipe.step, recipe.export, recipe.after_step
    image, _ = train_cache.full_case(0)
    out_channels = max(int(v) for v in labels) + 1
    adapter, transfer = build_step2_model(
        settings, int(image.shape[0]), out_channels, init, progress, encoder_only=recipe.encoder_only
    )
    priors = None
    if start is not None:  # every weight, output layer included: the model goes on from where it was
        transfer = load_whole_model(adapter, *start)
        progress.log(f"Starting from {start[1]}: all {transfer['loaded_tensors']} tensors loaded.")
    elif settings.output_bias == "prior":  # "default": MONAI's initialisation, as the paper
        priors = start_at_label_prior(adapter, train_cache.label_frequencies(out_channels))
    if priors is not None:
        names = {int(k): v for k, v in labels.items()}
        progress.log(
            "Output layer starts at the training labels' voxel frequencies: "
            + ", ".join(f"{names.get(v, v)} {p:.3f}" for v, p in enumerate(priors)) + "."
        )
    model = (make_model(adapter) if make_model is not None else adapter).to(device)
    export = export or (lambda trained: trained)
    loss_fn = supervised_loss()
    roi = tuple(settings.roi)
    epochs = epochs or settings.epochs
    ipe, _ = step2_iterations(settings, n_train, epochs)

    def sample(generator):
        return train_cache.sample(
            settings.batch_size, roi, generator=generator, labelled=True, pos_fraction=settings.pos_fraction
        )

    train_dice = TrainingDice(out_channels)
    watch = LabelWatch(labels, progress)

    def supervised_step(net, batch, generator):
        images, targets = batch
        logits = net(images)
        loss = loss_fn(logits.float(), targets)  # the loss in float32 even under autocast
        return {"total": loss, "train_dice": train_dice.update(logits.detach(), targets)}

    def epoch_end(trainer):
        watch.check(trainer)
        if on_epoch_end is not None:
            on_epoch_end(trainer)

    use_amp = settings.amp if settings.amp is not None else torch.device(device).type == "cuda"
    validator = None
    if validation_cases:
        validator = Validator(
            validation_cases, labels, roi, overlap=settings.overlap, sw_batch_size=settings.sw_batch_size, amp=use_amp
        )
    inference = {"roi_size": list(roi), "overlap": settings.overlap, "sw_batch_size": settings.sw_batch_size}
    base_provenance = {**dict(provenance or {}), "epochs": epochs, "recipe": settings.recipe, **transfer}

    def bundle_provenance(trainer: Any, metrics: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        prov = dict(base_provenance)
        prov["iterations"] = {**prov.get("iterations", {}), stage: trainer.iteration}
        if metrics is not None:
            prov["validation_dice"] = metrics.get("dice")
            prov["mean_validation_dice"] = _finite(metrics.get("mean_dice"))
            prov["best_epoch"] = metrics.get("epoch")
        return prov

    def write_best(net, metrics):
        if not distributed.is_main():  # under torchrun, rank 0 alone writes files
            return
        save_bundle(out, export(net), labels, preprocessing.to_dict(), inference, bundle_provenance(trainer, metrics))

    meta = {
        "labels": {str(k): v for k, v in labels.items()},
        "preprocessing": preprocessing.to_dict(),
        "inference": inference,
        **dict(metadata or {}),
        "provenance": base_provenance,
    }
    trainer = make_trainer(
        model,
        step or supervised_step,
        sample,
        settings=settings,
        epochs=epochs,
        iterations_per_epoch=ipe,
        stage=stage,
        title="Step 2",
        device=device,
        checkpoint_path=last,
        checkpoint_format=STEP2_STATE_FORMAT,
        metadata=meta,
        progress=progress,
        resume=resume,
        progress_offset=progress_offset,
        on_epoch_end=epoch_end,
        max_iterations=max_iterations,
        validate_fn=validator,
        val_every=every(settings.val_every, epochs),
        on_best=write_best,
        after_step=after_step,
    )
    progress.log(
        f"Step 2 ({stage}): {settings.arch} at ROI {list(roi)}, {out_channels} output channels, "
        f"{trainer.total_iterations} iterations on {device}, "
        f"{'validating on ' + str(len(validation_cases)) + ' case(s)' if validator else 'no validation'}."
    )
    summary = trainer.run()
    summary["labels_not_learned"] = watch.finish(trainer)
    if validator is None or trainer.best is None:
        write_best(model, None)  # nothing to choose by: the result is the last model
    summary.update(model=str(out), last=str(last), **transfer)
    best = trainer.best or {}
    summary["validation_dice"] = best.get("dice")
    summary["mean_validation_dice"] = _finite(best.get("mean_dice"))
    summary["best_epoch"] = best.get("epoch")
    summary["network"] = export(model)
    return summary


def _finite(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value
