"""The ``anatomask`` strategy (Li et al., AnatoMask): masked-image pre-training whose mask is partly
chosen by an EMA teacher's reconstruction error, then fine-tuning from the encoder's weights.

Pre-training, per batch of crops (16^3 patches, mask ratio 0.6, so M = L - round(0.4 L) masked):

1. a random mask m1 (M patches per sample); the EMA teacher reconstructs the masked image without
   gradients and its per-patch error is computed on m1's masked patches (visible ones count 0);
2. the final mask: the ``len_loss = int(M r_t)`` patches the teacher reconstructs worst plus
   ``M - len_loss`` random ones, r_t rising from 0 to r_T = 0.5 ("easy to hard");
3. the student reconstructs the masked image; loss = MSE against each patch standardised by its own
   mean and standard deviation, averaged over masked patches only;
4. AdamW step (gradients clipped at 12), then ``T <- d T + (1 - d) S`` with d rising linearly from
   d_0 to d_1 over the first quarter of the run.

Schedules (``anatomask_schedule``):

* ``run`` (default): r_t = r_T t / T by iteration t of T, and the decays (0.999, 0.9999) scaled to the
  run's length by :func:`lwi.ema.run_scaled` against the authors' :data:`REFERENCE_ITERATIONS`, so the
  teacher's time constant is the same share of a 300- or a 30,000-iteration run as of theirs;
* ``paper``: the authors' constants as written, r_t = r_T (e + 1) / (E - 1) by epoch and the decays
  unscaled over the first quarter of the epochs (right for a run of about their length; on a 300-iteration
  run the teacher keeps most of its random initialisation and the ramp is a staircase of a few epochs).

The teacher's reconstruction error on the first mask's patches is reported as ``teacher`` next to the
student's loss (JSON progress), so whether the teacher learned is visible.

The network is the architecture's dense MONAI network with masked patches set to 0 at its input; the
authors use a sparse (submanifold) encoder instead (a documented deviation, docs/strategies.md).
Fine-tuning keeps only the encoder's weights (as the authors' loader), or optionally all but the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from lwi import masking
from lwi.architectures import Adapter, build
from lwi.ema import WithTeacher, ema_update, make_teacher, ramp_schedule, run_scaled
from lwi.errors import LWIError
from lwi.names import ANATOMASK_FORMAT, ANATOMASK_INFIX, LAST_INFIX, STRATEGY_DESCRIPTIONS, derived_path
from lwi.strategies.run import pretrain_first, public_summary
from lwi.strategies.settings import epoch_iterations, make_trainer, step1_epochs, step1_iterations
from lwi.strategies.step2 import Step2Recipe, run_step2

NAME = "anatomask"
DESCRIPTION = STRATEGY_DESCRIPTIONS[NAME]
FORMAT = ANATOMASK_FORMAT  # the resumable pre-training checkpoint
#: The authors' pre-training length the EMA decays were tuned for: 1000 epochs x about 204 iterations.
REFERENCE_ITERATIONS = 204_000


class AnatoMaskModel(WithTeacher):
    """The pre-training network ``net`` (an adapter reconstructing its input) and its EMA ``teacher``.

    Keys ``net.`` are what fine-tuning takes (like LWI's Step-1 model); ``teacher.`` keys are dropped.
    """

    def __init__(self, net: Adapter):
        super().__init__()
        if net.out_channels != net.in_channels:
            raise LWIError(f"The AnatoMask network reconstructs its input: it needs {net.in_channels} output channels.")
        self.net = net
        self.teacher = make_teacher(net)

    @classmethod
    def build(cls, arch: str, in_channels: int, roi_size: Any, **params: Any) -> AnatoMaskModel:
        return cls(build(arch, in_channels, in_channels, roi_size, **params))

    def spec(self) -> Dict[str, Any]:
        return self.net.spec()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def masked_count(grid: Any, mask_ratio: float) -> int:
    """M = L - round(L (1 - ratio)): the authors keep ``round(L (1 - ratio))`` patches visible."""
    total = int(grid[0]) * int(grid[1]) * int(grid[2])
    return total - round(total * (1.0 - float(mask_ratio)))


def anatomask_losses(
    model: AnatoMaskModel,
    images: torch.Tensor,
    *,
    patch: int,
    mask_ratio: float,
    guided: int,
    generator: Optional[torch.Generator] = None,
    teacher_error: str = "normalized",
) -> Dict[str, Any]:
    """One pre-training batch: ``{"total" (the student's reconstruction loss), "guided" (patches the
    teacher chose), "teacher" (the teacher's loss on a random mask, the same measure)}``.

    ``guided``: :func:`lwi.masking.guided_count_at` (or ``guided_count`` by epoch) for this iteration. ``teacher_error``:
    ``normalized`` scores the teacher against the student's own per-patch-normalised target;
    ``raw`` against the raw patches, as the authors' code does.
    """
    if teacher_error not in ("normalized", "raw"):
        raise LWIError(f"Unknown teacher error target {teacher_error!r}; use normalized or raw.")
    b = images.shape[0]
    grid = masking.grid_of(images.shape[2:], patch)
    count = masked_count(grid, mask_ratio)
    raw = masking.patchify(images.float(), patch)
    target = masking.normalised_patches(raw)
    # The teacher reconstructs a random mask every iteration (no gradients): its errors choose the
    # guided patches once the share is above 0, and its loss shows whether it learns.
    first = masking.random_mask(b, grid, count, images.device, generator)
    with torch.no_grad():
        teacher_patches = masking.patchify(model.teacher(masking.mask_voxels(images, first, patch)).float(), patch)
    teacher_loss = masking.masked_patch_mse(teacher_patches, target, first)
    if guided > 0:
        errors = masking.patch_errors(teacher_patches, target if teacher_error == "normalized" else raw)
        errors = errors * first.flatten(1)  # only patches the teacher had to fill in count
        mask = masking.generate_mask(errors, count, guided, generator).view(b, *grid)
    else:  # the guided share is still 0: a random mask
        mask = masking.random_mask(b, grid, count, images.device, generator)
    reconstruction = model(masking.mask_voxels(images, mask, patch))
    loss = masking.masked_patch_mse(masking.patchify(reconstruction.float(), patch), target, mask)
    return {"total": loss, "guided": torch.tensor(float(guided)), "teacher": teacher_loss}


def update_teacher(model: AnatoMaskModel, epoch: float, epochs: int, start: float, end: float) -> float:
    """The EMA step after each optimiser step (``epoch`` of ``epochs``, or iteration of iterations);
    returns the decay used."""
    decay = ramp_schedule(epoch, epochs, start, end)
    ema_update(model.teacher, model.net, decay)
    return decay


def guided_patches(s: Any, masked: int, trainer: Any) -> int:
    """Patches the teacher chooses in the trainer's current iteration, by ``s.anatomask_schedule``."""
    if s.anatomask_schedule == "paper":
        return masking.guided_count(masked, s.guided_final_ratio, trainer.epoch, trainer.epochs)
    return masking.guided_count_at(masked, s.guided_final_ratio, trainer.iteration, trainer.total_iterations)


def decays(s: Any, iterations: int) -> tuple:
    """The EMA decays (start, end) of a run of ``iterations``, by ``s.anatomask_schedule``."""
    if s.anatomask_schedule == "paper":
        return tuple(s.anatomask_ema_decay)
    return tuple(run_scaled(d, REFERENCE_ITERATIONS, iterations) for d in s.anatomask_ema_decay)


# -- the strategy ----------------------------------------------------------------------------------
DEFAULT_CLIP = 12.0  # the authors' clip_grad_norm_ in pre-training


def settings_of(s: Any) -> Dict[str, Any]:
    """The AnatoMask settings of a run, for the bundle's provenance and ``lwi info``."""
    return {
        "patch_size": s.mim_patch_size,
        "mask_ratio": s.anatomask_mask_ratio,
        "guided_final_ratio": s.guided_final_ratio,
        "ema_decay": list(s.anatomask_ema_decay),
        "schedule": s.anatomask_schedule,
        "teacher_error_target": s.teacher_error_target,
        "clip_grad_norm": s.clip_grad_norm if s.clip_grad_norm is not None else DEFAULT_CLIP,
        "transfer": s.anatomask_transfer,
    }


def outputs(out: Path) -> List[Path]:
    """Files this strategy writes: the model, its resumable last state, the pre-training checkpoint."""
    return [out, derived_path(out, LAST_INFIX), derived_path(out, ANATOMASK_INFIX)]


def run_pretraining(
    *, cache: Any, n_images: int, settings: Any, device: Any, out: Path, progress: Any, resume: bool,
    metadata: Dict[str, Any],
) -> Dict[str, Any]:
    """AnatoMask pre-training on the images of ``cache``; the resumable checkpoint ``out`` (format
    :data:`FORMAT`) is written every K epochs and at the end."""
    s = settings
    image, _ = cache.full_case(0)
    torch.manual_seed(s.seed)
    model = AnatoMaskModel.build(s.arch, int(image.shape[0]), s.roi, **s.arch_params).to(device)
    masking.grid_of(s.roi, s.mim_patch_size)  # a clear error before any work
    roi = tuple(s.roi)
    epochs = step1_epochs(s, n_images)
    ipe = epoch_iterations(s, n_images)
    holder: Dict[str, Any] = {}

    def sample(generator: torch.Generator) -> torch.Tensor:
        images, _ = cache.sample(s.batch_size, roi, generator=generator, labelled=False)
        return images

    def step(net: AnatoMaskModel, images: torch.Tensor, generator: torch.Generator) -> Dict[str, Any]:
        trainer = holder["trainer"]
        grid = masking.grid_of(images.shape[2:], s.mim_patch_size)
        guided = guided_patches(s, masked_count(grid, s.anatomask_mask_ratio), trainer)
        return anatomask_losses(
            net, images, patch=s.mim_patch_size, mask_ratio=s.anatomask_mask_ratio, guided=guided,
            generator=generator, teacher_error=s.teacher_error_target,
        )

    def after_step(trainer: Any) -> None:
        start, end = decays(s, trainer.total_iterations)
        if s.anatomask_schedule == "paper":
            epoch = (trainer.iteration - 1) // trainer.iterations_per_epoch  # the epoch of the step just made
            update_teacher(trainer.model, epoch, trainer.epochs, start, end)
        else:
            update_teacher(trainer.model, trainer.iteration - 1, trainer.total_iterations, start, end)

    trainer = make_trainer(
        model, step, sample,
        settings=s, clip_grad_norm=s.clip_grad_norm or DEFAULT_CLIP,
        epochs=epochs, iterations_per_epoch=ipe, stage="pretrain", title="AnatoMask pre-training", device=device,
        checkpoint_path=out, checkpoint_format=FORMAT, metadata={"anatomask": settings_of(s), **metadata},
        progress=progress, resume=resume, after_step=after_step, max_iterations=step1_iterations(s, n_images),
    )
    holder["trainer"] = trainer
    start, end = decays(s, trainer.total_iterations)
    progress.log(
        f"AnatoMask pre-training: {s.arch} at ROI {list(roi)}, {s.mim_patch_size}^3 patches, mask ratio "
        f"{s.anatomask_mask_ratio}, {trainer.total_iterations} iterations ({epochs} epochs x {ipe}) on {device}; "
        f"{s.anatomask_schedule} schedule: EMA decay {start:.4g} -> {end:.4g}, guided share up to {s.guided_final_ratio}."
    )
    summary = trainer.run()
    summary["checkpoint"] = str(out)
    return summary


def train(run: Any, out: Path, resume: bool = False) -> Dict[str, Any]:
    """Pre-training, then Step 2 from its encoder (or all but the output layer)."""
    from lwi import checkpoint
    from lwi.engine import model_tensors

    s = run.settings
    pre_path = derived_path(out, ANATOMASK_INFIX)
    last, i1, step2_started = pretrain_first(
        run, out, pre_path, run_pretraining, "AnatoMask pre-training", resume
    )
    tensors, meta = checkpoint.load(pre_path)
    if meta.get("format") != FORMAT:
        raise LWIError(f"{pre_path} is not an AnatoMask pre-training checkpoint.")
    summary = run_step2(
        run,
        out,
        last,
        resume=step2_started,
        init=(model_tensors(tensors), pre_path.name),
        recipe=Step2Recipe(encoder_only=s.anatomask_transfer == "encoder"),
        provenance={
            "strategy": NAME,
            "strategy_settings": settings_of(s),
            "pretrain_epochs": s.pretrain_epochs,
            **run.describe_split(),
            "unlabeled_images": len(run.unlabeled),
            "iterations": {"pretrain": i1},
            "seed": s.seed,
        },
        progress_offset=i1,
    )
    summary["pretraining"] = str(pre_path)
    summary["iterations"] = {"pretrain": i1, "finetune": summary["iterations"]}
    return public_summary(summary)
