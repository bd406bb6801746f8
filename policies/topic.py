"""Read the compacted policies topic to its current end: what is published right now.

The bus API has no 'end offsets', so for Kafka this uses aiokafka directly (assign, seek
to the beginning once, then read up to the end offsets captured at each call); for the
in-process bus a zero-timeout poll until empty is exact.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dnsflow.bus import Bus
from dnsflow.bus.base import BusError


class CompactedReader:
    """Keeps a reader on a compacted topic; :meth:`read_new` returns what arrived since the
    last call, up to the end of the topic at the time of the call."""

    def __init__(self, bus: Bus, topic: str, timeout_s: float = 15.0) -> None:
        self.bus = bus
        self.topic = topic
        self.timeout_s = timeout_s
        bootstrap = getattr(bus, "bootstrap", None)
        self._bootstrap = bootstrap if isinstance(bootstrap, str) else None
        self._consumer: Any = None
        self._tps: list[Any] = []

    async def start(self) -> None:
        if self._bootstrap is None:
            self._consumer = self.bus.consumer([self.topic], None, from_beginning=True)
            await self._consumer.start()
            return
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                          enable_auto_commit=False,
                                          auto_offset_reset="earliest")
        try:
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()
            self._consumer = None
            raise BusError(f"kafka {self._bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read_new(self) -> dict[str, bytes | None]:
        """Latest value per key (``None``: tombstone) among records not read before."""
        if self._consumer is None:
            await self.start()
        if self._bootstrap is None:
            return await self._read_generic()
        return await self._read_kafka()

    async def _read_generic(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            batch = await self._consumer.getmany(timeout_ms=0, max_records=10_000)
            if not batch:
                break
            for m in batch:
                if m.key is not None:
                    out[m.key.decode("utf-8", "replace")] = m.value
        return out

    async def _read_kafka(self) -> dict[str, bytes | None]:
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        c = self._consumer
        out: dict[str, bytes | None] = {}
        try:
            if not self._tps:
                # the consumer's public metadata only covers subscribed topics; ask the cluster
                meta = await c._client.fetch_all_metadata()
                ids = meta.partitions_for_topic(self.topic)
                if not ids:
                    return out  # not created yet: nothing published
                self._tps = [TopicPartition(self.topic, p) for p in sorted(ids)]
                c.assign(self._tps)
                await c.seek_to_beginning(*self._tps)
            ends = await c.end_offsets(self._tps)
            deadline = time.monotonic() + self.timeout_s
            pending = {tp for tp in self._tps if await c.position(tp) < ends[tp]}
            while pending:
                if time.monotonic() > deadline:
                    raise BusError(f"kafka {self._bootstrap}: reading {self.topic} to its end "
                                   f"took more than {self.timeout_s:.0f}s")
                batches = await c.getmany(*pending, timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    for r in records:
                        if r.key is not None:
                            out[r.key.decode("utf-8", "replace")] = r.value
                for tp in list(pending):
                    if await c.position(tp) >= ends[tp]:
                        pending.discard(tp)
                await asyncio.sleep(0)
        except KafkaError as exc:
            raise BusError(f"kafka {self._bootstrap}: reading {self.topic}: {exc}") from exc
        return out


async def read_compacted(bus: Bus, topic: str, timeout_s: float = 15.0
                         ) -> dict[str, bytes | None]:
    """Latest value per key (``None`` for a tombstone) currently on ``topic``."""
    reader = CompactedReader(bus, topic, timeout_s)
    try:
        return await reader.read_new()
    finally:
        await reader.stop()


async def ensure_topic(bus: Bus, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` on Kafka if missing (the core only creates the contract topics)."""
    bootstrap = getattr(bus, "bootstrap", None)
    if not isinstance(bootstrap, str):
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
        if topic not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise BusError(f"kafka {bootstrap}: creating {topic}: {exc}") from exc
    finally:
        await admin.close()
