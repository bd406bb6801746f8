"""In-process bus with Kafka's topic/partition/offset/consumer-group semantics.

Used by the embedded runner (``dnsflow up``/``demo`` without flags) and fast unit tests.
Compacted topics keep only the newest record per key when read from the beginning, as a
compacted Kafka topic eventually does.

Retention is bounded, like a Kafka topic's ``retention.bytes``: each topic keeps at most
``retain_records`` records and ``retain_bytes`` bytes (keys + values + a fixed per-record
overhead), split evenly over its partitions; the oldest records of a partition go first.
Offsets stay absolute. A consumer whose position falls behind the trim skips ahead to the
oldest record still kept (as Kafka's ``auto.offset.reset=earliest`` does); what it missed is
counted (``MemoryConsumer.skipped``, ``MemoryBus.skipped``, ``MemoryBus.stats()``) and logged
once per consumer. A compacted topic is never trimmed by age: past the bound it is compacted
(only the newest record of each key kept), so the latest value of every key survives.
Defaults: 50,000 records and 64 MiB per topic, or ``DNSFLOW_MEMORY_BUS_RETAIN_RECORDS`` /
``DNSFLOW_MEMORY_BUS_RETAIN_BYTES``; ``0`` means unbounded.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence

from dnsflow.bus.base import Bus, Consumer, Message, Positions, partition_for
from dnsflow.topics import Topics, TopicSpec

log = logging.getLogger(__name__)

RECORD_OVERHEAD = 200  # bytes a retained record costs besides key and value (Message object)
DEFAULT_RETAIN_RECORDS = 50_000
DEFAULT_RETAIN_BYTES = 64 << 20


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        log.error("%s=%r is not an integer; using %d", name, raw, default)
        return default


def _size(m: Message) -> int:
    return RECORD_OVERHEAD + len(m.key or b"") + len(m.value or b"")


class _Topic:
    def __init__(self, name: str, partitions: int, compact: bool, retain_records: int = 0,
                 retain_bytes: int = 0) -> None:
        self.name = name
        self.partitions: list[list[Message]] = [[] for _ in range(partitions)]
        self.compact = compact
        self.next = [0] * partitions      # the offset the next record of a partition gets
        self.bytes = [0] * partitions     # retained bytes per partition
        self.trimmed = 0                  # records removed by retention or compaction
        # the topic's bound, split evenly over its partitions (0: unbounded)
        self.max_records = -(-retain_records // partitions) if retain_records > 0 else 0
        self.max_bytes = -(-retain_bytes // partitions) if retain_bytes > 0 else 0

    def first(self, p: int) -> int:
        """The oldest offset still kept in partition ``p``."""
        log_ = self.partitions[p]
        return log_[0].offset if log_ else self.next[p]

    def append(self, p: int, m: Message) -> None:
        self.partitions[p].append(m)
        self.next[p] = m.offset + 1
        self.bytes[p] += _size(m)

    def enforce(self, p: int) -> None:
        log_ = self.partitions[p]
        over_n = self.max_records and len(log_) > self.max_records
        over_b = self.max_bytes and self.bytes[p] > self.max_bytes
        if not (over_n or over_b):
            return
        if self.compact:
            latest = {m.key: m.offset for m in log_}
            kept = [m for m in log_ if latest[m.key] == m.offset]
        else:
            # oldest first, down to 90 % of the bound so trimming is not paid per record
            n, b = len(log_), self.bytes[p]
            cut = 0
            while cut < n and ((self.max_records and n - cut > self.max_records * 0.9)
                               or (self.max_bytes and b > self.max_bytes * 0.9)):
                b -= _size(log_[cut])
                cut += 1
            kept = log_[cut:]
        self.trimmed += len(log_) - len(kept)
        self.partitions[p] = kept
        self.bytes[p] = sum(_size(m) for m in kept)

    def index(self, p: int, offset: int) -> int:
        """The list index of the first kept record at or after ``offset``."""
        log_ = self.partitions[p]
        if not log_ or offset <= log_[0].offset:
            return 0
        if log_[-1].offset - log_[0].offset == len(log_) - 1:  # contiguous: no compaction
            return min(offset - log_[0].offset, len(log_))
        return bisect.bisect_left(log_, offset, key=lambda m: m.offset)


class MemoryBus(Bus):
    """All topics live in this object; consumers of one group share committed offsets."""

    def __init__(self, topics: Topics | None = None, partitions: int = 3, *,
                 retain_records: int | None = None, retain_bytes: int | None = None) -> None:
        super().__init__(topics)
        self.source_id = f"memory:{uuid.uuid4().hex[:16]}"
        self._default_partitions = partitions
        self.retain_records = (retain_records if retain_records is not None else
                               _env_int("DNSFLOW_MEMORY_BUS_RETAIN_RECORDS",
                                        DEFAULT_RETAIN_RECORDS))
        self.retain_bytes = (retain_bytes if retain_bytes is not None else
                             _env_int("DNSFLOW_MEMORY_BUS_RETAIN_BYTES", DEFAULT_RETAIN_BYTES))
        self.skipped = 0  # records consumers missed because they fell behind the trim
        self._topics: dict[str, _Topic] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._changed = asyncio.Condition()
        for spec in self.topics.specs(events_partitions=partitions):
            compact = spec.configs.get("cleanup.policy") == "compact"
            self._topics[spec.name] = self._new_topic(spec.name, spec.partitions, compact)
        self._rr = 0

    def _new_topic(self, name: str, partitions: int, compact: bool) -> _Topic:
        return _Topic(name, partitions, compact, self.retain_records, self.retain_bytes)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def topic(self, name: str) -> _Topic:
        if name not in self._topics:
            self._topics[name] = self._new_topic(name, self._default_partitions, False)
        return self._topics[name]

    async def send_many(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> None:
        t = self.topic(topic)
        now = int(time.time() * 1000)
        touched: set[int] = set()
        for key, value in records:
            self._rr += 1
            p = partition_for(key, len(t.partitions), self._rr)
            t.append(p, Message(topic, p, t.next[p], key, value, now))
            touched.add(p)
        if t.max_records or t.max_bytes:
            for p in touched:
                t.enforce(p)
        async with self._changed:
            self._changed.notify_all()

    def consumer(
        self, topics: Iterable[str], group: str | None, *, from_beginning: bool = True
    ) -> Consumer:
        return MemoryConsumer(self, list(topics), group, from_beginning)

    async def create_topics(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            if spec.name not in self._topics:
                compact = spec.configs.get("cleanup.policy") == "compact"
                self._topics[spec.name] = self._new_topic(spec.name, spec.partitions, compact)

    async def partition_count(self, topic: str) -> int | None:
        t = self._topics.get(topic)
        return None if t is None else len(t.partitions)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        t = self._topics.get(topic)
        return {} if t is None else dict(enumerate(t.next))

    def count(self, topic: str) -> int:
        """Records ever written to ``topic`` (test and demo helper)."""
        return sum(self.topic(topic).next)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per topic: records written, kept, kept bytes, trimmed; plus consumer skips."""
        out = {name: {"written": sum(t.next), "kept": sum(len(p) for p in t.partitions),
                      "bytes": sum(t.bytes), "trimmed": t.trimmed}
               for name, t in self._topics.items()}
        out["_consumers"] = {"skipped": self.skipped}
        return out

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
        self.skipped = 0  # records trimmed before this consumer read them

    async def start(self) -> None:
        for name in self._topics:
            t = self._bus.topic(name)
            for p in range(len(t.partitions)):
                committed = (
                    self._bus.committed(self._group, name, p) if self._group else None
                )
                if committed is not None:
                    self._pos[(name, p)] = committed
                else:
                    self._pos[(name, p)] = t.first(p) if self._from_beginning else t.next[p]

    async def stop(self) -> None:
        return None

    def _take(self, max_records: int) -> list[Message]:
        out: list[Message] = []
        for (name, p), pos in self._pos.items():
            t = self._bus.topic(name)
            log_ = t.partitions[p]
            if pos >= t.next[p]:
                continue
            first = t.first(p)
            if pos < first and not t.compact:
                self._skipped(name, p, first - pos)
                pos = first
            i = t.index(p, pos)
            raw = log_[i : i + max_records - len(out)]
            if not raw:
                self._pos[(name, p)] = t.next[p]
                continue
            batch = raw
            if t.compact and pos <= first:
                # Reading a compacted topic from the start: newest value per key only.
                latest = {m.key: m.offset for m in log_}
                batch = [m for m in raw if latest.get(m.key) == m.offset]
            end = raw[-1].offset + 1
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

    def _skipped(self, topic: str, partition: int, n: int) -> None:
        if not self.skipped:
            log.warning("in-process bus: consumer %s fell behind the retention of %s[%d]; "
                        "skipped %d record(s) (counted in skipped)", self._group or "-",
                        topic, partition, n)
        self.skipped += n
        self._bus.skipped += n

    async def commit(self) -> None:
        if self._group is None:
            return
        for (name, p), end in self._returned.items():
            self._bus._commit(self._group, name, p, end)

    async def seek_to_end(self) -> None:
        for name, p in self._pos:
            self._pos[(name, p)] = self._bus.topic(name).next[p]

    async def commit_positions(self, positions: Positions) -> None:
        if self._group is None:
            return
        for (name, p), end in positions.items():
            self._bus._commit(self._group, name, p, end)

    async def position(self, topic: str, partition: int) -> int:
        return self._pos.get((topic, partition), -1)

    async def start_positions(self) -> dict[tuple[str, int], int]:
        return dict(self._pos)
