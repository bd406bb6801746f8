"""What every edge process does around its services (``dnsflow edge``, its extra workers,
``dnsflow tap``): start the bus without requiring Kafka, then run until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from dnsflow.bus import Bus, BusError, bus_for

if TYPE_CHECKING:
    from dnsflow.settings import Settings


async def start_bus(settings: Settings, log: logging.Logger, who: str = "") -> Bus:
    """The bus, started. Kafka being away is a warning, not an exit: the edge answers anyway
    and its events wait in the spool (``who`` prefixes the warning, e.g. ``"worker 2: "``)."""
    bus = bus_for(settings)
    try:
        await bus.start()
    except BusError as exc:
        log.warning("%sKafka unavailable at start (%s): events will be spooled", who, exc)
    return bus


async def until_signalled() -> None:
    """Return at the first SIGTERM or SIGINT, so the caller stops its services in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def stop_each(parts: Iterable[tuple[str, Callable[[], Awaitable[Any]] | None]],
                    log: logging.Logger, who: str) -> None:
    """Stop ``(what, stop)`` parts in order (None: never started). One part failing to stop
    is logged and does not keep the others running."""
    for what, fn in parts:
        if fn is None:
            continue
        try:
            await fn()
        except Exception:
            log.exception("%s: stopping the %s failed", who, what)
