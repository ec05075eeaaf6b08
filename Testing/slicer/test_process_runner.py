"""The background process runner of the Slicer modules (LWICommon.process), against real subprocesses."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
from qt_stand_ins import Timer

ROOT = Path(__file__).resolve().parents[2]

from LWICommon import cli_args, core_path  # noqa: E402
from LWICommon.process import (  # noqa: E402
    CANCELLED,
    ProcessRunner,
    event_log_line,
    failure_message,
    format_duration,
    model_info,
    parse_line,
    progress_fraction,
    progress_text,
)


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return path


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended: some containers' init never reaps)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_progress_events_arrive_in_order_and_result_is_kept(tmp_path):
    script = _script(
        tmp_path,
        """
        import json, sys
        print("a stray print from a library")
        for i in range(1, 6):
            print(json.dumps({"event": "progress", "stage": "train", "epoch": i, "epochs": 5,
                              "loss": 1.0 / i, "fraction": i / 5, "eta_seconds": 5 - i}), flush=True)
        print(json.dumps({"event": "log", "message": "saved model"}), flush=True)
        print("progress bar noise\\r50%\\r100%", file=sys.stderr)
        print(json.dumps({"event": "result", "model": "m.lwi.safetensors"}), flush=True)
        """,
    )
    seen = []
    runner = ProcessRunner([sys.executable, str(script)], on_event=seen.append).start()
    assert runner.wait(timeout=60) == 0
    progress = [e for e in seen if e["event"] == "progress"]
    assert [e["epoch"] for e in progress] == [1, 2, 3, 4, 5]
    assert [progress_fraction(e) for e in progress] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert seen[0] == {"event": "log", "message": "a stray print from a library"}
    assert runner.result == {"event": "result", "model": "m.lwi.safetensors"}
    assert runner.last_progress["epoch"] == 5
    assert runner.error_message() is None
    assert list(runner.stderr_tail) == ["100%"]  # only the last state of a redrawn tqdm line


def test_poll_does_not_block_while_the_child_works(tmp_path):
    script = _script(
        tmp_path,
        """
        import json, time
        print(json.dumps({"event": "progress", "fraction": 0.5}), flush=True)
        time.sleep(30)
        """,
    )
    runner = ProcessRunner([sys.executable, str(script)]).start()
    try:
        deadline = time.monotonic() + 30
        events = []
        while not events and time.monotonic() < deadline:
            start = time.monotonic()
            events = runner.poll()
            assert time.monotonic() - start < 1.0
            time.sleep(0.05)
        assert events == [{"event": "progress", "fraction": 0.5}]
        assert runner.running
    finally:
        runner.cancel()


def test_cancel_ends_the_child_and_its_children_and_removes_the_temp_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "input.nrrd").write_bytes(b"data")
    pid_file = tmp_path / "grandchild.pid"
    script = _script(
        tmp_path,
        f"""
        import json, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({{"event": "progress", "fraction": 0.1}}), flush=True)
        time.sleep(120)
        """,
    )
    finished = []
    runner = ProcessRunner(
        [sys.executable, str(script)], temp_dir=str(run_dir), on_finished=finished.append
    ).start()
    deadline = time.monotonic() + 30
    while not (runner.poll() or runner.last_progress) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.last_progress is not None
    grandchild = int(pid_file.read_text(encoding="utf-8"))
    child = runner.proc.pid
    assert _alive(grandchild) and _alive(child)

    runner.cancel(grace_seconds=2.0)

    deadline = time.monotonic() + 10
    while (_alive(grandchild) or _alive(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert not _alive(grandchild)
    assert runner.cancelled and runner.returncode == CANCELLED
    assert finished == [runner]
    assert not run_dir.exists()
    assert runner.error_message() == f"{os.path.basename(sys.executable)} was cancelled."


_STUBBORN = """
    import json, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a tree that ignores the polite request
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print(json.dumps({"event": "progress", "fraction": 0.1, "child": child.pid}), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_gui_cancel_returns_at_once_and_polling_kills_a_stubborn_tree_after_the_grace(tmp_path):
    runner = ProcessRunner([sys.executable, str(_script(tmp_path, _STUBBORN))]).start()
    deadline = time.monotonic() + 30
    while runner.last_progress is None and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.05)
    child = runner.last_progress["child"]

    started = time.monotonic()
    runner.cancel(grace_seconds=1.0, wait=False)  # Slicer's main thread: must not wait
    assert time.monotonic() - started < 0.5 and runner.running and _alive(child)
    while not runner.finished and time.monotonic() - started < 20:
        runner.poll()  # the panel's timer
        time.sleep(0.05)
    assert runner.finished and runner.returncode == CANCELLED
    assert time.monotonic() - started >= 1.0  # killed after the grace period, not before
    assert not _alive(runner.proc.pid) and not _alive(child)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_job_cancel_returns_at_once_and_ends_a_worker_that_does_not_stop(tmp_path):
    from LWISegmentationLib.worker import WorkerClient

    worker = _script(
        tmp_path,
        """
        import json, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        request = json.loads(sys.stdin.readline())
        print(json.dumps({"event": "progress", "id": request["id"], "fraction": 0.2}), flush=True)
        time.sleep(120)  # long preprocessing: the cancel request is never read
        """,
    )
    client = WorkerClient(sys.executable)
    client.args = [sys.executable, str(worker)]
    job = client.segment("model.lwi.safetensors", "in.nrrd", "out.nrrd")
    deadline = time.monotonic() + 30
    while job.last_progress is None and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.last_progress is not None

    started = time.monotonic()
    job.cancel(grace_seconds=0.5, wait=False)
    assert time.monotonic() - started < 0.5 and job.running and client.alive
    while not job.finished and time.monotonic() - started < 20:
        job.poll()
        time.sleep(0.05)
    assert job.finished and job.cancelled and job.returncode == CANCELLED
    assert not client.alive  # ended after the grace periods; the next request starts a new worker


