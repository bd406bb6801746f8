"""``dnsflow tail``: live DNS events in the terminal, one line each (``--json``: one object).

Where the events come from: Kafka's ``events`` topic with ``--kafka``; otherwise the
in-process bus of the ``dnsflow up``/``demo`` running on this data directory, through the
live tail of the console it serves (found in ``<home>/console.endpoint``). The filter is the
console's own (:class:`console.tail.TailFilter`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from dnsflow.procs import pid_alive

ENDPOINT_FILE = "console.endpoint"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="only this tenant")
    parser.add_argument("--namespace", help="only this namespace")
    parser.add_argument("--pod", help="only this pod (a trailing * matches a prefix)")
    parser.add_argument("--name", metavar="SUBSTR", help="only names containing SUBSTR")
    parser.add_argument("--decision", help="allow, deny, rewrite, redirect or would_deny")
    parser.add_argument("--json", action="store_true", help="one JSON event per line")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import UsageError, settings_from_args
    from dnsflow.console.tail import FilterError, TailFilter

    settings = settings_from_args(args)
    try:
        flt = TailFilter.from_mapping(vars(args))
    except FilterError as exc:
        raise UsageError(f"dnsflow tail: --{exc}") from None
    if args.seconds is not None and args.seconds <= 0:
        raise UsageError("dnsflow tail: --seconds must be positive")
    if settings.kafka:
        source: Any = _from_kafka(settings, flt)
    else:
        source = _from_console(Path(settings.home), flt)
    try:
        return asyncio.run(_print(source, args.json, args.seconds))
    except BrokenPipeError:  # `| head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


async def _print(source: AsyncIterator[dict[str, Any]], as_json: bool,
                 seconds: float | None) -> int:
    from dnsflow.console.tail import format_line

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def pump() -> None:
        # closed here, in this task, whatever ends it (a broken pipe, the timer, a signal):
        # left to the loop's shutdown, the Kafka reader would be torn down half-way
        async with contextlib.aclosing(source) as events:
            async for ev in events:
                line = orjson.dumps(ev).decode() if as_json else format_line(ev)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    task = asyncio.ensure_future(pump())
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=seconds,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, waiter):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, waiter, return_exceptions=False)
    if task in done and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return 0


async def _from_kafka(settings: Any, flt: Any) -> AsyncIterator[dict[str, Any]]:
    from dnsflow.bus import BusError, open_bus
    from dnsflow.cli import CommandError
    from dnsflow.console.tail import EventFeed

    bus = open_bus(settings.kafka, settings.topic_prefix)
    try:
        await bus.start()
    except BusError as exc:
        raise CommandError(str(exc)) from None
    feed = EventFeed(bus)
    try:
        async with feed.subscribe(flt) as sub:
            async for ev in sub.events(3600):
                if ev is not None:
                    yield ev
    finally:
        await feed.close()
        await bus.stop()


async def _from_console(home: Path, flt: Any) -> AsyncIterator[dict[str, Any]]:
    import aiohttp

    from dnsflow.cli import CommandError

    where = home / ENDPOINT_FILE
    try:
        info = orjson.loads(where.read_bytes())
        url = str(info["url"])
        if not pid_alive(int(info["pid"])):
            raise OSError
    except (OSError, KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        raise CommandError(
            f"no live event stream for {home}: the in-process bus only lives inside "
            "`dnsflow up` / `dnsflow demo` (none is running on this data directory); "
            "pass --kafka BOOTSTRAP to tail Kafka") from None
    params = {k: v for k, v in vars(flt).items() if v}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            resp = await session.get(url.rstrip("/") + "/api/tail", params=params)
        except aiohttp.ClientError as exc:
            raise CommandError(f"cannot reach the console at {url}: {exc}") from None
        async with resp:
            if resp.status != 200:
                raise CommandError(f"console at {url}: HTTP {resp.status}: "
                                   f"{(await resp.text())[:200]}")
            kind = ""
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "dns":
                    yield orjson.loads(line[6:])["event"]
                elif line.startswith("data: ") and kind == "problem":
                    raise CommandError(orjson.loads(line[6:])["error"])
