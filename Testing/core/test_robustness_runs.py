"""Faults once work has started (issue 13): a training run that fails mid-way, Ctrl-C/SIGTERM during
training and the resume after it, the umask of every output, and the segmentation worker (malformed
requests, a worker killed mid-job). Real ``python -m lwi`` subprocesses on tiny phantoms."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hostile import CATCH_ALL, REPO, assert_refused, file_state, last_line, lwi, snapshot, write

from lwi import checkpoint
from lwi.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset

NET = ["--arch", "segresnet", "--init-filters", "8", "--arch-param", "blocks_down=[1,1]",
       "--arch-param", "blocks_up=[1]", "--roi", "16", "16", "16", "--device", "cpu"]
SHAPE = (24, 24, 16)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "LWISegmentation")]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms", 2, shape=SHAPE)


@pytest.fixture(scope="module")
def model(tmp_path_factory, make_bundle) -> Path:
    return make_bundle(tmp_path_factory.mktemp("model") / "m.lwi.safetensors", PHANTOM_LABELS)


# -- 1: an error after work has started is the last line, after the progress bar -----------------------
def test_a_run_failing_mid_way_ends_with_its_sentence_after_the_closed_bar(data, tmp_path):
    out = tmp_path / "models" / "m.lwi.safetensors"
    before = snapshot(data, tmp_path)
    # An absurd learning rate: the first step makes the weights infinite, the loss NaN.
    proc = lwi("train", "--strategy", "scratch", "--data", data, "--out", out, *NET, "--epochs", "3",
               "--lr", "1e30", "--val-fraction", "0")
    assert "%|" in proc.stderr  # the bar was on screen when the run failed
    # What the failed run wrote is removed, except a resumable checkpoint written before the failure
    # (whether one exists depends on where the loss first became NaN); that one the sentence names.
    resumable = out.with_name("m.last.lwi.safetensors")
    if resumable.exists():
        line = last_line(proc.stderr)
        assert str(resumable) in line and "--resume" in line, line
        before = {**before, str(resumable.parent): "dir", str(resumable): file_state(resumable)}
    assert_refused(proc, before, [data, tmp_path], ("not a finite number",))


# -- 8: SIGTERM acknowledged at once, stop at the next iteration, resume from there ---------------------
def test_sigterm_is_acknowledged_at_once_and_resume_continues_from_the_checkpoint(data, tmp_path):
    out = tmp_path / "step1.safetensors"
    args = [sys.executable, "-m", "lwi", "pretrain", "--data", str(data), "--out", str(out), *NET,
            "--epochs", "2000", "--checkpoint-every", "1000", "--progress", "json"]
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w", encoding="utf-8") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, encoding="utf-8", env=ENV)
        for line in proc.stdout:  # wait until training runs
            event = json.loads(line)
            if event["event"] == "progress" and event.get("stage") == "pretrain" and event.get("iteration", 0) >= 2:
                break
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        acknowledged = None
        while proc.poll() is None and time.monotonic() - sent < 60:
            if acknowledged is None and "stopping after this iteration" in err_path.read_text(encoding="utf-8", errors="replace"):
                acknowledged = time.monotonic() - sent
            time.sleep(0.05)
        proc.stdout.read()
        proc.wait(timeout=60)
        ended = time.monotonic() - sent
    stderr = err_path.read_text(encoding="utf-8")
    assert acknowledged is not None and acknowledged < 5, stderr[-2000:]
    assert ended < 30, stderr[-2000:]
    assert proc.returncode == 130
    line = last_line(stderr)
    assert "Traceback" not in stderr and CATCH_ALL not in stderr
    assert line.startswith("lwi pretrain: error: Interrupted.") and "--resume" in line and str(out) in line, line
    stopped_at = checkpoint.read_metadata(out)["training"]["iteration"]
    assert stopped_at >= 2  # the checkpoint holds the iteration the stop came after

    # The resume guarantee: the same command with --resume goes on from that iteration (here, a shorter plan).
    resumed = lwi("pretrain", "--data", data, "--out", out, *NET, "--epochs", str(stopped_at + 2), "--resume",
                  "--progress", "json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = [json.loads(x) for x in resumed.stdout.splitlines()]
    assert any(f"at iteration {stopped_at} of" in e.get("message", "") for e in events if e["event"] == "log")
    iterations = [e["iteration"] for e in events if e["event"] == "progress" and "iteration" in e]
    assert iterations and min(iterations) > stopped_at
    assert checkpoint.read_metadata(out)["training"]["complete"]


# -- 9: outputs follow the umask ------------------------------------------------------------------------
@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_every_output_follows_the_umask(model, tmp_path):
    image, _ = make_phantom(3, shape=SHAPE)
    source = write(image, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lwi", *map(str, args)], capture_output=True, text=True,
                              encoding="utf-8", env=ENV, preexec_fn=lambda: os.umask(0o027), timeout=300)

    seg = run("segment", "--model", model, "--input", source, "--output", out / "seg.seg.nrrd", "--device", "cpu",
              "--probabilities", out / "p.nii.gz", "--color-table", out / "labels.ctbl")
    assert seg.returncode == 0, seg.stderr[-2000:]
    views = run("preview", "--input", source, "--out-dir", out / "views", "--roi", "16", "16", "16", "--arch", "segresnet")
    assert views.returncode == 0, views.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 6
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes


# -- the worker of the Slicer module ----------------------------------------------------------------------
def _worker_exchange(lines, timeout: float = 120):
    proc = subprocess.run([sys.executable, "-m", "lwi.worker"], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, encoding="utf-8", env=ENV, timeout=timeout)
    return proc, [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]


def test_malformed_worker_requests_are_refused_one_by_one_and_the_worker_keeps_serving(model, tmp_path):
    image, _ = make_phantom(3, shape=SHAPE)
    source = write(image, tmp_path / "ct.nii.gz")
    before = snapshot(tmp_path)
    good = {"command": "segment", "model": str(model), "input": str(source), "output": str(tmp_path / "o.nrrd")}
    requests = [
        "this is not JSON",
        "[1, 2, 3]",
        json.dumps({"id": 1, "command": "segment"}),
        json.dumps({**good, "id": 2, "options": "fast"}),
        json.dumps({**good, "id": 3, "model": 5}),
        json.dumps({**good, "id": 4, "options": {"sw_batch_size": 0}}),
        json.dumps({**good, "id": 5, "options": {"overlap": "half"}}),
        json.dumps({**good, "id": 6, "options": {"roi_size": [16, 16]}}),
        json.dumps({**good, "id": 7, "input": str(tmp_path / "missing.nii.gz")}),
        json.dumps({"id": 8, "command": "dance"}),
        json.dumps({"id": 9, "command": "ping"}),
        json.dumps({"id": 10, "command": "shutdown"}),
    ]
    proc, events = _worker_exchange(requests)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 10, events
    for e in errors:
        message = e["message"]
        assert CATCH_ALL not in message and message.rstrip().endswith("."), message
    by_id = {e.get("id"): e["message"] for e in errors}
    assert "model" in by_id[1] and "options" in by_id[2] and "model" in by_id[3]
    assert "sw_batch_size" in by_id[4] and "overlap" in by_id[5] and "roi_size" in by_id[6]
    assert "missing.nii.gz" in by_id[7] and "dance" in by_id[8]
    assert any(e["event"] == "result" and e.get("command") == "ping" for e in events)  # still serving
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


def test_a_worker_killed_mid_job_fails_that_job_clearly_and_the_next_one_starts_a_new_worker(model, tmp_path):
    from LWISegmentationLib.worker import WorkerClient

    image, _ = make_phantom(4, shape=(80, 80, 48), spacing=(1.5, 1.5, 2.0))  # long enough to be killed while running
    source = write(image, tmp_path / "ct.nii.gz")
    out = tmp_path / "out" / "seg.nrrd"
    out.parent.mkdir()
    before = snapshot(tmp_path)
    client = WorkerClient(python=sys.executable, env=ENV)
    try:
        killed = []

        def on_event(event):
            if event.get("event") == "progress" and not killed:
                killed.append(client.pid)
                os.kill(client.pid, signal.SIGKILL)

        job = client.segment(str(model), str(source), str(out), device="cpu", on_event=on_event)
        assert job.wait(timeout=240) not in (0, None)
        assert killed, "the job ended before any progress"
        message = job.error_message()
        assert message and CATCH_ALL not in message
        first = message.splitlines()[0]
        assert "stopped unexpectedly" in first and "SIGKILL" in first and first.endswith("."), message
        assert snapshot(tmp_path) == before  # no output, no temporary file, input unchanged
        assert client.request("ping", timeout=120)["command"] == "ping"
        assert client.starts == 2
    finally:
        client.stop()


# -- 7: a volume smaller than the ROI is accepted with a warning, in segment as in training -------------
def test_a_volume_smaller_than_the_roi_is_segmented_with_a_warning(model, tmp_path):
    small = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 100, (6, 8, 8)).astype(np.float32))
    small.SetSpacing((4.0, 4.0, 4.0))
    source = write(small, tmp_path / "small.nii.gz")
    proc = lwi("segment", "--model", model, "--input", source, "--output", tmp_path / "s.nrrd", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "smaller than the ROI" in proc.stderr and "padded" in proc.stderr
    assert sitk.ReadImage(str(tmp_path / "s.nrrd")).GetSize() == small.GetSize()


# -- 10: a lock whose process is gone is taken over; a live one is not -----------------------------------
def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    from lwi.errors import LWIError
    from lwi.outputs import Lock, lock_path

    out = tmp_path / "m.lwi.safetensors"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, encoding="utf-8")
    dead_pid = int(gone.stdout)
    lock_path(out).write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname(), "command": "lwi train"}))
    with Lock(out) as lock:  # the dead run's lock is replaced by ours
        assert json.loads(lock.path.read_text(encoding="utf-8"))["pid"] == os.getpid()
        with pytest.raises(LWIError, match=f"process {os.getpid()} on"):
            Lock(out).acquire()  # while we hold it, another run is refused
    assert not lock_path(out).exists()
