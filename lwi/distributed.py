"""Multi-process training with PyTorch's own stack: ``torchrun`` + ``torch.distributed`` + DDP.

``torchrun --nproc-per-node N -m lwi train ...`` starts N copies of ``lwi``; torchrun sets
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's
environment. :func:`init_from_env` reads them (a plain ``lwi train`` has none and stays a single
process), joins the process group (NCCL on CUDA, gloo on the CPU) and picks this rank's GPU.

Conventions the engine and the training steps rely on (docs/distributed.md):

* every rank holds the whole case cache and draws its own crops from a generator seeded with
  :func:`rank_seed` (rank 0 uses the run's seed itself, so one process = the plain run);
* an iteration is one optimiser step on ``world_size x batch_size`` crops (gradients averaged by
  DDP), and the schedule counts these global iterations;
* only rank 0 validates, writes files and reports progress (:func:`is_main`).
"""

from __future__ import annotations

import datetime
import os
from typing import Any, List, Optional

import torch

# Validation and checkpoint writing run on rank 0 while the others wait in the next all-reduce:
# allow them an hour (NCCL's default is 10 minutes) before calling the run hung.
TIMEOUT = datetime.timedelta(hours=1)

# A large odd multiplier keeps the ranks' seeds apart from each other and from nearby run seeds.
_SEED_STRIDE = 1_000_003


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when started without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of training processes (1 without a process group)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the process that validates, writes files and reports progress (rank 0)."""
    return rank() == 0


def rank_seed(seed: int, rank_: int) -> int:
    """The seed of rank ``rank_``'s crop generator; rank 0 keeps the run's seed."""
    return int(seed) + _SEED_STRIDE * int(rank_)


def init_from_env(device: Any = "auto") -> Optional[torch.device]:
    """Join the process group torchrun describes in the environment, if any.

    Returns this rank's device (``cuda:LOCAL_RANK`` on GPUs, else the CPU) when a group was set up,
    None for a single process (no ``WORLD_SIZE`` above 1), which then keeps ``device``.
    ``device`` may be ``"auto"``, ``"cpu"`` or ``"cuda"``; a fixed ``cuda:N`` is refused because
    each rank needs its own GPU.
    """
    if env_world_size() <= 1:
        return None
    from lwi.errors import LWIError

    text = str(device or "auto").lower()
    if text.startswith("cuda:"):
        raise LWIError("Under torchrun every process takes its own GPU (cuda:LOCAL_RANK); use --device cuda or auto.")
    use_cuda = text == "cuda" or (text == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise LWIError("--device cuda was asked for under torchrun, but PyTorch sees no CUDA GPU.")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise LWIError(
                f"torchrun started more processes per node than there are GPUs ({torch.cuda.device_count()})."
            )
        this = torch.device("cuda", local)
        torch.cuda.set_device(this)
    else:
        this = torch.device("cpu")
    if not is_initialized():
        backend = "nccl" if this.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    return this


def shutdown(completed: bool = False) -> None:
    """Leave the process group (at the end of a run, also after an error).

    ``completed``: this rank finished normally, as every rank then does: the ranks first meet at a
    barrier, so that none tears its connections down while another still works (rank 0 writes the
    model after the last collective); gloo can abort a rank whose peer left early ("terminate called
    without an active exception"). After an error there is no barrier: the other ranks may never come.
    """
    if is_initialized():
        if completed:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_initialized():
        torch.distributed.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (any picklable object; itself in a single process)."""
    if not is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(value: Any) -> List[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in a single process)."""
    if not is_initialized():
        return [value]
    out: List[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, value)
    return out


class _DistributedModel(torch.nn.parallel.DistributedDataParallel):
    """DDP that also answers for the wrapped model's own attributes (``num_subvolumes``, ``spec()``,
    ...), so a strategy's step function works the same on the bare and the wrapped model."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when a process group is set up, else ``model`` itself.

    Buffers are synchronised once at the start, not at every forward pass: LWI's networks use
    instance, group and layer norms (no running statistics), and a per-pass broadcast is a collective
    call that rank 0's validation, run on the bare model, must not need.
    """
    if not is_initialized():
        return model
    import inspect

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    # torch >= 2.13 names the switch forward_sync_buffers (broadcast_buffers is deprecated there).
    named = "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    buffers = {"forward_sync_buffers": False} if named else {"broadcast_buffers": False}
    return _DistributedModel(model, device_ids=ids, **buffers)
