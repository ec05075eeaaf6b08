"""Qt stand-ins shared by the tests that drive the modules' panels without Qt (not a test module)."""

from __future__ import annotations

from typing import List


class Timer:
    """qt.QTimer: records its callback; a test fires the active ones as Slicer's event loop would.
    Every instance is listed in :attr:`timers` (a test resets it first)."""

    timers: List[Timer] = []

    def __init__(self):
        self.active, self.callback = False, None
        Timer.timers.append(self)

    def setInterval(self, msec):
        pass

    def connect(self, signal, callback):
        self.callback = callback

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active
