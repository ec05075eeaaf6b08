"""What torchrun starts in the distributed tests (test_distributed.py); not a test module itself.

``ddp_worker.py trainer DATA OUT ITERATIONS``: a tiny Step-2 training through :class:`lwi.engine.Trainer`
on the real case cache, one crop per rank, validated on the held-out cases; rank 0 writes the
checkpoint OUT.

``ddp_worker.py fail RANK N ARGS...``: ``lwi ARGS...`` where rank RANK runs out of memory (MemoryError)
in its N-th optimiser step.

``ddp_worker.py lwi AUDIT_DIR ARGS...``: ``lwi ARGS...`` with a Python audit hook that records every
file this rank creates, opens for writing, renames or deletes, saved to ``AUDIT_DIR/rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

import torch
from monai.losses import DiceCELoss

from lwi.data.dataset import load_dataset
from lwi.data.preprocessing import PreprocessConfig

ROI = (16, 16, 16)
SEED = 3
PREPROCESSING = PreprocessConfig(spacing=(6.0, 6.0, 8.0), modality="CT")


def tiny_training(data: Path, sample_crops: Callable[[Any, Any], Tuple[torch.Tensor, torch.Tensor]], out: Path,
                  iterations: int):
    """The trainer both runs of the equivalence test use; ``sample_crops(cache, generator)`` draws a batch.

    The first two cases train, the others are held out and validated every other iteration (under
    torchrun each rank holds and scores its share of them, as ``lwi train`` does)."""
    from lwi import distributed
    from lwi.data.cache import CaseCache
    from lwi.engine import Trainer

    torch.set_num_threads(1)
    cases = load_dataset(data).cases
    cache = CaseCache(cases[:2], PREPROCESSING)
    model = tiny_model()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step(net, batch, generator):
        images, labels = batch
        return {"total": loss_fn(net(images), labels)}

    held = cases[2:]
    mine = distributed.share(range(len(held)))
    shared = CaseCache([held[i] for i in mine], PREPROCESSING) if mine else None
    pairs = [None] * len(held)
    for j, i in enumerate(mine):
        pairs[i] = shared.full_case(j)
    trainer = Trainer(
        model, step, lambda g: sample_crops(cache, g), epochs=iterations, iterations_per_epoch=1, lr=1e-2,
        warmup_iterations=1, seed=SEED, checkpoint_path=out, device="cpu",
        validate_fn=validator(pairs) if held else None, val_every=2,
    )
    trainer.run()
    return trainer


def tiny_model() -> torch.nn.Module:
    """The network of the equivalence test, with the same initial weights on every call."""
    from lwi.architectures import build

    torch.manual_seed(0)
    return build("segresnet", 1, 5, ROI, init_filters=8, blocks_down=[1, 1], blocks_up=[1])


def validator(pairs):
    from lwi.engine import Validator

    return Validator(pairs, {v: f"label{v}" for v in range(1, 5)}, ROI, sw_batch_size=2)


def one_crop(cache, generator):
    return cache.sample(1, ROI, generator=generator, labelled=True)


def _audit(directory: Path) -> List[List[str]]:
    events: List[List[str]] = []
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: Tuple[Any, ...]) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & writing):
                events.append([event, os.fsdecode(args[0])])
        elif event in ("tempfile.mkstemp", "os.rename", "os.remove", "os.mkdir", "shutil.rmtree", "shutil.move"):
            events.append([event, os.fsdecode(args[0]) if args and isinstance(args[0], (str, bytes, os.PathLike)) else ""])

    sys.addaudithook(hook)
    return events


def main(argv: List[str]) -> int:
    from lwi import distributed

    if argv[0] == "trainer":
        distributed.init_from_env("cpu")
        completed = False
        try:
            tiny_training(Path(argv[1]), one_crop, Path(argv[2]), int(argv[3]))
            completed = True
        finally:
            distributed.shutdown(completed)
        return 0
    if argv[0] == "fail":  # rank argv[1] runs out of memory in its argv[2]-th optimiser step
        if os.environ.get("RANK") == argv[1]:
            step, calls = torch.optim.AdamW.step, [0]

            def failing(self, *args, **kwargs):
                calls[0] += 1
                if calls[0] >= int(argv[2]):
                    raise MemoryError
                return step(self, *args, **kwargs)

            torch.optim.AdamW.step = failing
        from lwi.cli import main as lwi_main

        return lwi_main(argv[3:])
    if argv[0] == "lwi":
        directory = Path(argv[1])
        events = _audit(directory)
        from lwi.cli import main as lwi_main

        try:
            code = lwi_main(argv[2:])
        finally:
            record = [e for e in events if "/dev/" not in e[1]]
            log = directory / f"rank{os.environ.get('RANK', '0')}.json"
            log.write_text(json.dumps(record))  # recorded too, after the copy above
        return code
    raise SystemExit(f"unknown mode {argv[0]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
