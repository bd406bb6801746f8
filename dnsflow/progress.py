"""A one-line progress bar on a terminal's stderr that clears itself when done, for the long
steps of a command (a replay, a migration); nothing at all when stderr is not a terminal, so
pipes and logs stay clean."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: IO[str] = sys.stderr,
                 every: float = 0.2) -> None:
        self.label = label
        self.total = total  # in the unit of ``pos``; None: no bar, only the text
        self.pos = 0
        self.stream = stream
        self.enabled = stream.isatty()
        self.every = every
        self.t0 = time.monotonic()
        self._last = 0.0
        self._width = 0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def show(self, text: str, force: bool = False) -> None:
        """Redraw with ``text`` after the bar (at most every ``every`` seconds)."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every):
            return
        self._last = now
        if self.total:
            frac = min(1.0, self.pos / self.total)
            line = f"{self.label} [{'#' * int(frac * 30):<30}] {frac:4.0%} {text}"
        else:
            line = f"{self.label} {text}"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
