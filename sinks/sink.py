"""The sink loop: Kafka topics → validated columnar batches → ClickHouse → commit.

Order of operations per batch, which is what makes it exactly-once for stored rows:

1. gather records until ``batch_rows`` or ``batch_ms`` (never more than what was fetched);
2. for each partition whose first offset is not the one this process expected next (start,
   restart, rebalance), ask ClickHouse which offsets of it are already stored and skip them;
3. send rejected records to the DLQ (with reason and coordinates), insert the rest with a
   deduplication token naming their offsets, retrying with back-off while ClickHouse is away;
4. only then commit the consumer offsets.

A crash before (4) replays the batch; step 2 finds what step 3 already stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnsflow.bus import Bus, BusError, Consumer, Message
from dnsflow.bus.kafka import KafkaBus
from dnsflow.schema import RecordError
from sinks.config import SinkConfig
from sinks.convert_worker import ConvertPool, column_types
from sinks.dlq import dlq_record
from sinks.faults import fault_point
from sinks.gcpause import gc_paused
from sinks.kafka_consumer import FastKafkaConsumer
from sinks.rows import TABLES, TableSpec
from sinks.store import COORDINATES, Store, StoreError, batch_token
from sinks.topics import ensure_topics

log = logging.getLogger(__name__)
T = TypeVar("T")
_DEPTH = 2  # batches converting/inserting while the next one is gathered


@dataclass
class SinkStats:
    batches: int = 0
    records: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    skipped_replayed: int = 0
    retries: int = 0
    last_error: str = ""
    committed_at: float = 0.0


# one insert: table, columns, column data (or a Native body), dedup token, rows
_Insert = tuple[str, tuple[str, ...], list[Any] | bytes, str, int]


@dataclass
class _TableBatch:
    spec: TableSpec
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    ranges: dict[int, list[int]] = field(default_factory=dict)  # partition -> [first, last]


class Sink:
    """Consumes the configured topics of ``bus`` into ``store``; one instance per process."""

    def __init__(self, bus: Bus, store: Store, config: SinkConfig | None = None) -> None:
        self.bus = bus
        self.store = store
        self.config = config or SinkConfig()
        self.specs: dict[str, TableSpec] = {}
        for spec in TABLES:
            if spec.topic in self.config.topics:
                self.specs[bus.topics.name(spec.topic)] = spec
        unknown = set(self.config.topics) - {s.topic for s in TABLES}
        if unknown:
            raise ValueError(f"sink.topics: unknown topic(s) {sorted(unknown)}; "
                             f"known: {[s.topic for s in TABLES]}")
        self.dlq_topic = bus.topics.dlq
        self.stats = SinkStats()
        self._consumer: Consumer | None = None
        self._next: dict[tuple[str, int], int] = {}  # offset expected next per partition
        self._skip: dict[tuple[str, int], set[int]] = {}  # stored before this start
        self._skip_max: dict[tuple[str, int], int] = {}
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        self._pool: ConvertPool | None = None
        self._types: dict[str, tuple[str, ...]] = {}  # table -> column types, for the worker
        self.last_activity = time.monotonic()  # when records last arrived
        self.busy = False  # a gathered batch is being stored
        self._inflight: deque[asyncio.Task[None]] = deque()  # batches being stored, in order
        self._uncommitted = False
        self._last_commit = time.monotonic()

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        await ensure_topics(self.bus, list(self.specs))
        if self.config.convert_workers:
            await self._start_pool()
        self._consumer = self._make_consumer()
        await self._consumer.start()

    async def stop(self) -> None:
        self._stop.set()

    def _make_consumer(self) -> Consumer:
        """librdkafka for a Kafka bus (less CPU per record, fetched outside the GIL), the
        bus's own consumer otherwise (in-process bus, or ``kafka_client: aiokafka``)."""
        if self.config.kafka_client == "librdkafka" and isinstance(self.bus, KafkaBus):
            return FastKafkaConsumer(self.bus.bootstrap, list(self.specs), self.config.group)
        return self.bus.consumer(list(self.specs), self.config.group)

    async def _start_pool(self) -> None:
        """Hot-path conversion in worker processes; without them (or if they cannot start)
        the same conversion runs in this process."""
        try:
            for spec in self.specs.values():
                if spec.convert_many is not None:
                    self._types[spec.table] = await asyncio.to_thread(
                        column_types, self.store.client, spec.table,
                        (*spec.columns, *COORDINATES),
                    )
            self._pool = ConvertPool(self.config.convert_workers)
            await self._pool.warm()
        except Exception as exc:
            log.warning("conversion workers unavailable (%s); converting in-process", exc)
            if self._pool is not None:
                self._pool.close()
            self._pool = None

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def run(self) -> None:
        """Batch, store and commit until :meth:`stop`; the last batch is flushed."""
        assert self._consumer is not None, "start() first"
        try:
            while not self._stop.is_set():
                await self.step()
            await self.step(final=True)
            await self.flush()
        finally:
            while self._inflight:
                task = self._inflight.popleft()
                if not task.done():
                    task.cancel()

    # ---- one batch ----------------------------------------------------------------------

    async def gather(self, final: bool = False) -> list[Message]:
        assert self._consumer is not None
        cfg = self.config
        msgs: list[Message] = []
        started = time.monotonic()
        first_at: float | None = None
        while len(msgs) < cfg.batch_rows:
            if first_at is None and final:
                wait_ms = 0
            else:  # idle for batch_ms returns empty-handed, so the caller can commit
                wait_ms = int(cfg.batch_ms - (time.monotonic() - (first_at or started)) * 1000)
                if wait_ms <= 0:
                    break
            got = await self._consumer.getmany(
                timeout_ms=min(wait_ms, 200), max_records=cfg.batch_rows - len(msgs)
            )
            if got:
                self.last_activity = time.monotonic()
                if first_at is None:
                    first_at = time.monotonic()
                msgs.extend(got)
            elif final or self._stop.is_set():
                break
        return msgs

    async def step(self, final: bool = False) -> int:
        """Gather one batch and start storing it; return how many records it held.

        Pipelined: while this batch is converted (in the worker process) and then inserted
        (in a thread), the next ones are gathered; at most ``_DEPTH`` batches are in flight
        and they are inserted in order. Offsets are committed only at a flush, when every
        batch gathered so far has been stored — every ``commit_ms``, when idle, at the end.
        """
        msgs = await self.gather(final)
        if not msgs:
            await self.flush()
            return 0
        self.busy = True
        try:
            local, remote, rejects = await self._prepare_sync(msgs)
            prev = self._inflight[-1] if self._inflight else None
            self._inflight.append(
                asyncio.create_task(self._finish_batch(local, remote, rejects, prev))
            )
            while len(self._inflight) > _DEPTH:
                await self._inflight.popleft()
            if final or time.monotonic() - self._last_commit >= self.config.commit_ms / 1000:
                await self.flush()
        finally:
            self.busy = bool(self._inflight)
            self.last_activity = time.monotonic()
        self.stats.batches += 1
        self.stats.records += len(msgs)
        return len(msgs)

    async def flush(self) -> None:
        """Wait for the batches being stored, then commit everything gathered so far."""
        had = bool(self._inflight)
        await self._await_inflight()
        self.busy = False
        if had or self._uncommitted:
            fault_point("after-insert")
            await self._commit()
        self._last_commit = time.monotonic()

    async def _await_inflight(self) -> None:
        while self._inflight:
            await self._inflight.popleft()

    async def store_batch(self, msgs: list[Message]) -> None:
        """Store one batch completely (no commit): what a crash right after looks like."""
        await self._insert(await self._prepare(msgs))

    async def _prepare(self, msgs: list[Message]) -> list[_Insert]:
        """Reconcile, convert, DLQ the rejects; return the inserts to run."""
        local, remote, rejects = await self._prepare_sync(msgs)
        await self._await_inflight()
        return await self._convert_and_dlq(local, remote, rejects)

    async def _prepare_sync(
        self, msgs: list[Message]
    ) -> tuple[list[_Insert], list[tuple[TableSpec, list[Message]]], list[tuple[Message, str]]]:
        """What must happen in order, before the next batch: reconcile, and convert here
        (or note what the worker will convert), advancing the expected offsets."""
        self._uncommitted = True
        await self._reconcile(msgs)
        with gc_paused():
            batches, rejects, remote = self._convert(msgs)
        for _spec, group in remote:
            last = dict(zip([m.partition for m in group], [m.offset for m in group],
                            strict=True))
            for p, o in last.items():
                self._next[(group[0].topic, p)] = o + 1
        local: list[_Insert] = []
        for table, tb in batches.items():
            with gc_paused():
                data: list[Any] = list(zip(*tb.rows, strict=True))  # columns as tuples
                tb.rows.clear()
                if tb.spec.finish is not None:
                    tb.spec.finish(data)
            source = self.source(tb.spec)
            data.append(tb.partitions)
            data.append(tb.offsets)
            data.append([source] * len(tb.offsets))
            columns = (*tb.spec.columns, *COORDINATES)
            token = batch_token(table, source, ((p, a, b) for p, (a, b) in tb.ranges.items()))
            local.append((table, columns, data, token, len(tb.offsets)))
        return local, remote, rejects

    async def _convert_and_dlq(
        self, local: list[_Insert], remote: list[tuple[TableSpec, list[Message]]],
        rejects: list[tuple[Message, str]],
    ) -> list[_Insert]:
        inserts = list(local)
        for spec, group in remote:  # hot path in the worker process
            inserts.extend(await self._convert_remote(spec, group, rejects))
        if rejects:
            records = [(m.topic.encode(), dlq_record(m, reason)) for m, reason in rejects]
            await self._retry(lambda: self.bus.send_many(self.dlq_topic, records),
                              f"DLQ {self.dlq_topic}")
            self.stats.rejected += len(rejects)
            for m, reason in rejects[:3]:
                log.warning("rejected %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)
        return inserts

    async def _finish_batch(
        self, local: list[_Insert], remote: list[tuple[TableSpec, list[Message]]],
        rejects: list[tuple[Message, str]], prev: asyncio.Task[None] | None,
    ) -> None:
        """Convert (overlapping the batch before), DLQ, then insert after the batch before."""
        inserts = await self._convert_and_dlq(local, remote, rejects)
        if prev is not None:
            await prev
        await self._insert(inserts)

    async def _convert_remote(
        self, spec: TableSpec, msgs: list[Message], rejects: list[tuple[Message, str]]
    ) -> list[_Insert]:
        assert self._pool is not None
        partitions = [m.partition for m in msgs]
        offsets = [m.offset for m in msgs]
        first = dict(zip(reversed(partitions), reversed(offsets), strict=True))
        last = dict(zip(partitions, offsets, strict=True))
        source = self.source(spec)
        columns = (*spec.columns, *COORDINATES)
        native, bad, n = await self._pool.run(
            [m.value for m in msgs], partitions, offsets, source, spec.table, columns,
            self._types[spec.table], spec.topic,
        )
        rejects.extend((msgs[i], reason) for i, reason in bad)
        if not n:
            return []
        token = batch_token(spec.table, source, ((p, first[p], last[p]) for p in first))
        return [(spec.table, columns, native, token, n)]

    async def _insert(self, inserts: list[_Insert]) -> None:
        for table, columns, data, token, n in inserts:
            insert = self.store.insert_native if isinstance(data, bytes) else self.store.insert
            await self._retry(
                lambda f=insert, t=table, c=columns, d=data, k=token: asyncio.to_thread(
                    f, t, c, d, k
                ),
                f"insert into {table}",
            )
            self.stats.stored[table] = self.stats.stored.get(table, 0) + n
            log.debug("stored %d rows in %s", n, table)

    def _convert(
        self, msgs: list[Message]
    ) -> tuple[
        dict[str, _TableBatch], list[tuple[Message, str]], list[tuple[TableSpec, list[Message]]]
    ]:
        """Rows per table, rejects with reasons, and the groups left to the worker process;
        skips offsets already stored."""
        batches: dict[str, _TableBatch] = {}
        rejects: list[tuple[Message, str]] = []
        remote: list[tuple[TableSpec, list[Message]]] = []
        topics = {m.topic for m in msgs}
        if len(topics) == 1:
            groups = {topics.pop(): msgs}
        else:
            groups = {t: [] for t in topics}
            for m in msgs:
                groups[m.topic].append(m)
        for topic, group in groups.items():
            spec = self.specs[topic]
            replaying = self._skip and any((topic, m.partition) in self._skip for m in group)
            if spec.convert_many is None or replaying:
                self._convert_each(group, batches, rejects)
            elif self._pool is not None and spec.table in self._types:
                remote.append((spec, group))
            else:
                self._convert_many(spec, group, batches, rejects)
        return batches, rejects, remote

    def _convert_many(
        self, spec: TableSpec, msgs: list[Message], batches: dict[str, _TableBatch],
        rejects: list[tuple[Message, str]],
    ) -> None:
        """The hot path: one topic, no replayed offsets, whole-batch conversion."""
        assert spec.convert_many is not None
        rows, bad = spec.convert_many([m.value for m in msgs], spec.topic)
        partitions = [m.partition for m in msgs]
        offsets = [m.offset for m in msgs]
        first = dict(zip(reversed(partitions), reversed(offsets), strict=True))
        last = dict(zip(partitions, offsets, strict=True))
        topic = msgs[0].topic
        for p, o in last.items():
            self._next[(topic, p)] = o + 1
        if bad:
            dropped = {i for i, _ in bad}
            rejects.extend((msgs[i], reason) for i, reason in bad)
            partitions = [p for i, p in enumerate(partitions) if i not in dropped]
            offsets = [o for i, o in enumerate(offsets) if i not in dropped]
        if not rows:
            return
        tb = batches.get(spec.table)
        if tb is None:
            tb = batches[spec.table] = _TableBatch(spec)
        tb.rows.extend(rows)
        tb.partitions.extend(partitions)
        tb.offsets.extend(offsets)
        for p, o in first.items():
            rng = tb.ranges.get(p)
            if rng is None:
                tb.ranges[p] = [o, last[p]]
            else:
                rng[1] = last[p]

    def _convert_each(
        self, msgs: list[Message], batches: dict[str, _TableBatch],
        rejects: list[tuple[Message, str]],
    ) -> None:
        """Record by record: any topic, and partitions replaying stored offsets."""
        skip = self._skip
        for msg in msgs:
            key = (msg.topic, msg.partition)
            self._next[key] = msg.offset + 1
            spec = self.specs[msg.topic]
            replayed = False
            if skip:
                done = skip.get(key)
                if done is not None:
                    if msg.offset in done:
                        self.stats.skipped_replayed += 1
                        continue
                    replayed = msg.offset < self._skip_max[key]
                    if not replayed:
                        del skip[key]  # past everything stored before
            try:
                if spec.hot:
                    row = spec.convert(msg.value, spec.topic)
                else:
                    row = spec.convert(msg.value, spec.topic, msg.timestamp_ms)
            except RecordError as exc:
                # Below a stored offset, a reject went to the DLQ before its batch was
                # stored: it is not sent again.
                if not replayed:
                    rejects.append((msg, str(exc)))
                continue
            tb = batches.get(spec.table)
            if tb is None:
                tb = batches[spec.table] = _TableBatch(spec)
            tb.rows.append(row)
            tb.partitions.append(msg.partition)
            tb.offsets.append(msg.offset)
            rng = tb.ranges.get(msg.partition)
            if rng is None:
                tb.ranges[msg.partition] = [msg.offset, msg.offset]
            else:
                rng[1] = msg.offset

    async def _reconcile(self, msgs: list[Message]) -> None:
        """Learn which offsets are already stored for partitions that did not continue where
        this process left off (start, restart, rebalance); :meth:`store_batch` skips them."""
        firsts: dict[tuple[str, int], int] = {}
        for msg in msgs:
            key = (msg.topic, msg.partition)
            if key not in firsts:
                firsts[key] = msg.offset
        by_table: dict[str, tuple[str, dict[int, int]]] = {}
        for (topic, p), first in firsts.items():
            if self._next.get((topic, p)) == first:
                continue
            self._skip.pop((topic, p), None)
            table = self.specs[topic].table
            by_table.setdefault(table, (topic, {}))[1][p] = first
        if by_table:
            await self._await_inflight()  # the query must see what is being stored
        for table, (topic, starts) in by_table.items():
            source = self.source(self.specs[topic])
            found = await self._retry(
                lambda t=table, src=source, s=starts: asyncio.to_thread(
                    self.store.stored_offsets, t, src, s
                ),
                f"reading {table}",
            )
            for p, offsets in found.items():
                if offsets:
                    log.info("%s[%d]: %d records from offset %d already stored; skipping them",
                             topic, p, len(offsets), starts[p])
                    self._skip[(topic, p)] = offsets
                    self._skip_max[(topic, p)] = max(offsets)

    def source(self, spec: TableSpec) -> str:
        """The log a row came from: offsets are unique only within it (``Bus.source_id``)."""
        return f"{self.bus.source_id}/{self.bus.topics.name(spec.topic)}"

    async def _commit(self) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit()
            self._uncommitted = False
            self.stats.committed_at = time.time()
        except Exception as exc:  # e.g. a rebalance: the replay is reconciled, not duplicated
            self._next.clear()
            self._skip.clear()
            self.stats.last_error = f"commit: {exc}"
            log.warning("offset commit failed (%s); the batch will be replayed and "
                        "reconciled, not duplicated", exc)

    async def _retry(self, op: Callable[[], Awaitable[T]], what: str) -> T:
        """Run ``op`` until it succeeds, backing off; never skip (stopping only aborts)."""
        delay = self.config.retry_initial_s
        while True:
            try:
                return await op()
            except (StoreError, BusError) as exc:
                self.stats.retries += 1
                self.stats.last_error = str(exc)
                log.warning("%s failed (%s); retrying in %.1fs, offsets not committed",
                            what, exc, delay)
            if self._abandon.is_set():
                raise SinkAborted(f"{what}: gave up while stopping: {self.stats.last_error}")
            try:
                await asyncio.wait_for(self._abandon.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, self.config.retry_max_s)

    def abandon(self) -> None:
        """Stop retrying (shutdown deadline passed); uncommitted records will be replayed."""
        self._stop.set()
        self._abandon.set()


class SinkAborted(RuntimeError):
    """The sink stopped while a batch could not be stored; its offsets stay uncommitted."""
