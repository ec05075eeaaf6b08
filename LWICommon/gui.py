"""Show a running :class:`LWICommon.process.ProcessRunner` in a module panel (needs Qt).

While a run is going, the Apply button reads "Cancel" and cancels it; a ``qt.QTimer`` polls the
runner, so the GUI stays responsive; progress events move the progress bar and the status text,
log events go to the log; the end of the run gives one clear message. Qt is imported in
:meth:`TaskPanel.__init__`, so importing this module needs nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional

from LWICommon.process import Event, ProcessRunner, event_log_line, progress_fraction, progress_text

#: The dynamic property that binds a widget of a module's .ui file to a parameter node field.
PARAMETER_PROPERTY = "SlicerParameterName"


def parameterWidgets(ui: Any) -> Dict[str, Any]:
    """``{parameter name: widget}`` for the widgets of ``ui`` (``slicer.util.childWidgetVariables``)
    that carry the :data:`PARAMETER_PROPERTY` property in the .ui file."""
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_PROPERTY) if hasattr(widget, "property") else None
        if name:
            mapping[str(name)] = widget
    return mapping


def connectParameterNodeToGui(parameterNode: Any, ui: Any) -> Any:
    """Bind ``parameterNode`` (a ``parameterNodeWrapper``) to the widgets of ``ui``; returns the tag
    for ``parameterNode.disconnectGui``.

    Not ``parameterNode.connectGui(ui)``: before Slicer 5.10 it returns None (fixed by Slicer commit
    b5a65a49a0), so ``disconnectGui`` cannot remove the connection, and on the next connect every
    stale connection writes the refilled combo boxes' transient choices (last, then first) into the
    parameters. ``connectParametersToGui`` returns the tag in every version since 5.6.
    """
    return parameterNode.connectParametersToGui(parameterWidgets(ui))


def isUnsetPath(path: Any) -> bool:
    """Whether a ``pathlib.Path`` parameter was never set: its parameter-node default is
    ``Path()``, i.e. ``"."``, which widgets would show as Slicer's working directory."""
    return str(path or "").strip() in ("", ".")


def reloadPackage(name: str) -> List[str]:
    """Execute the package ``name`` and its loaded submodules again from their files (Slicer's
    Reload re-reads only the module file). Each module is executed again by its own loader in its
    own dict, as ``importlib.reload`` does, so state a module keeps across reloads
    (``_worker = globals().get("_worker")``) survives; but ``importlib.reload`` would look the module
    up again, which fails for a package loaded from its location (a source checkout's LWICommon).
    Only the files of the package's folder are executed: ``LWICommon.vocabulary`` imports the
    core's own files as ``LWICommon._core.*``, which are not. Two rounds, so a submodule that imported names
    from another one gets the new ones whatever the order. Returns the reloaded module names."""
    import sys

    package = sys.modules.get(name)
    if package is None:
        return []
    folder = os.path.dirname(os.path.abspath(package.__file__)) + os.sep

    def inPackage(moduleName: str) -> bool:
        module = sys.modules.get(moduleName)
        origin = getattr(module, "__file__", None)
        return bool(origin) and os.path.abspath(origin).startswith(folder)

    names = sorted(m for m in list(sys.modules) if (m == name or m.startswith(name + ".")) and inPackage(m))
    for _round in range(2):
        for moduleName in names:
            module = sys.modules[moduleName]
            module.__spec__.loader.exec_module(module)
    return names


