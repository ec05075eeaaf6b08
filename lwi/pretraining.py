"""LWI Step 1 model and losses, and the transfer of its weights to the Step-2 segmentation network.

``Step1Model`` = the architecture adapter with one output channel per input channel (reconstruction)
plus the order heads, so its state-dict keys start with ``net.`` and ``order_heads.``.
Loss = w_rec * MSE(reconstruction, shuffled unmasked crop) + w_order * sum over levels of the order CE.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from lwi.architectures import Adapter, build
from lwi.errors import LWIError
from lwi.order_heads import OrderHeads, order_losses
from lwi.reconstruction import reconstruction_loss
from lwi.transformation import TransformationModule

NET_PREFIX = "net."


class Step1Model(nn.Module):
    """The Step-1 network: ``net`` (an adapter reconstructing its input) and ``order_heads``."""

    def __init__(self, net: Adapter, normalise: Optional[bool] = None):
        super().__init__()
        if net.out_channels != net.in_channels:
            raise LWIError(
                f"A Step-1 network reconstructs its input, so it needs {net.in_channels} output channels, "
                f"not {net.out_channels}."
            )
        self.net = net
        normalise = net.normalise_order_features if normalise is None else bool(normalise)
        self.order_heads = OrderHeads(net.level_channels, net.num_subvolumes, normalise=normalise)

    @classmethod
    def build(
        cls, arch: str, in_channels: int, roi_size: Sequence[int], normalise: Optional[bool] = None, **params: Any
    ) -> Step1Model:
        """Build the adapter for ``arch`` with ``out_channels = in_channels`` and matching order heads
        (``normalise``: layer-normalised slot features; None: the architecture's default)."""
        return cls(build(arch, in_channels, in_channels, roi_size, **params), normalise=normalise)

    @property
    def num_subvolumes(self) -> int:
        return self.net.num_subvolumes

    def spec(self) -> Dict[str, Any]:
        """The adapter's spec (rebuild with ``Step1Model(build(**spec))``)."""
        return self.net.spec()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``(reconstruction [B, C, X, Y, Z], order logits per level [B, N, N])``."""
        output, levels = self.net.forward_with_levels(x)
        return output, self.order_heads(levels)


def step1_losses(
    model: Step1Model,
    images: torch.Tensor,
    transform: TransformationModule,
    generator: Optional[torch.Generator] = None,
    w_rec: float = 1.0,
    w_order: float = 1.0,
) -> Dict[str, Any]:
    """Transform a batch, run the model and return ``{"total", "reconstruction", "order": [per level]}``."""
    if transform.num_subvolumes != model.num_subvolumes:
        raise LWIError(
            f"The transformation uses {transform.num_subvolumes} sub-volumes but the network's bottleneck "
            f"has depth {model.num_subvolumes}."
        )
    t = transform(images, generator=generator)
    output, logits = model(t.masked)
    rec = reconstruction_loss(output, t.target)
    order = order_losses(logits, t.permutation)
    total = w_rec * rec + w_order * torch.stack(order).sum()
    return {"total": total, "reconstruction": rec, "order": order}


def transfer_step1_weights(
    step1_state: Mapping[str, torch.Tensor], seg_adapter: Adapter, only: Optional[Sequence[str]] = None
) -> Tuple[List[str], List[str]]:
    """Copy every pre-trained ``net.`` tensor into ``seg_adapter`` except its output layer(s), or with
    ``only`` (state-dict prefixes, e.g. ``seg_adapter.encoder_prefixes``) just those; other pre-trained
    tensors (order heads, EMA teachers, decoders) are dropped. Returns ``(loaded_keys, new_keys)`` in the
    adapter's own key space (``net.<monai key>``): the keys taken over and those left at their fresh
    initialisation."""
    target = seg_adapter.state_dict()
    outputs = tuple(seg_adapter.output_prefixes)
    source = {k[len(NET_PREFIX) :]: v for k, v in step1_state.items() if k.startswith(NET_PREFIX)}

    def taken(key: str) -> bool:
        return key.startswith(tuple(only)) if only is not None else not key.startswith(outputs)

    if only is not None and not tuple(only):
        raise LWIError(f"{seg_adapter.name} names no encoder to transfer.")
    wanted = {k for k in target if taken(k)}
    offered = {k for k in source if taken(k)}
    mismatched = sorted(k for k in wanted & offered if tuple(source[k].shape) != tuple(target[k].shape))
    differences = mismatched or sorted(wanted ^ offered)
    if differences:
        raise LWIError(
            f"The Step-1 weights were pre-trained for another architecture or input size than "
            f"{seg_adapter.name} at ROI {seg_adapter.roi_size} (first difference: '{differences[0]}')."
        )
    loaded = sorted(wanted)
    with torch.no_grad():
        for k in loaded:
            target[k].copy_(source[k].to(device=target[k].device, dtype=target[k].dtype))
    new = sorted(k for k in target if k not in wanted)
    return loaded, new
