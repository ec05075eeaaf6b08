"""The ``anatomask`` strategy (Li et al., AnatoMask): masked-image pre-training whose mask is partly
chosen by an EMA teacher's reconstruction error, then fine-tuning from the encoder's weights.

Pre-training, per batch of crops (16^3 patches, mask ratio 0.6, so M = L - round(0.4 L) masked):

1. a random mask m1 (M patches per sample); the EMA teacher reconstructs the masked image without
   gradients and its per-patch error is computed on m1's masked patches (visible ones count 0);
2. the final mask: the ``len_loss = int(M r_T (e + 1) / (E - 1))`` patches the teacher reconstructs
   worst (r_T = 0.5; from 0 at epoch 0, "easy to hard") plus ``M - len_loss`` random ones;
3. the student reconstructs the masked image; loss = MSE against each patch standardised by its own
   mean and standard deviation, averaged over masked patches only;
4. AdamW step (gradients clipped at 12), then ``T <- d T + (1 - d) S`` with d rising linearly from
   0.999 to 0.9999 over the first quarter of the epochs.

The network is the architecture's dense MONAI network with masked patches set to 0 at its input; the
authors use a sparse (submanifold) encoder instead (a documented deviation, docs/strategies.md).
Fine-tuning keeps only the encoder's weights (as the authors' loader), or optionally all but the output.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from lwi import masking
from lwi.architectures import Adapter, build
from lwi.ema import ema_update, make_teacher, ramp_schedule
from lwi.errors import LWIError

NAME = "anatomask"
DESCRIPTION = "AnatoMask: teacher-guided masked-image pre-training, then fine-tuning from the encoder"
FORMAT = "lwi-anatomask-pretrain"  # the resumable pre-training checkpoint


class AnatoMaskModel(nn.Module):
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

    def train(self, mode: bool = True) -> AnatoMaskModel:
        super().train(mode)
        self.teacher.eval()
        return self

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
    """One pre-training batch: ``{"total" (the reconstruction loss), "guided" (patches the teacher chose)}``.

    ``guided`` is :func:`lwi.masking.guided_count` for the current epoch. ``teacher_error``:
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
    if guided > 0:
        first = masking.random_mask(b, grid, count, images.device, generator)
        with torch.no_grad():
            teacher_patches = masking.patchify(model.teacher(masking.mask_voxels(images, first, patch)).float(), patch)
        errors = masking.patch_errors(teacher_patches, target if teacher_error == "normalized" else raw)
        errors = errors * first.flatten(1)  # only patches the teacher had to fill in count
        mask = masking.generate_mask(errors, count, guided, generator).view(b, *grid)
    else:  # no teacher pass while the guided share is still 0
        mask = masking.random_mask(b, grid, count, images.device, generator)
    reconstruction = model(masking.mask_voxels(images, mask, patch))
    loss = masking.masked_patch_mse(masking.patchify(reconstruction.float(), patch), target, mask)
    return {"total": loss, "guided": torch.tensor(float(guided))}


def update_teacher(model: AnatoMaskModel, epoch: float, epochs: int, start: float, end: float) -> float:
    """The EMA step after each optimiser step; returns the decay used."""
    decay = ramp_schedule(epoch, epochs, start, end)
    ema_update(model.teacher, model.net, decay)
    return decay
