"""The segmentation worker (``python -m lwi.worker``) and its client (LWISegmentationLib.worker), against a real
worker subprocess with a tiny model bundle: requests and responses, the model kept loaded between
requests and reloaded when it changes, errors, cancel, shutdown and crashes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lwi.data.phantoms import make_phantom
from lwi.labelmap import read_segment_names
from lwi.names import MODEL_SUFFIX

ROOT = Path(__file__).resolve().parents[2]

from LWICommon.cli_args import subprocess_env  # noqa: E402
from LWICommon.process import CANCELLED  # noqa: E402
from LWISegmentationLib.worker import WorkerClient, segment_request, worker_command  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_bundle):
    root = tmp_path_factory.mktemp("worker")
    models = {
        "a": make_bundle(root / f"a{MODEL_SUFFIX}", {0: "background", 1: "liver", 2: "spleen"}),
        "b": make_bundle(root / f"b{MODEL_SUFFIX}", {0: "background", 1: "left kidney", 2: "right kidney"}, seed=1),
    }
    image, _ = make_phantom(0, shape=(24, 20, 12), spacing=(3.0, 3.5, 5.0))
    oblique, _ = make_phantom(1, shape=(20, 22, 14), spacing=(2.5, 3.0, 4.0))
    c, s = np.cos(0.3), np.sin(0.3)
    oblique.SetDirection((c, 0.0, s, 0.0, -1.0, 0.0, s, 0.0, -c))
    oblique.SetOrigin((12.0, -30.0, 7.5))
    large, _ = make_phantom(2, shape=(64, 64, 48), spacing=(3.0, 3.0, 4.0))
    images = {}
    for name, img in (("plain", image), ("oblique", oblique), ("large", large)):
        images[name] = root / f"{name}.nrrd"
        sitk.WriteImage(img, str(images[name]))
    return {"root": root, "models": models, "images": images}


@pytest.fixture(scope="module")
def client():
    worker = WorkerClient(python=sys.executable, env=subprocess_env(str(ROOT)))
    yield worker
    worker.stop()


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_request_lines_and_command():
    request = segment_request(7, "m.lwi.safetensors", "in.nrrd", "out.seg.nrrd", "cuda", {"largest_component": True})
    assert json.loads(json.dumps(request)) == {
        "id": 7,
        "command": "segment",
        "model": "m.lwi.safetensors",
        "input": "in.nrrd",
        "output": "out.seg.nrrd",
        "device": "cuda",
        "options": {"largest_component": True},
    }
    assert worker_command("/opt/PythonSlicer") == ["/opt/PythonSlicer", "-m", "lwi.worker"]


def test_segments_on_the_input_grid_and_keeps_the_model_loaded(client, files):
    out = files["root"] / "out"
    out.mkdir(exist_ok=True)
    events = []
    first = client.segment(
        str(files["models"]["a"]), str(files["images"]["plain"]), str(out / "plain.seg.nrrd"), "cpu",
        on_event=events.append,
    )
    assert first.wait(120) == 0, first.error_message()
    pid = client.pid
    assert first.result["reused_model"] is False and first.result["load_seconds"] > 0
    assert [e["name"] for e in first.result["labels"]] == ["liver", "spleen"]
    assert any(e["event"] == "progress" and e.get("fraction") == 1.0 for e in events)
    assert events[-1]["event"] == "result" and all(e["id"] == first.id for e in events)
    written = sitk.ReadImage(str(out / "plain.seg.nrrd"))
    _same_grid(written, sitk.ReadImage(str(files["images"]["plain"])))
    assert read_segment_names(out / "plain.seg.nrrd") == {1: "liver", 2: "spleen"}

    # A second volume, another orientation: same process, model not loaded again.
    second = client.segment(
        str(files["models"]["a"]), str(files["images"]["oblique"]), str(out / "oblique.seg.nrrd"), "cpu",
        options={"largest_component": True},
    )
    assert second.wait(120) == 0, second.error_message()
    assert client.pid == pid and client.starts == 1
    assert second.result["reused_model"] is True and second.result["load_seconds"] == 0
    _same_grid(sitk.ReadImage(str(out / "oblique.seg.nrrd")), sitk.ReadImage(str(files["images"]["oblique"])))
    assert client.request("ping")["model"] == os.path.realpath(files["models"]["a"])


def test_a_changed_model_is_reloaded(client, files, tmp_path, make_bundle):
    out = tmp_path / "b.seg.nrrd"
    job = client.segment(str(files["models"]["b"]), str(files["images"]["plain"]), str(out), "cpu")
    assert job.wait(120) == 0, job.error_message()
    assert job.result["reused_model"] is False
    assert read_segment_names(out) == {1: "left kidney", 2: "right kidney"}
    assert client.request("ping")["model"] == os.path.realpath(files["models"]["b"])

    # The same path with new contents (retrained in place) is loaded again too.
    copy = tmp_path / f"copy{MODEL_SUFFIX}"
    shutil.copy(files["models"]["b"], copy)
    assert client.segment(str(copy), str(files["images"]["plain"]), str(out), "cpu").wait(120) == 0
    time.sleep(0.01)
    make_bundle(copy, {0: "background", 1: "pancreas", 2: "stomach"}, seed=3)
    job = client.segment(str(copy), str(files["images"]["plain"]), str(out), "cpu")
    assert job.wait(120) == 0, job.error_message()
    assert job.result["reused_model"] is False
    assert read_segment_names(out) == {1: "pancreas", 2: "stomach"}


def test_errors_are_answered_and_the_worker_keeps_serving(client, files, tmp_path):
    pid = client.start().pid
    missing = client.segment(str(files["models"]["a"]), str(tmp_path / "nope.nrrd"), str(tmp_path / "o.nrrd"), "cpu")
    assert missing.wait(60) == 1
    assert "does not exist" in missing.error_message() and missing.error_message().startswith("lwi segment failed")
    assert not (tmp_path / "o.nrrd").exists()

    no_model = client.segment(str(tmp_path / f"none{MODEL_SUFFIX}"), str(files["images"]["plain"]), str(tmp_path / "o.nrrd"))
    assert no_model.wait(60) == 1 and "model file" in no_model.error_message()

    bad_option = client.segment(
        str(files["models"]["a"]), str(files["images"]["plain"]), str(tmp_path / "o.nrrd"), "cpu", options={"colour": 1}
    )
    assert bad_option.wait(60) == 1 and "colour" in bad_option.error_message()

    with pytest.raises(RuntimeError, match="Unknown command"):
        client.request("explode")
    client.proc.stdin.write(b"this is not json\n")
    client.proc.stdin.flush()
    assert client.request("ping")["protocol"] == 1
    assert any(e.get("event") == "error" and "not a JSON object" in e.get("message", "") for e in client.log)
    assert client.pid == pid


def test_cancel_stops_the_request_but_keeps_the_worker(client, files, tmp_path):
    pid = client.start().pid
    events = []
    job = client.segment(
        str(files["models"]["a"]), str(files["images"]["large"]), str(tmp_path / "large.seg.nrrd"), "cpu",
        options={"sw_batch_size": 1, "overlap": 0.75}, temp_dir=str(tmp_path / "run"), on_event=events.append,
    )
    (tmp_path / "run").mkdir()
    deadline = time.monotonic() + 120
    while not any(e["event"] == "progress" for e in events) and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert not job.finished, "the request should still be running"
    job.cancel()
    assert job.cancelled and job.returncode == CANCELLED
    assert job.error_message() == "lwi segment was cancelled."
    assert job.error is not None and job.error.get("cancelled") is True  # stopped by the worker, not killed
    assert not (tmp_path / "large.seg.nrrd").exists() and not (tmp_path / "run").exists()
    assert client.pid == pid
    again = client.segment(str(files["models"]["a"]), str(files["images"]["plain"]), str(tmp_path / "p.seg.nrrd"), "cpu")
    assert again.wait(60) == 0 and again.result["reused_model"] is True


def test_a_crashed_worker_fails_its_job_and_is_restarted(files, tmp_path):
    worker = WorkerClient(python=sys.executable, env=subprocess_env(str(ROOT)))
    try:
        events = []
        job = worker.segment(
            str(files["models"]["a"]), str(files["images"]["large"]), str(tmp_path / "x.seg.nrrd"), "cpu",
            options={"sw_batch_size": 1, "overlap": 0.75}, on_event=events.append,
        )
        deadline = time.monotonic() + 120
        while not events and time.monotonic() < deadline:
            job.poll()
            time.sleep(0.02)
        worker.proc.kill()
        assert job.wait(30) not in (0, None)
        assert "stopped unexpectedly" in job.error_message()
        job2 = worker.segment(str(files["models"]["a"]), str(files["images"]["plain"]), str(tmp_path / "y.seg.nrrd"), "cpu")
        assert job2.wait(120) == 0, job2.error_message()
        assert worker.starts == 2
        proc = worker.proc
    finally:
        worker.stop()
    assert proc.returncode == 0  # a polite shutdown


def test_the_worker_exits_when_its_client_goes_away(files):
    worker = WorkerClient(python=sys.executable, env=subprocess_env(str(ROOT))).start()
    try:
        assert worker.request("ping")["model"] is None
        worker.proc.stdin.close()  # what happens when Slicer exits
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.stop()
