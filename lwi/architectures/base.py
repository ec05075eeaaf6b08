"""Adapter base: wraps a MONAI network as ``self.net`` and exposes its encoder levels through hooks.

An adapter adds no computation of its own. It builds the MONAI network (so state-dict keys are
``net.<monai keys>``), registers forward hooks that capture the encoder features feeding the decoder
(shallow to deep), and reports what Step 1 and Step 2 need: the level channels, the bottleneck depth N,
the state-dict prefixes of the output layer(s), which Step 2 re-initialises, and of the encoder
(what AnatoMask fine-tuning keeps), and for transformers the patch-token embedding (MedContext's
token masking).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from lwi.errors import LWIError


def _jsonable(value: Any) -> Any:
    """Tuples become lists so that ``spec()`` survives a JSON round trip unchanged."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _identity(value: Any) -> Any:
    return value


class _LevelHook:
    """Forward (pre-)hook storing a level in its adapter. An object rather than a closure, so that
    ``copy.deepcopy(adapter)`` (EMA teachers) gives hooks that fill the copy, not the original."""

    def __init__(self, adapter: Adapter, index: int, select: Callable[[Any], Any] = _identity, position: int = -1):
        self.adapter, self.index, self.select, self.position = adapter, index, select, position

    def __call__(self, _module: nn.Module, args: Tuple[Any, ...], output: Any = None) -> None:
        if self.adapter._levels is not None:
            self.adapter._store(self.index, args[self.position] if self.position >= 0 else self.select(output))


class Adapter(nn.Module):
    """Base class of architecture adapters. Subclasses set the class attributes and implement
    :meth:`make_network`, :meth:`register_level_hooks`, :attr:`level_channels` and :attr:`depth_factor`."""

    name: str = ""
    defaults: Dict[str, Any] = {}
    fixed: Dict[str, Any] = {}  # MONAI arguments the adapter relies on; users cannot override them
    output_prefixes: Tuple[str, ...] = ()  # relative to this adapter's state dict, e.g. ("net.out.",)
    encoder_prefixes: Tuple[str, ...] = ()  # the encoder's state-dict prefixes (decoder and output excluded)
    token_patch: int = 0  # transformers: edge in voxels of one patch token; 0 = no tokens (CNNs)
    # Order heads on layer-normalised slot features: for levels that are raw residual streams (UNETR's ViT)
    normalise_order_features: bool = False

    def __init__(self, in_channels: int, out_channels: int, roi_size: Sequence[int], **params: Any):
        super().__init__()
        roi = [int(s) for s in roi_size]
        if len(roi) != 3 or min(roi) < 1:
            raise LWIError(f"The ROI must be three positive sizes (X Y Z), got {list(roi_size)}.")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise LWIError(
                f"Unknown {self.name} parameter(s) {unknown}; known ones: {sorted(self.defaults)}."
            )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.roi_size = roi
        self.params = _jsonable({**self.defaults, **params})
        self.check_roi(roi)
        try:
            self.net = self.make_network()
        except (ValueError, TypeError, AssertionError) as exc:
            raise LWIError(f"Cannot build {self.name} with parameters {self.params}: {exc}") from None
        self._levels: Optional[Dict[int, torch.Tensor]] = None
        self.register_level_hooks()

    # --- to implement per architecture ---------------------------------------------------------
    def make_network(self) -> nn.Module:
        raise NotImplementedError

    def register_level_hooks(self) -> None:
        """Call :meth:`capture_output` / :meth:`capture_input` on the modules whose features are levels."""
        raise NotImplementedError

    @property
    def level_channels(self) -> List[int]:
        raise NotImplementedError

    @property
    def depth_factor(self) -> int:
        """Downsampling from the input to the bottleneck grid along depth."""
        raise NotImplementedError

    @property
    def roi_divisor(self) -> int:
        """Every ROI axis must be a multiple of this for the network to take it."""
        return self.depth_factor

    # --- shared --------------------------------------------------------------------------------
    def check_roi(self, roi: Sequence[int]) -> None:
        """Raise :class:`LWIError` if the network cannot take a crop of this size."""
        d = self.roi_divisor
        if any(s % d for s in roi):
            raise LWIError(
                f"{self.name} needs every ROI size to be a multiple of {d}, got {list(roi)}; "
                f"for example use {[max(d, (s // d) * d) for s in roi]}."
            )

    def output_bias(self) -> Optional[nn.Parameter]:
        """The output layer's bias (one value per class), or None if it has none."""
        for name, param in self.named_parameters():
            if (
                name.endswith(".bias")
                and name.startswith(self.output_prefixes)
                and tuple(param.shape) == (self.out_channels,)
            ):
                return param
        return None

    @property
    def num_subvolumes(self) -> int:
        """N: the bottleneck grid size along depth for this ROI (the number of Step-1 sub-volumes)."""
        return self.roi_size[2] // self.depth_factor

    def token_embedding(self) -> Optional[nn.Module]:
        """The module whose output holds the patch tokens (``[B, L, D]`` in ``(x y z)`` order, or
        ``[B, D, gx, gy, gz]``), for token masking; None for CNNs, which have no tokens."""
        return None

    @property
    def token_channels(self) -> int:
        """The width of one patch token (0 without tokens)."""
        return 0

    @property
    def token_grid(self) -> Optional[List[int]]:
        """The patch-token grid ``[gx, gy, gz]`` for this ROI, or None without tokens."""
        return [s // self.token_patch for s in self.roi_size] if self.token_patch else None

    def capture_output(self, module: nn.Module, index: int, select: Callable[[Any], Any] = _identity) -> None:
        """Record ``select(output)`` of ``module`` as level ``index`` (a list selects several levels)."""
        module.register_forward_hook(_LevelHook(self, index, select=select))

    def capture_input(self, module: nn.Module, index: int, position: int = 0) -> None:
        """Record positional input ``position`` of ``module`` as level ``index``."""
        module.register_forward_pre_hook(_LevelHook(self, index, position=position))

    def _store(self, index: int, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                self._levels[index + i] = v
        else:
            self._levels[index] = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output (segmentation logits or reconstruction)."""
        return self.net(x)

    def forward_with_levels(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``(output, levels)``: levels are the encoder features ``[B, C_l, x, y, z_l]`` feeding the decoder."""
        self._levels = {}
        try:
            output = self.net(x)
            levels = [self._levels[i] for i in sorted(self._levels)]
        finally:
            self._levels = None  # plain forward passes keep no references
        if len(levels) != len(self.level_channels):
            raise LWIError(f"{self.name} produced {len(levels)} encoder levels, expected {len(self.level_channels)}.")
        return output, levels

    def spec(self) -> Dict[str, Any]:
        """Everything needed to rebuild this network: ``lwi.architectures.build(**spec)``."""
        spec = {
            "arch": self.name,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "roi_size": list(self.roi_size),
            "params": self.params,
        }
        return json.loads(json.dumps(spec))

    def monai_kwargs(self) -> Dict[str, Any]:
        """User parameters plus the fixed ones, as keyword arguments for the MONAI constructor."""
        return {**self.params, **self.fixed}
