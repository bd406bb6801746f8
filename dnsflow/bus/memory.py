"""In-process bus with Kafka's topic/partition/offset/consumer-group semantics.

Used by the embedded runner (``dnsflow up``/``demo`` without flags) and fast unit tests.
Compacted topics keep only the newest record per key when read from the beginning, as a
compacted Kafka topic eventually does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence

from dnsflow.bus.base import Bus, Consumer, Message, partition_for
from dnsflow.topics import Topics


class _Topic:
    def __init__(self, name: str, partitions: int, compact: bool) -> None:
        self.name = name
        self.partitions: list[list[Message]] = [[] for _ in range(partitions)]
        self.compact = compact


class MemoryBus(Bus):
    """All topics live in this object; consumers of one group share committed offsets."""

    def __init__(self, topics: Topics | None = None, partitions: int = 3) -> None:
        super().__init__(topics)
        self.source_id = f"memory:{uuid.uuid4().hex[:16]}"
        self._default_partitions = partitions
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._changed = asyncio.Condition()
        for spec in self.topics.specs(events_partitions=partitions):
            compact = spec.configs.get("cleanup.policy") == "compact"
            self._topics[spec.name] = _Topic(spec.name, spec.partitions, compact)
        self._rr = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = _Topic(name, self._default_partitions, False)
        return self._topics[name]

    async def send_many(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> None:
        t = self.topic(topic)
        now = int(time.time() * 1000)
        for key, value in records:
            self._rr += 1
            p = partition_for(key, len(t.partitions), self._rr)
            log = t.partitions[p]
            log.append(Message(topic, p, len(log), key, value, now))
        async with self._changed:
            self._changed.notify_all()

    def consumer(
        self, topics: Iterable[str], group: str | None, *, from_beginning: bool = True
    ) -> Consumer:
        return MemoryConsumer(self, list(topics), group, from_beginning)

    def count(self, topic: str) -> int:
        """Records ever written to ``topic`` (test and demo helper)."""
        return sum(len(p) for p in self.topic(topic).partitions)

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        return self._committed.get((group, topic, partition))

    async def wait_changed(self, timeout: float) -> None:
        """Wait until something is written or ``timeout`` passes.

        ``asyncio.timeout`` (not ``wait_for``) so a cancellation of the caller is never
        mistaken for the timeout and swallowed (Python 3.11's ``wait_for`` can)."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _commit(self, group: str, topic: str, partition: int, offset: int) -> None:
        self._committed[(group, topic, partition)] = offset


class MemoryConsumer(Consumer):
    def __init__(
        self, bus: MemoryBus, topics: list[str], group: str | None, from_beginning: bool
    ) -> None:
        self._bus = bus
        self._topics = topics
        self._group = group
        self._from_beginning = from_beginning
        self._pos: dict[tuple[str, int], int] = {}
        self._returned: dict[tuple[str, int], int] = {}

    async def start(self) -> None:
        for name in self._topics:
            t = self._bus.topic(name)
            for p, log in enumerate(t.partitions):
                committed = (
                    self._bus.committed(self._group, name, p) if self._group else None
                )
                if committed is not None:
                    self._pos[(name, p)] = committed
                else:
                    self._pos[(name, p)] = 0 if self._from_beginning else len(log)

    async def stop(self) -> None:
        return None

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for (name, p), pos in self._pos.items():
            t = self._bus.topic(name)
            log = t.partitions[p]
            if pos >= len(log):
                continue
            batch = log[pos : pos + max_records - len(out)]
            if t.compact and pos == 0:
                # Reading a compacted topic from the start: newest value per key only.
                latest = {m.key: m.offset for m in log}
                batch = [m for m in batch if latest.get(m.key) == m.offset]
                end = pos + len(log[pos : pos + max_records - len(out)])
            else:
                end = pos + len(batch)
            out.extend(batch)
            self._pos[(name, p)] = end
            self._returned[(name, p)] = end
            if len(out) >= max_records:
                break
        return out

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 1000) -> list[Message]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            got = self._take(max_records)
            remaining = deadline - time.monotonic()
            if got or remaining <= 0:
                return got
            await self._bus.wait_changed(min(remaining, 0.05))

    async def commit(self) -> None:
        if self._group is None:
            return
        for (name, p), end in self._returned.items():
            self._bus._commit(self._group, name, p, end)

    async def seek_to_end(self) -> None:
        for name, p in self._pos:
            self._pos[(name, p)] = len(self._bus.topic(name).partitions[p])
