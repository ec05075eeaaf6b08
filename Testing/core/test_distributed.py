"""Distributed training on the CPU with gloo and 2 real torchrun processes: DDP gives the weights of
one process with the doubled batch, a killed run resumes from its checkpoint, only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ddp_worker  # Testing/core, beside this file
import pytest
import torch

from lwi import checkpoint, distributed
from lwi.data.phantoms import write_phantom_dataset
from lwi.engine import model_tensors

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(ddp_worker.__file__)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(WORKER.parent)]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(REPO), **kwargs)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("ddp") / "phantoms", 2, seed=0, shape=(24, 24, 16))


def test_two_ranks_give_the_weights_of_one_process_with_the_doubled_batch(data, tmp_path):
    iterations = 4
    ddp_out = tmp_path / "ddp.safetensors"
    _finish(_torchrun(str(WORKER), "trainer", str(data), str(ddp_out), str(iterations)))

    # The explicit single-process equivalent: each batch = rank 0's crop then rank 1's crop, drawn
    # from generators seeded as the two ranks' are (the trainer's own one is rank 0's).
    second = torch.Generator()
    second.manual_seed(distributed.rank_seed(ddp_worker.SEED, 1))

    def both_crops(cache, generator):
        a, b = ddp_worker.one_crop(cache, generator), ddp_worker.one_crop(cache, second)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    single = ddp_worker.tiny_training(data, both_crops, tmp_path / "single.safetensors", iterations)
    ddp = model_tensors(checkpoint.load(ddp_out)[0])
    start = {k: v for k, v in _fresh_weights().items()}
    moved = 0.0
    for key, value in single.model.state_dict().items():
        # Float32 sums in another order (all-reduce vs one batch): agreement to 1e-5 of the weights'
        # scale after 4 AdamW steps of lr 1e-2, while the steps themselves moved them by ~1e-2.
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
        moved = max(moved, float((value - start[key]).abs().max()))
    assert moved > 1e-3  # the runs did train: the comparison is not of two untouched networks
    meta = checkpoint.read_metadata(ddp_out)["training"]
    assert meta["world_size"] == 2 and meta["iteration"] == iterations


def _fresh_weights():
    torch.manual_seed(0)
    from lwi.architectures import build

    return build("segresnet", 1, 5, ddp_worker.ROI, init_filters=8, blocks_down=[1, 1], blocks_up=[1]).state_dict()


NET = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]",
       "--arch-param", "blocks_up=[1]", "--roi", "16", "16", "16", "--spacing", "6", "6", "8"]


def _train_args(data: Path, out: Path, epochs: int) -> list:
    # The lwi strategy: Step 1 and Step 2 both run under DDP (the Step-1 model's own attributes too).
    return ["train", "--data", str(data), "--out", str(out), "--strategy", "lwi", *NET, "--pretrain-epochs", "2",
            "--epochs", str(epochs), "--batch-size", "1", "--iterations-per-epoch", "2", "--checkpoint-every", "1",
            "--val-fraction", "0", "--device", "cpu", "--progress", "json"]


def test_killed_run_resumes_from_its_checkpoint_and_only_rank0_writes(data, tmp_path):
    out = tmp_path / "models" / "m.lwi.safetensors"
    last = out.with_name("m.last.lwi.safetensors")
    audit = tmp_path / "audit"
    audit.mkdir()
    proc = _torchrun(str(WORKER), "lwi", str(audit), *_train_args(data, out, 400), start_new_session=True)
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)  # a cluster's time limit: torchrun and both ranks
    proc.communicate(timeout=60)
    stopped_at = checkpoint.read_metadata(last)["training"]["iteration"]
    assert 0 < stopped_at < 802

    # Only rank 0 wrote anything under the output folder.
    for rank in (0, 1):
        events = json.loads((audit / f"rank{rank}.json").read_text())
        written = [e for e in events if e[1].startswith(str(out.parent))]
        assert bool(written) == (rank == 0), (rank, written[:5])

    # Resume with one process (another world size) and a short plan: it continues from the checkpoint.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [sys.executable, "-m", "lwi", *_train_args(data, out, 1 + stopped_at // 2), "--resume"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert any(f"at iteration {stopped_at} of" in e.get("message", "") for e in events if e["event"] == "log")
    first = next(e for e in events if e["event"] == "progress" and e.get("stage") == "finetune")
    assert first["iteration"] > stopped_at
    training = checkpoint.read_metadata(last)["training"]
    assert training["complete"] and training["iteration"] == training["total_iterations"] > stopped_at
    assert out.exists() and out.with_name("m.step1.lwi.safetensors").exists()
