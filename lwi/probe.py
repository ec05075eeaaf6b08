"""Measurements a training plan needs from this machine: seconds per iteration and training memory.

* :func:`time_iterations` runs a few real iterations (forward, loss, backward, AdamW) of the planned
  Step-1 and Step-2 networks on random crops of the planned size, after one warm-up iteration.
* :func:`memory_estimator` counts the activations a forward pass keeps (every leaf module's output,
  on PyTorch's ``meta`` device, so nothing is computed or allocated) plus weights, gradients and
  AdamW's two moments; the count is exact, the bytes are an estimate (kernels' workspaces differ).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

PROBE_ITERATIONS = {"cpu": 1, "cuda": 3}  # timed iterations per step (after one warm-up)
CUDA_CONTEXT_BYTES = 1.0 * 2**30  # the CUDA context and allocator slack


def device_memory(device: Any) -> float:
    """Total memory of a CUDA device (bytes)."""
    import torch

    return float(torch.cuda.get_device_properties(device).total_memory)


def _build_on_meta(arch: str, params: Mapping[str, Any], in_channels: int, out_channels: int, roi: Sequence[int]):
    import torch

    from lwi.architectures import build

    try:
        with torch.device("meta"):
            return build(arch, in_channels, out_channels, roi, **params)
    except RuntimeError:  # constructors that compute on tensors (SwinUNETR) are built on the CPU
        return build(arch, in_channels, out_channels, roi, **params).to("meta")


def memory_estimator(
    arch: str, params: Mapping[str, Any], in_channels: int, out_channels: int, amp: bool = True
) -> Callable[[Tuple[int, int, int], int], float]:
    """``estimate(roi, batch) -> bytes`` of training memory for this network on a GPU."""
    import torch

    cache: Dict[Tuple[int, int, int], Tuple[int, int]] = {}

    def counts(roi: Tuple[int, int, int]) -> Tuple[int, int]:
        if roi not in cache:
            net = _build_on_meta(arch, params, in_channels, out_channels, roi)
            total = [0]

            def hook(_module, _inputs, output):
                if isinstance(output, torch.Tensor):
                    total[0] += output.numel()

            handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
            with torch.no_grad():
                net(torch.empty(1, in_channels, *roi, device="meta"))
            for h in handles:
                h.remove()
            cache[roi] = (total[0], sum(p.numel() for p in net.parameters()))
        return cache[roi]

    def estimate(roi: Tuple[int, int, int], batch: int) -> float:
        activations, parameters = counts(tuple(int(r) for r in roi))
        act_bytes = 2 if amp else 4
        return activations * batch * act_bytes + parameters * 16 + CUDA_CONTEXT_BYTES

    return estimate


def windows_per_case(fp: Any, spacing: Sequence[float], roi: Sequence[int], overlap: float = 0.5) -> int:
    """Sliding windows over a median case at ``spacing`` (what one validation of one case costs)."""
    size = np.asarray(fp.median_size_mm()) / np.asarray(spacing, dtype=float)
    n = 1
    for s, r in zip(size, roi):
        step = max(1, int(r * (1 - overlap)))
        n *= 1 + max(0, int(np.ceil((s - r) / step)))
    return int(n)


def time_iterations(
    arch: str,
    params: Mapping[str, Any],
    roi: Sequence[int],
    batch: int,
    in_channels: int,
    out_channels: int,
    device: Any,
    with_step1: bool = True,
    cube_size: int = 16,
) -> Dict[str, float]:
    """Seconds per Step-1 and Step-2 iteration, per validation window, and to build a network, measured
    (Step 1 with the run's own mask ``cube_size``, which must divide ``roi``)."""
    import torch
    from monai.losses import DiceCELoss

    from lwi.architectures import build
    from lwi.pretraining import Step1Model, step1_losses
    from lwi.transformation import TransformationModule

    roi = tuple(int(r) for r in roi)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, in_channels, *roi, generator=gen).to(device)
    labels = torch.randint(0, out_channels, (batch, 1, *roi), generator=gen).float().to(device)
    amp = torch.device(device).type == "cuda"
    rates: Dict[str, float] = {}

    repeats = PROBE_ITERATIONS["cuda" if amp else "cpu"]

    def timed(step: Callable[[], None]) -> float:
        step()  # warm-up: allocations, cuDNN autotuning
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        _sync(device)
        return (time.perf_counter() - start) / repeats

    start = time.perf_counter()
    net = build(arch, in_channels, out_channels, roi, **params).to(device)
    rates["build"] = time.perf_counter() - start
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step2() -> None:
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rates["step2"] = timed(step2)
    net.eval()
    windows = images[:1].repeat(4, 1, 1, 1, 1)

    def forward() -> None:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            net(windows)

    rates["window"] = timed(forward) / 4
    if with_step1:
        model = Step1Model.build(arch, in_channels, roi, **params).to(device)
        transform = TransformationModule(model.num_subvolumes, cube_size=int(cube_size))
        opt1 = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step1() -> None:
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                loss = step1_losses(model, images, transform, generator=gen)["total"]
            opt1.zero_grad(set_to_none=True)
            loss.backward()
            opt1.step()

        rates["step1"] = timed(step1)
    return rates


def _sync(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
