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
