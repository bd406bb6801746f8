"""Egress events (``dnsflow.schema.EgressEvent``) queued by the answer path and the NFLOG
reader, sent in batches to ``dnsflow.egress`` (key = tenant) and, when configured, appended
to a JSON-lines file. Bounded: past ``max_queue`` events are counted as lost, never block
an answer."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson

from dnsflow.bus import Bus
from dnsflow.schema import SCHEMA_VERSION, now_us
from dnsflow.tasks import cancel_and_wait
from dnsflow.topics import EGRESS

log = logging.getLogger(__name__)


class EgressEvents:
    def __init__(self, edge: str, bus: Bus | None, events_file: str | None,
                 max_queue: int = 100_000, interval: float = 0.2) -> None:
        self.edge = edge
        self.bus = bus
        self.path = Path(events_file) if events_file else None
        self.max_queue = max_queue
        self.interval = interval
        self._queue: list[tuple[bytes, bytes]] = []
        self._task: asyncio.Task[None] | None = None
        self.counts = {"allow": 0, "drop": 0, "would_drop": 0, "lost": 0, "sent": 0,
                       "send_errors": 0}

    def add(self, kind: str, **fields: Any) -> None:
        """Queue one event (``kind``: allow | drop | would_drop); fields as EgressEvent's."""
        self.counts[kind] += 1
        if len(self._queue) >= self.max_queue:
            self.counts["lost"] += 1
            return
        event = {"v": SCHEMA_VERSION, "ts": now_us(), "edge": self.edge, "kind": kind,
                 **fields}
        self._queue.append((str(fields.get("tenant", "")).encode(), orjson.dumps(event)))

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="egress-events")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch:
            return
        if self.path is not None:
            try:
                with self.path.open("ab") as f:
                    f.write(b"".join(v + b"\n" for _, v in batch))
            except OSError as exc:
                log.error("egress events file %s: %s", self.path, exc)
        if self.bus is not None:
            try:
                await self.bus.send_many(self.bus.topics.name(EGRESS), batch)
                self.counts["sent"] += len(batch)
            except Exception as exc:
                self.counts["send_errors"] += 1
                log.warning("egress events not delivered (%d): %s", len(batch), exc)

    async def stop(self) -> None:
        await cancel_and_wait(self._task, quiet=True)
        await self.flush()
