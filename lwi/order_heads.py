"""Structural-consistency heads of LWI Step 1: predict which sub-volume each depth slot holds.

Every encoder level that feeds the decoder gets one linear classifier. A level ``[B, C, X, Y, Z]`` is
averaged over the two in-plane axes and within each of the N equal depth slots (aligned with the
sub-volumes shuffled by :mod:`lwi.transformation`), giving ``[B, N, C]``; for UNETR each slot's vector is
layer-normalised (:func:`normalise_slots`); the classifier maps it to N logits. The target of slot j is ``permutation[:, j]``.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lwi.errors import LWIError


def slot_pool(features: torch.Tensor, num_subvolumes: int) -> torch.Tensor:
    """Average ``features [B, C, X, Y, Z]`` over X, Y and within each of N depth slots: ``[B, N, C]``."""
    if features.dim() != 5:
        raise LWIError(f"Expected encoder features [B, C, X, Y, Z], got shape {tuple(features.shape)}.")
    b, c, _, _, z = features.shape
    n = int(num_subvolumes)
    if z % n != 0:
        raise LWIError(f"An encoder level of depth {z} cannot be pooled into {n} equal depth slots.")
    per_depth = features.mean(dim=(2, 3))  # [B, C, Z]
    return per_depth.view(b, c, n, z // n).mean(dim=3).transpose(1, 2)


def normalise_slots(slots: torch.Tensor) -> torch.Tensor:
    """Layer-normalise each slot's feature vector ``[B, N, C]`` over C (no learned scale or shift).

    Only the last level of an encoder such as UNETR's ViT is normalised before the decoder; the
    others are raw residual streams whose scale moves quickly under AdamW's first steps. A linear
    head on them turns a small coherent change of the features into a large change of its logits,
    and on an unlearnable order (noise) one level's loss then jumps far above ln N (measured in
    benchmarks/results/order-heads-cpu.json). Normalising the pooled features, as ViT does before
    its classification head, keeps every level's classifier linear on features of a fixed scale.
    """
    return F.layer_norm(slots.float(), slots.shape[-1:]).to(slots.dtype)


class OrderHeads(nn.Module):
    """One linear order classifier per encoder level; ``forward(levels)`` -> list of logits ``[B, N, N]``."""

    def __init__(self, level_channels: Sequence[int], num_subvolumes: int, normalise: bool = False):
        super().__init__()
        # Layer-normalised slot features only where a level's scale is not kept in check by the
        # network (UNETR's raw ViT levels, Adapter.normalise_order_features): on SegResNet the demo's
        # fine-tuned Dice fell from 0.94 to 0.66 with it, so the CNNs keep the paper's plain heads.
        self.normalise = bool(normalise)
        if int(num_subvolumes) < 2:
            raise LWIError(f"Order prediction needs at least 2 sub-volumes, got {num_subvolumes}.")
        self.level_channels = [int(c) for c in level_channels]
        self.num_subvolumes = int(num_subvolumes)
        self.heads = nn.ModuleList(nn.Linear(c, self.num_subvolumes) for c in self.level_channels)
        for head in self.heads:
            # Small weights: the untrained heads start near chance (loss ln N per level), as ViT heads do.
            nn.init.trunc_normal_(head.weight, std=0.02)
            nn.init.zeros_(head.bias)

    def forward(self, levels: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(levels) != len(self.heads):
            raise LWIError(f"Expected {len(self.heads)} encoder levels for the order heads, got {len(levels)}.")
        pooled = [slot_pool(f, self.num_subvolumes) for f in levels]
        if self.normalise:
            pooled = [normalise_slots(x) for x in pooled]
        return [head(x) for head, x in zip(self.heads, pooled)]


def order_losses(logits: Sequence[torch.Tensor], permutation: torch.Tensor) -> List[torch.Tensor]:
    """Cross-entropy per level of logits ``[B, N, N]`` against ``permutation [B, N]`` (float32)."""
    target = permutation.to(torch.long).reshape(-1)
    losses = []
    for level in logits:
        n = level.shape[-1]
        losses.append(F.cross_entropy(level.float().reshape(-1, n), target.to(level.device)))
    return losses