def test_crash_is_reported_with_exit_code_and_stderr(tmp_path):
    script = _script(
        tmp_path,
        """
        import json, sys
        print(json.dumps({"event": "progress", "fraction": 0.3}), flush=True)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: CUDA out of memory", file=sys.stderr)
        sys.exit(3)
        """,
    )
    runner = ProcessRunner([sys.executable, str(script)]).start()
    assert runner.wait(timeout=60) == 3
    message = runner.error_message()
    assert "exit code 3" in message
    assert "RuntimeError: CUDA out of memory" in message


def test_error_event_is_the_message_the_user_sees(tmp_path):
    script = _script(
        tmp_path,
        """
        import json, sys
        print("lwi segment: error: The model file is damaged.", file=sys.stderr)
        print(json.dumps({"event": "error", "message": "The model file is damaged."}), flush=True)
        sys.exit(1)
        """,
    )
    runner = ProcessRunner([sys.executable, str(script)]).start()
    runner.wait(timeout=60)
    assert runner.error == {"event": "error", "message": "The model file is damaged."}
    assert runner.error_message() == f"{os.path.basename(sys.executable)} failed: The model file is damaged."


def test_temp_dir_is_kept_until_on_finished_has_imported_the_result(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / "out.txt"
    script = _script(tmp_path, f"open({str(out)!r}, 'w').write('labels')\n")
    imported = []
    runner = ProcessRunner(
        [sys.executable, str(script)],
        temp_dir=str(run_dir),
        on_finished=lambda r: imported.append(out.read_text(encoding="utf-8")),
    ).start()
    runner.wait(timeout=60)
    assert imported == ["labels"]
    assert not run_dir.exists()


def test_real_lwi_command_failure_reaches_the_user_as_one_sentence(tmp_path):
    env = cli_args.subprocess_env(core_path.core_dir(str(ROOT / "LWISegmentation")))
    missing = tmp_path / "nothing.lwi.safetensors"
    with pytest.raises(RuntimeError) as info:
        model_info(str(missing), env=env, python=sys.executable, timeout=120)
    text = str(info.value)
    assert "nothing.lwi.safetensors" in text
    assert "Traceback" not in text and "\n" not in text


def test_parse_line_accepts_protocol_objects_and_wraps_everything_else():
    assert parse_line('{"event": "progress", "fraction": 0.5}\n') == {"event": "progress", "fraction": 0.5}
    assert parse_line("Warning: something") == {"event": "log", "message": "Warning: something"}
    assert parse_line('{"no_event": 1}') == {"event": "log", "message": '{"no_event": 1}'}
    assert parse_line("{broken json") == {"event": "log", "message": "{broken json"}
    assert parse_line("   \n") is None


def test_progress_text_and_log_lines():
    event = {
        "event": "progress",
        "stage": "pretrain",
        "epoch": 3,
        "epochs": 10,
        "loss": 0.41234,
        "loss_order": 1.5,
        "lr": 0.0001,
        "eta_seconds": 130,
    }
    assert progress_text(event) == "pretrain: epoch 3/10, loss 0.412, loss order 1.5, ETA 2 min 10 s"
    assert progress_fraction({"event": "progress", "iteration": 5, "iterations": 20}) == 0.25
    assert progress_fraction({"event": "progress", "fraction": 1.7}) == 1.0
    assert progress_fraction({"event": "progress"}) is None
    assert event_log_line({"event": "progress", "fraction": 0.1}) is None
    assert event_log_line({"event": "error", "message": "No GPU."}) == "Error: No GPU."
    assert json.loads(event_log_line({"event": "result", "dice": 0.9})[len("Done. ") :]) == {"dice": 0.9}


def test_format_duration():
    assert format_duration(None) == ""
    assert format_duration(45.4) == "45 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(2 * 3600 + 7 * 60) == "2 h 07 min"


def test_command_name_of_an_lwi_run():
    assert (
        ProcessRunner([sys.executable, "-m", "lwi", "segment", "--model", "m"]).command_name()
        == "lwi segment"
    )


def test_failure_message_cases():
    assert failure_message(0) is None
    assert failure_message(0, cancelled=True, command="lwi train") == "lwi train was cancelled."
    assert failure_message(-9, command="lwi train").startswith(
        "lwi train stopped unexpectedly (killed by signal SIGKILL)"
    )
    assert failure_message(1, {"event": "error", "message": "Bad data."}, ["x"], command="lwi train") == (
        "lwi train failed: Bad data."
    )


# -- the Qt binding (LWICommon.gui.TaskPanel) with Qt and Slicer stubbed ----------------------------


class _Widget:
    def __init__(self, text=""):
        self.text, self.toolTip, self.enabled, self.visible, self.value, self.lines = (
            text,
            "tip",
            True,
            True,
            0,
            [],
        )

    def setVisible(self, visible):
        self.visible = visible

    def setValue(self, value):
        self.value = value

    def appendPlainText(self, line):
        self.lines.append(line)


@pytest.fixture
def task_panel(monkeypatch):
    import types

    errors = []
    Timer.timers = []

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=Timer))
    slicer_stub = types.SimpleNamespace(util=types.SimpleNamespace(errorDisplay=errors.append))
    monkeypatch.setitem(sys.modules, "slicer", slicer_stub)
    from LWICommon.gui import TaskPanel

    widgets = types.SimpleNamespace(apply=_Widget("Apply"), bar=_Widget(), status=_Widget(), log=_Widget())
    panel = TaskPanel(widgets.apply, widgets.bar, widgets.status, widgets.log)
    return panel, widgets, Timer.timers[0], errors


