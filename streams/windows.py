"""Event-time arithmetic: tumbling windows aligned to the epoch, in microseconds."""

from __future__ import annotations

from math import gcd

US = 1_000_000


def to_us(seconds: float) -> int:
    return round(seconds * US)


def pane_size(windows_us: list[int]) -> int:
    """The largest pane every window is a whole multiple of (windows merge panes)."""
    g = 0
    for w in windows_us:
        g = gcd(g, w)
    return g


def start_of(ts: int, size: int) -> int:
    return ts - ts % size
