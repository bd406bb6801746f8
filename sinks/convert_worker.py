"""Event conversion and Native serialisation in a worker process.

On the hot path the sink's own Python work (validate, build columns, serialise to
ClickHouse's Native format) competes for the GIL with the Kafka client. A worker process does
it on the other core: it receives the raw values and coordinates of one batch and returns
the Native bytes plus the rejects; the sink process only consumes, inserts (chDB/HTTP, outside
the GIL) and commits. Same functions as the in-process path, so the same rows.

Off by default (``sink.convert_workers: 0``): the hand-over costs ~4 µs of CPU per event, so
on a busy 2-core machine with chDB in-process it was slower (50 k vs 60 k rows/s); it pays
when cores are idle, e.g. with a remote ClickHouse server taking the insert work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)


@lru_cache(maxsize=8)
def _types(type_names: tuple[str, ...]) -> list[Any]:
    from clickhouse_connect.datatypes.registry import get_from_name

    return [get_from_name(t) for t in type_names]


def convert_events(
    values: list[bytes | None], partitions: list[int], offsets: list[int], source: str,
    table: str, column_names: tuple[str, ...], type_names: tuple[str, ...], where: str,
) -> tuple[bytes, list[tuple[int, str]], int]:
    """(Native body, [(index, reason)] rejects, rows) for one batch of ``events`` records."""
    import gc

    from clickhouse_connect.driver.insert import InsertContext
    from clickhouse_connect.driver.transform import NativeTransform

    from sinks.rows import event_rows, finish_events

    gc.disable()  # this process only converts batches; reference counting frees them
    rows, bad = event_rows(values, where)
    if bad:
        dropped = {i for i, _ in bad}
        partitions = [p for i, p in enumerate(partitions) if i not in dropped]
        offsets = [o for i, o in enumerate(offsets) if i not in dropped]
    if not rows:
        return b"", bad, 0
    data: list[Any] = list(zip(*rows, strict=True))
    finish_events(data)
    data += [partitions, offsets, [source] * len(rows)]
    ctx = InsertContext(table, list(column_names), _types(type_names), data=data,
                        column_oriented=True)
    chunks = list(NativeTransform.build_insert(ctx))
    if chunks and chunks[0].startswith(b"INSERT INTO"):
        chunks[0] = chunks[0][chunks[0].index(b"\n") + 1 :]
    return b"".join(chunks), bad, len(rows)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: leave when the sink process is gone (even after SIGKILL, which
    gives the pool no chance to shut its workers down)."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ConvertPool:
    """One (or more) spawned worker processes; ``None`` from :meth:`open` means in-process."""

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process holding chDB
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    async def run(self, *args: Any) -> tuple[bytes, list[tuple[int, str]], int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, convert_events, *args)

    async def warm(self) -> None:
        """Start the worker now (spawn + imports take a second), not on the first batch."""
        await self.run([], [], [], "", "warm", (), (), "warm")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # reaped: no orphan, CPU accounted


def column_types(client: Any, table: str, columns: Sequence[str]) -> tuple[str, ...]:
    rows = dict(client.query(
        "SELECT name, type FROM system.columns WHERE database = 'dnsflow' AND table = "
        "{t:String}", parameters={"t": table}).result_rows)
    return tuple(rows[c] for c in columns)