class TaskPanel:
    """Binds one run at a time to an Apply/Cancel button, a progress bar, a status label and a log.

    Args:
        applyButton: a QPushButton; its text and tooltip switch to Cancel while running.
        progressBar: a QProgressBar (0-100), hidden when idle.
        statusLabel: a QLabel for the one-line status.
        logWidget: a QPlainTextEdit (or anything with ``appendPlainText``), or None.
        intervalMsec: how often the runner is polled.
    """

    def __init__(self, applyButton, progressBar, statusLabel, logWidget=None, intervalMsec: int = 200):
        from LWICommon.jobs import makeTicker

        self.applyButton = applyButton
        self.progressBar = progressBar
        self.statusLabel = statusLabel
        self.logWidget = logWidget
        self.runner: Optional[ProcessRunner] = None
        self._idleText = applyButton.text
        self._idleToolTip = applyButton.toolTip
        self._onDone: Optional[Callable[[ProcessRunner], None]] = None
        self._runnerOnEvent: Optional[Callable[[Event], None]] = None
        self._runnerOnFinished: Optional[Callable[[ProcessRunner], None]] = None
        self._ticker = makeTicker(intervalMsec)  # Slicer's timer
        self.progressBar.setVisible(False)

    @property
    def running(self) -> bool:
        return self.runner is not None and self.runner.running

    def log(self, text: str) -> None:
        """Add a line to the log widget and to Slicer's application log."""
        logging.info(text)
        if self.logWidget is not None:
            self.logWidget.appendPlainText(text)

    def start(self, runner: ProcessRunner, onDone: Optional[Callable[[ProcessRunner], None]] = None) -> None:
        """Start ``runner`` (not yet started) and follow it; ``onDone(runner)`` is called at the end,
        before the run's temporary folder is removed, whatever the outcome."""
        if self.running:
            raise RuntimeError("A run is already in progress.")
        self.runner = runner
        self._onDone = onDone
        # Keep the runner's own callbacks (the logic imports results in on_finished) and call them first.
        self._runnerOnEvent, self._runnerOnFinished = runner.on_event, runner.on_finished
        runner.on_event = self._onEvent
        runner.on_finished = self._onFinished
        self._idleText = self.applyButton.text
        self._idleToolTip = self.applyButton.toolTip
        self.applyButton.text = "Cancel"
        self.applyButton.toolTip = "Stop the run and discard its results."
        self.applyButton.enabled = True
        self.progressBar.setValue(0)
        self.progressBar.setVisible(True)
        self.statusLabel.text = "Starting..."
        runner.start()
        self._ticker.start(self._poll)

    def cancel(self, wait: bool = False) -> None:
        """End the run's whole process tree and remove its temporary folder.

        By default this only sends the request (the GUI never waits on it): the timer's polls
        finish the run, killing it after its grace period. ``wait=True`` blocks until it is over
        (a module being closed, whose timer stops).
        """
        if self.runner is not None and self.running:
            self.statusLabel.text = "Cancelling..."
            self.runner.cancel(wait=wait)
            if wait:
                self._poll()

    def _poll(self) -> None:
        if self.runner is not None:
            self.runner.poll()

    def _onEvent(self, event: Event) -> None:
        if self._runnerOnEvent is not None:
            self._runnerOnEvent(event)
        if event.get("event") == "progress":
            fraction = progress_fraction(event)
            if fraction is not None:
                self.progressBar.setValue(int(round(100 * fraction)))
            self.statusLabel.text = progress_text(event)
        line = event_log_line(event)
        if line:
            self.log(line)

    def _onFinished(self, runner: ProcessRunner) -> None:
        self._ticker.stop()
        resultError = None
        if self._runnerOnFinished is not None:
            try:
                self._runnerOnFinished(runner)
            except Exception as exc:  # shown to the user below, with the traceback in the log
                logging.exception("Loading the results failed")
                resultError = f"The results could not be loaded: {exc}"
        self.applyButton.text = self._idleText
        self.applyButton.toolTip = self._idleToolTip
        self.progressBar.setVisible(False)
        message = runner.error_message() or resultError
        self.statusLabel.text = message.splitlines()[0] if message else "Done."
        if message and not runner.cancelled:
            self.log(message)
            import slicer

            slicer.util.errorDisplay(message)
        if self._onDone is not None:
            self._onDone(runner)