def _run_timer(timer, runner, seconds=30):
    deadline = time.monotonic() + seconds
    while timer.active and time.monotonic() < deadline:
        timer.callback()
        time.sleep(0.02)


def test_task_panel_turns_apply_into_cancel_and_reports_progress(tmp_path, task_panel):
    panel, w, timer, errors = task_panel
    script = _script(
        tmp_path,
        """
        import json, time
        print(json.dumps({"event": "progress", "stage": "segment", "fraction": 0.5}), flush=True)
        time.sleep(0.5)
        print(json.dumps({"event": "result", "output": "x.nrrd"}), flush=True)
        """,
    )
    order = []
    runner = ProcessRunner([sys.executable, str(script)], on_finished=lambda r: order.append("import"))
    panel.start(runner, onDone=lambda r: order.append("done"))
    assert w.apply.text == "Cancel" and panel.running and w.bar.visible
    while timer.active and w.bar.value == 0:
        timer.callback()
        time.sleep(0.02)
    assert w.bar.value == 50 and w.status.text.startswith("segment")
    _run_timer(timer, runner)
    assert order == ["import", "done"]  # the logic's own callback runs before the widget's
    assert w.apply.text == "Apply" and not w.bar.visible and w.status.text == "Done."
    assert any(line.startswith("Done.") for line in w.log.lines) and errors == []


def test_task_panel_cancel_and_failure_messages(tmp_path, task_panel):
    panel, w, timer, errors = task_panel
    slow = _script(tmp_path, "import time\ntime.sleep(60)\n")
    panel.start(ProcessRunner([sys.executable, str(slow)]))
    panel.cancel()
    _run_timer(timer, panel.runner)
    assert w.apply.text == "Apply" and w.status.text.endswith("was cancelled.") and errors == []

    crash = tmp_path / "crash.py"
    crash.write_text("import sys\nprint('ValueError: bad spacing', file=sys.stderr)\nsys.exit(2)\n")
    panel.start(ProcessRunner([sys.executable, str(crash)]))
    _run_timer(timer, panel.runner)
    assert len(errors) == 1 and "exit code 2" in errors[0] and "bad spacing" in errors[0]
    assert w.status.text.startswith(os.path.basename(sys.executable) + " stopped unexpectedly")
