"""Distributed training on the CPU with gloo and 2 real torchrun processes, validation on (the
default: held-out cases exist): DDP gives the weights of one process with the doubled batch and the
validation scores of one process; every strategy trains; the commands of docs/distributed.md and the
README run as written (other than the data, the device and the size); a killed run resumes under
torchrun; only rank 0 writes; a failing rank ends the run with one sentence; stray torchrun
variables are refused at once."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import ddp_worker  # Testing/core, beside this file
import pytest
import torch

from lwi import checkpoint, distributed
from lwi.data.phantoms import PHANTOM_LABELS, write_phantom_dataset
from lwi.engine import model_tensors

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(ddp_worker.__file__)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# The network and budget every torchrun run here adds: a SegResNet of a few thousand weights.
TINY = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]", "--arch-param",
        "blocks_up=[1]", "--roi", "16", "16", "16", "--spacing", "6", "6", "8", "--batch-size", "1",
        "--iterations-per-epoch", "1", "--device", "cpu", "--progress", "json"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(WORKER.parent)]), "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            cwd=str(REPO), **kwargs)


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _events(stdout: str) -> list:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 5 cases: lwi train holds out 2 (--val-fraction 0.4), one per rank; the trainer test holds out 3.
    return write_phantom_dataset(tmp_path_factory.mktemp("ddp") / "phantoms", 5, seed=0, shape=(24, 24, 16))


def test_two_ranks_give_the_weights_and_validation_of_one_process_with_the_doubled_batch(data, tmp_path):
    iterations = 4
    ddp_out = tmp_path / "ddp.safetensors"
    _finish(_torchrun(str(WORKER), "trainer", str(data), str(ddp_out), str(iterations)))

    # The explicit single-process equivalent: each batch = rank 0's crop then rank 1's crop, drawn
    # from generators seeded as the two ranks' are (the trainer's own one is rank 0's). It validates
    # at the same iterations, on all held-out cases.
    second = torch.Generator()
    second.manual_seed(distributed.rank_seed(ddp_worker.SEED, 1))

    def both_crops(cache, generator):
        a, b = ddp_worker.one_crop(cache, generator), ddp_worker.one_crop(cache, second)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    single = ddp_worker.tiny_training(data, both_crops, tmp_path / "single.safetensors", iterations)
    ddp = model_tensors(checkpoint.load(ddp_out)[0])
    start = ddp_worker.tiny_model().state_dict()
    moved = 0.0
    for key, value in single.model.state_dict().items():
        # Float32 sums in another order (all-reduce vs one batch): agreement to 1e-5 of the weights'
        # scale after 4 AdamW steps of lr 1e-2, while the steps themselves moved them by ~1e-2.
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
        moved = max(moved, float((value - start[key]).abs().max()))
    assert moved > 1e-3  # the runs did train: the comparison is not of two untouched networks
    meta = checkpoint.read_metadata(ddp_out)["training"]
    assert meta["world_size"] == 2 and meta["iteration"] == iterations

    # The 3 held-out cases were scored 2 on rank 0 and 1 on rank 1 and gathered: the DDP run's last
    # validation equals one process scoring all of them with the DDP run's final weights.
    model = ddp_worker.tiny_model()
    model.load_state_dict(ddp)
    from lwi.data.cache import CaseCache
    from lwi.data.dataset import load_dataset

    held = CaseCache(load_dataset(data).cases[2:], ddp_worker.PREPROCESSING)
    alone = ddp_worker.validator([held.full_case(i) for i in range(len(held))])(model)
    assert meta["last_validation"]["dice"] == alone["dice"]
    assert meta["last_validation"]["iteration"] == iterations and single.last_validation is not None


@pytest.mark.parametrize("strategy", ["lwi", "scratch", "medcontext", "anatomask"])
def test_every_strategy_trains_and_validates_under_torchrun_and_only_rank0_writes(strategy, data, tmp_path):
    out = tmp_path / "models" / "m.lwi.safetensors"
    audit = tmp_path / "audit"
    audit.mkdir()
    stdout = _finish(_torchrun(
        str(WORKER), "lwi", str(audit), "train", "--data", str(data), "--out", str(out), "--strategy", strategy,
        *TINY, "--pretrain-epochs", "1", "--epochs", "2", "--val-fraction", "0.4",
    ))
    events = _events(stdout)  # rank 0's lines only: the other rank reports nothing
    assert any(e["event"] == "log" and "Validating on" not in e.get("message", "") for e in events)
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 1 and results[0]["strategy"] == strategy
    dice = results[0]["validation_dice"]
    assert set(dice) == {"liver", "spleen", "kidney", "vertebra"}, dice
    assert any(e.get("mean_dice") is not None for e in events if e["event"] == "progress")
    assert checkpoint.read_metadata(out)["provenance"]["validation_dice"] == dice
    for rank in (0, 1):
        written = [e for e in json.loads((audit / f"rank{rank}.json").read_text(encoding="utf-8")) if e[1].startswith(str(out.parent))]
        assert bool(written) == (rank == 0), (rank, written[:5])


def _documented_commands() -> list:
    """The single-machine torchrun commands of the README and docs/distributed.md, as argument lists."""
    commands = []
    for doc in (REPO / "README.md", REPO / "docs" / "distributed.md"):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split("#")[0].strip()
                if line.startswith("torchrun ") and "--nnodes" not in line:
                    commands.append(shlex.split(line))
    assert commands, "no torchrun command in the README or docs/distributed.md"
    return commands


def _as_here(command: list, data: Path, out: Path) -> list:
    """``command`` on the test data and output, 2 processes, the CPU and the tiny network."""
    args = list(command[1:])
    for option, value in (("--data", str(data)), ("--out", str(out)), ("--nproc-per-node", "2")):
        assert option in args, (option, command)
        args[args.index(option) + 1] = value
    assert args[:1] == ["--standalone"], command  # one machine: torchrun picks a free port
    return [sys.executable, "-m", "torch.distributed.run", *args, *TINY]


def test_documented_commands_train_stop_and_resume_under_torchrun(data, tmp_path):
    commands = _documented_commands()
    fresh = {tuple(_as_here(c, data, tmp_path / "m.lwi.safetensors")) for c in commands if "--resume" not in c}
    resumed = {tuple(_as_here(c, data, tmp_path / "m.lwi.safetensors")) for c in commands if "--resume" in c}
    assert len(fresh) == 1 and len(resumed) == 1, commands  # the README's and the docs' commands agree
    out = tmp_path / "m.lwi.safetensors"
    last = out.with_name("m.last.lwi.safetensors")
    # The documented data (Task03_Liver, 131 cases) is validated by default; these 5 cases only on request.
    budget = ["--epochs", "12", "--checkpoint-every", "1", "--val-every", "4", "--val-fraction", "0.4"]
    proc = subprocess.Popen([*next(iter(fresh)), *budget], env=_env(), cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", start_new_session=True)
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)  # a cluster's time limit: torchrun and both ranks
    _, err = proc.communicate(timeout=60)
    stopped_at = checkpoint.read_metadata(last)["training"]["iteration"]
    total = checkpoint.read_metadata(last)["training"]["total_iterations"]
    assert 0 < stopped_at < total
    assert "Unexpected error" not in err and not out.exists()

    stdout = _finish(subprocess.Popen([*next(iter(resumed)), *budget], env=_env(), cwd=str(REPO),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"))
    events = _events(stdout)
    assert any(f"at iteration {stopped_at} of" in e.get("message", "") for e in events if e["event"] == "log")
    first = next(e for e in events if e["event"] == "progress" and "iteration" in e and "mean_dice" not in e)
    assert first["iteration"] > stopped_at
    training = checkpoint.read_metadata(last)["training"]
    assert training["complete"] and training["iteration"] == training["total_iterations"] == total
    assert training["world_size"] == 2 and training["best"] is not None and out.exists()


def test_a_failing_rank_ends_the_run_with_one_sentence_naming_it(data, tmp_path):
    # Rank 1 runs out of memory in its third optimiser step (raised where PyTorch would raise it).
    started = time.monotonic()
    proc = _torchrun(str(WORKER), "fail", "1", "3", "train", "--data", str(data), "--out",
                     str(tmp_path / "m.lwi.safetensors"), *TINY, "--strategy", "scratch", "--epochs", "50")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert time.monotonic() - started < 90  # not the group's hour-long timeout
    # (rank 0's progress bar may still hold the terminal line: the sentence is found anywhere on it)
    ours = re.findall(r"lwi train: error:.*", err)
    assert ours == ["lwi train: error: Rank 1 of 2 failed: The computer ran out of memory; use a smaller --roi "
                    "or batch, or a coarser grid."], err[-3000:]
    errors = [e for e in _events(out) if e["event"] == "error"]
    assert len(errors) == 1 and errors[0]["message"].startswith("Rank 1 of 2 failed")


def _lwi(args: list, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in _env().items() if k not in distributed.LAUNCH_VARIABLES and not k.startswith("TORCHELASTIC")}
    return subprocess.run([sys.executable, "-m", "lwi", *args], env={**clean, **env}, capture_output=True, text=True, encoding="utf-8",
                          timeout=timeout, cwd=str(REPO))


LAUNCHED = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}


@pytest.mark.parametrize("env, says", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT are not"),
    ({**LAUNCHED, "MASTER_PORT": "29999"}, "WORLD_SIZE=2 is set but lwi was not started by torchrun"),
    ({**LAUNCHED, "WORLD_SIZE": "two"}, "WORLD_SIZE='two' in the environment is not a number"),
])
def test_stray_torchrun_variables_are_refused_at_once(env, says, data, tmp_path):
    started = time.monotonic()
    result = _lwi(["train", "--data", str(data), "--out", str(tmp_path / "m.lwi.safetensors"), "--device", "cpu"], env)
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert result.stderr.strip().splitlines() == [f"lwi train: error: {result.stderr.split('error: ', 1)[1].strip()}"]
    assert says in result.stderr, result.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no folder left


def test_variables_of_a_torchrun_that_is_gone_end_quickly_and_obey_sigterm(data, tmp_path):
    # torchrun's variables inherited from a launcher that no longer runs: nobody listens at the port.
    env = {**_env(), **LAUNCHED, "MASTER_PORT": "29998", "TORCHELASTIC_RUN_ID": "gone",
           "TORCHELASTIC_USE_AGENT_STORE": "True"}
    proc = subprocess.Popen([sys.executable, "-m", "lwi", "train", "--data", str(data), "--out",
                             str(tmp_path / "m.lwi.safetensors"), "--device", "cpu"], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    time.sleep(8)  # imported and waiting for the store
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert time.monotonic() - sent < 5 and proc.returncode != 0
    assert not list(tmp_path.iterdir())
    # Not stopped: a sentence after the store's short timeout (not the group's hour).
    started = time.monotonic()
    result = _lwi(["train", "--data", str(data), "--out", str(tmp_path / "m.lwi.safetensors"), "--device", "cpu"],
                  {k: v for k, v in env.items() if k in LAUNCHED or k.startswith(("MASTER", "TORCHELASTIC"))}, timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 90
    assert "could not join the other training processes at 127.0.0.1:29998" in result.stderr, result.stderr


@pytest.mark.parametrize("command", ["segment", "evaluate", "preview"])
def test_one_process_commands_under_torchrun_run_on_rank0_alone_and_say_so(command, make_bundle, data, tmp_path):
    """N processes of a one-process command would do the same work and write the same files."""
    model = make_bundle(tmp_path / "tiny.lwi.safetensors", PHANTOM_LABELS)
    image = next((data / "imagesTr").iterdir())
    launched = {**LAUNCHED, "MASTER_PORT": "29999", "TORCHELASTIC_RUN_ID": "x", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    for rank in ("1", "0"):
        output = tmp_path / f"out{rank}"
        args = {
            "segment": ["--model", str(model), "--input", str(image), "--output", f"{output}.nrrd", "--device", "cpu"],
            "evaluate": ["--model", str(model), "--data", str(data), "--json", f"{output}.json", "--device", "cpu"],
            "preview": ["--input", str(image), "--out-dir", str(output)],
        }[command]
        result = _lwi([command, *args], {**launched, "RANK": rank, "LOCAL_RANK": rank})
        assert result.returncode == 0, result.stderr
        written = [p for p in tmp_path.iterdir() if p.name.startswith(output.name)]
        assert bool(written) == (rank == "0"), (rank, written)
        assert ("runs in one process" in result.stderr) == (rank == "0"), result.stderr
