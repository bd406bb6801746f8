"""Stopping a component's background task: one way, so every ``stop()`` waits the same.

A service's loop runs as an ``asyncio.Task``; stopping it means cancelling it and waiting
until it has unwound (its ``finally`` blocks closed what they opened), without the
cancellation escaping into the caller's own ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, quiet: bool = False) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has finished. ``quiet``: an
    error the task had already ended with is swallowed too, for a ``stop()`` that must go on
    closing its other parts (the edge's)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException if quiet else asyncio.CancelledError):
        await task
