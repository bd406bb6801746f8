"""Polling for a condition in async tests: bounded, and failing loudly when time runs out
(a loop that just stops waiting would let the next assertion fail for the wrong reason)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
                what: str = "condition") -> None:
    """Return as soon as ``cond()`` is true; AssertionError after ``timeout`` seconds."""
    for _ in range(max(1, int(timeout / interval))):
        if cond():
            return
        await asyncio.sleep(interval)
    if cond():
        return
    raise AssertionError(f"{what} not reached within {timeout}s")
