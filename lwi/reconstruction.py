"""Contextual-consistency loss of LWI Step 1: reconstruct the shuffled, unmasked crop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lwi.errors import LWIError


def reconstruction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all voxels and channels, computed in float32 even under autocast."""
    if output.shape != target.shape:
        raise LWIError(
            f"The reconstruction output {tuple(output.shape)} does not match its target {tuple(target.shape)}."
        )
    return F.mse_loss(output.float(), target.float())
