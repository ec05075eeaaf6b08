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
* every rank validates its share of the held-out cases (:func:`share`) and the scores are
  gathered, so all ranks take the same decisions; only rank 0 writes files and reports progress
  (:func:`is_main`).
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, TypeVar

import torch

# Checkpoint writing runs on rank 0 while the others wait in the next collective call, and a slow
# validation case keeps the others waiting at the gather:
# allow them an hour (NCCL's default is 10 minutes) before calling the run hung.
TIMEOUT = datetime.timedelta(hours=1)

T = TypeVar("T")

# A large odd multiplier keeps the ranks' seeds apart from each other and from nearby run seeds.
_SEED_STRIDE = 1_000_003


# What torchrun sets in each process it starts; all of them are needed to join the group.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# How long a process waits for torchrun's store: it answers at once when torchrun started this process.
STORE_TIMEOUT = datetime.timedelta(seconds=15)

# This process's part in the group: torchrun's store (for the failure record) and how it failed.
_state: Dict[str, Any] = {"store": None, "joined": False, "first_failure": True, "failure": None, "rank": 0, "world_size": 1}


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when started without torchrun)."""
    from lwi.errors import LWIError

    text = os.environ.get("WORLD_SIZE", "").strip() or "1"
    try:
        return int(text)
    except ValueError:
        raise LWIError(
            f"WORLD_SIZE={text!r} in the environment is not a number of processes; start lwi with torchrun, "
            "or unset WORLD_SIZE to run one process."
        ) from None


def launched_rank() -> Optional[int]:
    """The rank torchrun gave this process (``RANK``, 0 if unset) when ``WORLD_SIZE`` is above 1,
    else None: commands that run in one process (``lwi segment``) leave the work to rank 0."""
    if env_world_size() <= 1:
        return None
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def launch_problem() -> Optional[str]:
    """Why the torchrun variables of this environment cannot start a process group (one sentence),
    or None when they can. Without torchrun (a stray or half-set ``WORLD_SIZE`` in a shell or a
    job script) joining would wait for processes that never come."""
    size = env_world_size()
    unset = "unset " + " ".join(LAUNCH_VARIABLES) + " to train in one process"
    missing = [v for v in LAUNCH_VARIABLES if not os.environ.get(v, "").strip()]
    if missing:
        return (
            f"WORLD_SIZE={size} is set but {_and(missing)} {'is' if len(missing) == 1 else 'are'} not: "
            f"start lwi with torchrun (torchrun --nproc-per-node {size} -m lwi ...), or {unset}."
        )
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        return (
            f"WORLD_SIZE={size} is set but lwi was not started by torchrun (no TORCHELASTIC_RUN_ID): "
            f"start it with torchrun --nproc-per-node {size} -m lwi ..., or {unset}."
        )
    try:
        rank_, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        int(os.environ["MASTER_PORT"])
    except ValueError:
        return f"RANK, LOCAL_RANK and MASTER_PORT must be whole numbers (torchrun sets them); {unset}."
    if not 0 <= rank_ < size or local < 0:
        return f"RANK={rank_} is not one of the {size} processes of WORLD_SIZE; {unset}."
    return None


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

    problem = launch_problem()
    if problem:
        raise LWIError(problem)
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
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        try:
            with _signals_end_at_once():
                _state["store"] = _torchrun_store()
                torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:  # torch.distributed's errors derive from RuntimeError
            raise LWIError(
                f"This process (rank {os.environ['RANK']}) could not join the other training processes at {where} "
                f"with {backend} ({_first_line(exc)}); start lwi with torchrun, or unset "
                f"{' '.join(LAUNCH_VARIABLES)} to train in one process."
            ) from None
        _state.update(joined=True, first_failure=True, failure=None, rank=rank(), world_size=world_size())
    return this


@contextmanager
def _signals_end_at_once() -> Iterator[None]:
    """SIGTERM and Ctrl-C end the process at once while it joins the group: the wait is in C++, where
    Python's handlers (:mod:`lwi.interrupt`) would run only after it, and nothing is written yet."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, signal.SIG_DFL)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _torchrun_store() -> Optional[Any]:
    """A client of the store torchrun's agent keeps at MASTER_ADDR:MASTER_PORT, which outlives the
    training processes (the failure record uses it), or None when rank 0 hosts the store itself
    (torchrun with another rendezvous). Connecting fails after :data:`STORE_TIMEOUT` when the
    torchrun that set these variables is gone, rather than waiting the group's hour."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return None
    return torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=STORE_TIMEOUT
    )


def _and(names: List[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")


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


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) is a failed collective call: another process of the
    group ended or broke its connection (gloo and NCCL raise RuntimeErrors naming themselves)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc)
        if isinstance(exc, torch.distributed.DistError) or any(k in text for k in ("gloo", "NCCL", "c10d")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def note_failure(exc: BaseException) -> None:
    """Record, before leaving the group, that this rank failed with ``exc``.

    The first rank to fail (counted in torchrun's store) reports its error; the others, which fail
    because it left (a broken collective call, torchrun's SIGTERM), stay silent. A stop asked for
    by Ctrl-C or SIGTERM is no failure: rank 0 alone says it, unless a rank failed first.
    """
    if not _state["joined"]:
        return
    interrupted = isinstance(exc, KeyboardInterrupt)
    _state["failure"] = "interrupt" if interrupted else ("lost" if lost_connection(exc) else "error")
    store = _state["store"]
    if store is None:
        _state["first_failure"] = not interrupted or _state["rank"] == 0
        return
    key = f"lwi/failures/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    try:
        if interrupted:  # counts nothing: only reads whether some rank failed
            _state["first_failure"] = _state["rank"] == 0 and store.add(key, 0) == 0
        else:
            _state["first_failure"] = store.add(key, 1) == 1
    except RuntimeError:  # torchrun already gone: say it
        _state["first_failure"] = True


def failure_message(message: str) -> Optional[str]:
    """The sentence this process prints for its error ``message``: None when another rank's error is
    the one reported (see :func:`note_failure`); under torchrun it names this rank."""
    failure = _state["failure"]
    if not _state["joined"] or failure is None:
        return message
    if not _state["first_failure"]:
        return None
    if failure == "interrupt":
        return message
    who = f"Rank {_state['rank']} of {_state['world_size']}"
    if failure == "lost":
        return (
            f"{who} lost its connection to another training process, which ended without a message (killed, "
            "e.g. for lack of memory?); torchrun's report below names the rank that ended first."
        )
    return f"{who} failed: {message}"


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


def share(items: Sequence[T]) -> List[T]:
    """This rank's share of ``items`` (every ``world_size``-th one from its rank on; all in one process)."""
    return list(items)[rank():: world_size()]


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
