"""Read the compacted policies topic to its current end: what is published right now.

Through the bus only (``Bus.end_offsets``, ``Consumer.position``): the same code reads Kafka
and the in-process bus, and nothing here knows which one it is.
"""

from __future__ import annotations

import asyncio
import time

from dnsflow.bus import Bus, Consumer
from dnsflow.bus.base import BusError
from dnsflow.topics import TopicSpec


class CompactedReader:
    """Keeps a reader on a compacted topic; :meth:`read_new` returns what arrived since the
    last call, up to the end of the topic at the time of the call."""

    def __init__(self, bus: Bus, topic: str, timeout_s: float = 15.0) -> None:
        self.bus = bus
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None

    async def start(self) -> None:
        self._consumer = self.bus.consumer([self.topic], None, from_beginning=True)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read_new(self) -> dict[str, bytes | None]:
        """Latest value per key (``None``: tombstone) among records not read before."""
        ends = {p: end for p, end in (await self.bus.end_offsets(self.topic)).items() if end}
        out: dict[str, bytes | None] = {}
        if not ends:
            return out  # not created yet, or empty: nothing published
        if self._consumer is None:
            await self.start()
        c = self._consumer
        assert c is not None
        deadline = time.monotonic() + self.timeout_s
        pending = set(ends)
        while True:
            for p in list(pending):
                if await c.position(self.topic, p) >= ends[p]:
                    pending.discard(p)
            if not pending:
                return out
            if time.monotonic() > deadline:
                raise BusError(f"reading {self.topic} to its end took more than "
                               f"{self.timeout_s:.0f}s")
            for m in await c.getmany(timeout_ms=200, max_records=10_000):
                if m.key is not None:
                    out[m.key.decode("utf-8", "replace")] = m.value
            await asyncio.sleep(0)


async def read_compacted(bus: Bus, topic: str, timeout_s: float = 15.0
                         ) -> dict[str, bytes | None]:
    """Latest value per key (``None`` for a tombstone) currently on ``topic``."""
    reader = CompactedReader(bus, topic, timeout_s)
    try:
        return await reader.read_new()
    finally:
        await reader.stop()


async def ensure_topic(bus: Bus, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` if missing (the core only creates the contract topics)."""
    await bus.create_topics([TopicSpec(topic, partitions)])
