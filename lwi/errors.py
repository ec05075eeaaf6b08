"""User-facing errors. The CLI prints their message as one sentence, without a traceback."""

from __future__ import annotations

from typing import Iterable


class LWIError(Exception):
    """An error the user can act on; its message is one clear sentence."""


class DatasetError(LWIError):
    """Problems found in a dataset folder, one line per case, all reported at once."""

    def __init__(self, problems: Iterable[str], header: str = "The dataset has problems"):
        self.problems = list(problems)
        lines = [f"{header} ({len(self.problems)}); nothing was written:"]
        lines += [f"  - {p.rstrip('.')}." for p in self.problems]  # each problem one sentence
        super().__init__("\n".join(lines))


class NotResumable(LWIError):
    """A checkpoint that is readable but cannot be resumed from (damaged or foreign training state, another
    network or stage): a failed run keeps it as it was and does not advise ``--resume`` from it."""

    def __init__(self, path: object, message: str):
        self.path = path
        super().__init__(message)
