"""Network architectures for LWI: one adapter per MONAI network (see :class:`~lwi.architectures.base.Adapter`).

Adding an architecture means writing one adapter module, listing its class in ``ARCHITECTURES`` and
its name in :data:`lwi.names.ARCHITECTURE_NAMES` (the torch-free list the CLI and the GUI offer).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Type

from lwi.architectures.base import Adapter
from lwi.architectures.mednext import MedNeXtAdapter
from lwi.architectures.segresnet import SegResNetAdapter
from lwi.architectures.swinunetr import SwinUNETRAdapter
from lwi.architectures.unetr import UNETRAdapter
from lwi.errors import LWIError
from lwi.names import DEFAULT_ARCHITECTURE

ARCHITECTURES: Dict[str, Type[Adapter]] = {
    cls.name: cls for cls in (UNETRAdapter, SwinUNETRAdapter, MedNeXtAdapter, SegResNetAdapter)
}
DEFAULT_ARCH = DEFAULT_ARCHITECTURE


def build(
    arch: str,
    in_channels: int,
    out_channels: int,
    roi_size: Sequence[int],
    params: Optional[Dict[str, Any]] = None,
    **kwargs: Any,
) -> Adapter:
    """Build the adapter for ``arch`` (case-insensitive). Parameters come from ``params`` (as stored by
    :meth:`Adapter.spec`, so ``build(**adapter.spec())`` rebuilds a network) and/or keyword arguments."""
    cls = ARCHITECTURES.get(str(arch).lower())
    if cls is None:
        raise LWIError(f"Unknown architecture '{arch}'; choose one of: {', '.join(sorted(ARCHITECTURES))}.")
    return cls(in_channels, out_channels, roi_size, **{**(params or {}), **kwargs})


__all__ = ["ARCHITECTURES", "DEFAULT_ARCH", "Adapter", "build"]
