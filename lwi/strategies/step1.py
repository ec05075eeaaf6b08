"""LWI Step 1: self-supervised pre-training of the network with the transformation module's shuffled
and masked sub-volumes (order heads + reconstruction). Writes one resumable checkpoint
(``format: lwi-step1``): ``net.`` + ``order_heads.`` weights, optimizer state, settings and
preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from lwi.errors import LWIError
from lwi.names import STEP1_FORMAT
from lwi.progress import Progress
from lwi.strategies.settings import Settings, epoch_iterations, make_trainer, step1_epochs, step1_iterations

STEP1_FLIP_AXES = (0, 1)  # x and y; never z, the shuffled axis


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

    from lwi.pretraining import Step1Model, step1_losses
    from lwi.transformation import TransformationModule

    if step1_iterations(settings, n_images) < 1:
        raise LWIError("Step 1 needs at least one epoch; for no Step 1 at all use --strategy scratch.")

    image, _ = cache.full_case(0)
    torch.manual_seed(settings.seed)
    normalise = None if settings.order_head_norm is None else settings.order_head_norm == "layer"
    model = Step1Model.build(
        settings.arch, int(image.shape[0]), settings.roi, normalise=normalise, **settings.arch_params
    ).to(device)
    flip_axes = (0, 1, 2) if settings.step1_flips == "all" else STEP1_FLIP_AXES
    transform = TransformationModule(
        model.num_subvolumes, mask_ratio=settings.mask_ratio, cube_size=settings.cube_size
    )
    roi = tuple(settings.roi)

    def sample(generator):
        # No flips along depth (unless the paper recipe asks, as the authors' code): they would reverse
        # the block order Step 1 learns to predict.
        images, _ = cache.sample(settings.batch_size, roi, generator=generator, labelled=False, flip_axes=flip_axes)
        return images

    def step(net, images, generator):
        return step1_losses(net, images, transform, generator=generator, w_rec=settings.w_rec, w_order=settings.w_order)

    epochs = step1_epochs(settings, n_images)
    ipe = epoch_iterations(settings, n_images)
    meta = {
        "step1": {
            "num_subvolumes": model.num_subvolumes,
            "mask_ratio": settings.mask_ratio,
            "cube_size": settings.cube_size,
            "level_channels": list(model.net.level_channels),
        },
        **metadata,
    }
    trainer = make_trainer(
        model,
        step,
        sample,
        settings=settings,
        epochs=epochs,
        iterations_per_epoch=ipe,
        stage="pretrain",
        title="Step 1",
        device=device,
        checkpoint_path=out,
        checkpoint_format=STEP1_FORMAT,
        metadata=meta,
        progress=progress,
        resume=resume,
        max_iterations=step1_iterations(settings, n_images),
        progress_offset=progress_offset,
        on_epoch_end=on_epoch_end,
    )
    progress.log(
        f"Step 1: {settings.arch} at ROI {list(roi)}, {model.num_subvolumes} sub-volumes, mask ratio "
        f"{settings.mask_ratio}, {trainer.total_iterations} iterations ({epochs} epochs x {ipe}) on {device}."
    )
    summary = trainer.run()
    summary["checkpoint"] = str(out)
    summary["model"] = model
    return summary
