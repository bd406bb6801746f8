"""The sink loop: Kafka topics → validated batches → ClickHouse → commit.

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
import bisect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dnsflow.bus import Bus, BusError, Consumer, Message
from dnsflow.dlq import dlq_record
from dnsflow.gctune import gc_paused
from dnsflow.schema import RecordError
from dnsflow.sinks.batch import Records
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.faults import fault_point
from dnsflow.sinks.ingest import canonical_body, ingest_body
from dnsflow.sinks.kafka_consumer import FastKafkaConsumer
from dnsflow.sinks.rows import TABLES, TableSpec
from dnsflow.sinks.store import COORDINATES, Store, StoreError, batch_token

log = logging.getLogger(__name__)
T = TypeVar("T")
_DEPTH = 2  # batches converting/inserting while the next one is gathered
# batch latency buckets (seconds): first record gathered -> its rows stored
LATENCY_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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


@dataclass
class _Insert:
    """One insert of a batch: columns into ``table`` (Native), or a JSONEachRow ``body``
    into ``spec.ingest`` whose view fills ``table``; ``token`` names its exact offsets."""

    table: str
    token: str
    rows: int
    columns: tuple[str, ...] = ()
    data: list[Any] | None = None
    ingest: str | None = None
    body: bytes = b""
    canonical: Callable[[], bytes] | None = None  # the body a retry sends (see ingest.py)


@dataclass
class _TableBatch:
    spec: TableSpec
    rows: list[Any] = field(default_factory=list)  # row tuples, or JSON objects (ingest)
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
        # a batch as columns: straight from librdkafka, or from the core consumer's messages
        self._fetch_records: Callable[[int, int], Awaitable[Records]]
        self._next: dict[tuple[str, int], int] = {}  # offset expected next per partition
        self._skip: dict[tuple[str, int], set[int]] = {}  # stored before this start
        self._skip_max: dict[tuple[str, int], int] = {}
        self._seen: set[tuple[str, int]] = set()  # partitions this process has read from
        self._stop = asyncio.Event()
        self._abandon = asyncio.Event()
        self.last_activity = time.monotonic()  # when records last arrived
        self.busy = False  # a gathered batch is being stored
        # batches being stored, in order, each with the positions it completes
        self._inflight: deque[tuple[asyncio.Task[None], dict[tuple[str, int], int]]] = deque()
        self._stored: dict[tuple[str, int], int] = {}  # positions stored, not yet committed
        self._uncommitted = False
        self._last_commit = time.monotonic()
        # for /metrics: per batch, never per record
        self.failing = False  # the last ClickHouse/Kafka operation failed, none worked since
        self.reconciles = 0   # times stored offsets were looked up (start, restart, rebalance)
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self._first_at = 0.0  # when the batch being gathered got its first record

    # ---- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        # sink input topics the core does not create (policy_log), as the topic table says
        await self.bus.create_topics(s for s in self.bus.topics.specs() if s.name in self.specs)
        self._consumer = self._make_consumer()
        await self._consumer.start()
        try:
            await self._reconcile_starts(await self._consumer.start_positions())
        except (BusError, StoreError) as exc:  # then each partition as its records arrive
            self._next.clear()
            self._skip.clear()
            log.info("not reconciled at start (%s); reconciling as records arrive", exc)

    async def stop(self) -> None:
        self._stop.set()

    def _make_consumer(self) -> Consumer:
        """librdkafka for a Kafka bus (less CPU per record, fetched outside the GIL), the
        bus's own consumer otherwise (in-process bus, or ``kafka_client: aiokafka``)."""
        if self.config.kafka_client == "librdkafka" and self.bus.bootstrap:
            fast = FastKafkaConsumer(self.bus.bootstrap, list(self.specs), self.config.group)
            self._fetch_records = fast.getmany_records
            return fast
        consumer = self.bus.consumer(list(self.specs), self.config.group)

        async def fetch(timeout_ms: int, max_records: int) -> Records:
            return Records.from_messages(await consumer.getmany(timeout_ms, max_records))

        self._fetch_records = fetch
        return consumer

    async def close(self) -> None:
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
                task, _ = self._inflight.popleft()
                if not task.done():
                    task.cancel()

    # ---- one batch ----------------------------------------------------------------------

    async def _fetch(self, timeout_ms: int, max_records: int) -> Records:
        assert self._consumer is not None
        return await self._fetch_records(timeout_ms, max_records)

    async def gather(self, final: bool = False) -> Records:
        """The next batch: up to ``batch_rows`` records, waiting at most ``batch_ms``."""
        cfg = self.config
        msgs = Records()
        started = time.monotonic()
        first_at: float | None = None
        while len(msgs) < cfg.batch_rows:
            if first_at is None and final:
                wait_ms = 0
            else:  # idle for batch_ms returns empty-handed, so the caller can commit
                wait_ms = int(cfg.batch_ms - (time.monotonic() - (first_at or started)) * 1000)
                if wait_ms <= 0:
                    break
            got = await self._fetch(min(wait_ms, 200), cfg.batch_rows - len(msgs))
            if got:
                self.last_activity = time.monotonic()
                if first_at is None:
                    first_at = self._first_at = time.monotonic()
                msgs.extend(got)
            elif final or self._stop.is_set():
                break
        return msgs

    async def step(self, final: bool = False) -> int:
        """Gather one batch and start storing it; return how many records it held.

        Pipelined: while this batch is inserted (in a thread; ClickHouse's work releases the
        GIL), the next ones are gathered; at most ``_DEPTH`` batches are in flight
        and they are inserted in order. Every ``commit_ms`` the positions of the batches
        already stored are committed (``Consumer.commit_positions``), without waiting for
        those still in flight; when idle and at the end, all of it.
        """
        msgs = await self.gather(final)
        if not msgs:
            await self.flush()
            return 0
        self.busy = True
        try:
            inserts, rejects, positions = await self._prepare_sync(msgs)
            prev = self._inflight[-1][0] if self._inflight else None
            self._inflight.append(
                (asyncio.create_task(self._finish_batch(inserts, rejects, prev,
                                                        self._first_at)), positions)
            )
            while len(self._inflight) > _DEPTH:
                await self._await_oldest()
            if final:
                await self.flush()
            elif time.monotonic() - self._last_commit >= self.config.commit_ms / 1000:
                await self._commit_stored()
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
            await self._await_oldest()

    async def _await_oldest(self) -> None:
        task, positions = self._inflight.popleft()
        await task
        self._stored.update(positions)

    async def _commit_stored(self) -> None:
        """Commit the positions of the batches stored so far, leaving those in flight be."""
        while self._inflight and self._inflight[0][0].done():
            await self._await_oldest()  # raises what the batch raised
        consumer = self._consumer
        if self._stored and consumer is not None:
            fault_point("after-insert")
            positions, self._stored = self._stored, {}
            await self._commit(lambda: consumer.commit_positions(positions))
        self._last_commit = time.monotonic()

    async def store_batch(self, msgs: Records) -> None:
        """Store one batch completely (no commit): what a crash right after looks like."""
        await self._insert(await self._prepare(msgs))

    async def _prepare(self, msgs: Records) -> list[_Insert]:
        """Reconcile, convert, DLQ the rejects; return the inserts to run."""
        inserts, rejects, _ = await self._prepare_sync(msgs)
        await self._await_inflight()
        await self._dlq(rejects)
        return inserts

    async def _prepare_sync(
        self, msgs: Records
    ) -> tuple[list[_Insert], list[tuple[Message, str]], dict[tuple[str, int], int]]:
        """What must happen in order, before the next batch: reconcile, validate and build
        the inserts, advancing the expected offsets. Also returns the positions (next offset
        per topic partition) that storing this batch completes."""
        self._uncommitted = True
        partitions = await self._reconcile(msgs)
        with gc_paused():
            batches, rejects = self._convert(msgs)
            inserts = [self._build_insert(table, tb) for table, tb in batches.items()]
        return inserts, rejects, {k: self._next[k] for k in partitions}

    def _build_insert(self, table: str, tb: _TableBatch) -> _Insert:
        spec = tb.spec
        source = self.source(spec)
        token = batch_token(table, source, ((p, a, b) for p, (a, b) in tb.ranges.items()))
        n = len(tb.offsets)
        if spec.ingest is not None:  # JSON objects, parsed by ClickHouse
            objects, partitions, offsets = tb.rows, tb.partitions, tb.offsets
            return _Insert(
                table, token, n, ingest=spec.ingest,
                body=ingest_body(objects, partitions, offsets, source, spec.topic),
                canonical=lambda: canonical_body(objects, partitions, offsets, source,
                                                 spec.topic),
            )
        data: list[Any] = list(zip(*tb.rows, strict=True))  # columns as tuples
        tb.rows.clear()
        data.append(tb.partitions)
        data.append(tb.offsets)
        data.append([source] * n)
        return _Insert(table, token, n, columns=(*spec.columns, *COORDINATES), data=data)

    async def _dlq(self, rejects: list[tuple[Message, str]]) -> None:
        if rejects:
            records = [(m.topic.encode(), dlq_record(m.topic, m.partition, m.offset, reason,
                                                    m.value, m.key, component="sink"))
                       for m, reason in rejects]
            await self._retry(lambda: self.bus.send_many(self.dlq_topic, records),
                              f"DLQ {self.dlq_topic}")
            self.stats.rejected += len(rejects)
            for m, reason in rejects[:3]:
                log.warning("rejected %s[%d]@%d: %s", m.topic, m.partition, m.offset, reason)

    async def _finish_batch(
        self, inserts: list[_Insert], rejects: list[tuple[Message, str]],
        prev: asyncio.Task[None] | None, first_at: float = 0.0,
    ) -> None:
        """DLQ (overlapping the batch before), then insert after the batch before."""
        await self._dlq(rejects)
        if prev is not None:
            await prev
        await self._insert(inserts)
        if first_at:
            took = time.monotonic() - first_at
            self.latency[bisect.bisect_left(LATENCY_BOUNDS, took)] += 1
            self.latency_sum += took

    async def _insert(self, inserts: list[_Insert]) -> None:
        for ins in inserts:
            await self._retry(lambda i=ins: asyncio.to_thread(self._insert_one, i),
                              f"insert into {ins.table}")
            self.stats.stored[ins.table] = self.stats.stored.get(ins.table, 0) + ins.rows
            log.debug("stored %d rows in %s", ins.rows, ins.table)

    def _insert_one(self, ins: _Insert) -> None:
        if ins.ingest is None:
            assert ins.data is not None
            self.store.insert(ins.table, ins.columns, ins.data, ins.token)
            return
        try:
            self.store.insert_json(ins.ingest, ins.body, ins.token)
        except StoreError:
            if ins.canonical is not None:  # the next attempt sends only the sink's own JSON
                with gc_paused():
                    ins.body, ins.canonical = ins.canonical(), None
            raise

    def _convert(
        self, msgs: Records
    ) -> tuple[dict[str, _TableBatch], list[tuple[Message, str]]]:
        """Rows per table and rejects with reasons; skips offsets already stored."""
        batches: dict[str, _TableBatch] = {}
        rejects: list[tuple[Message, str]] = []
        for topic, group in msgs.by_topic().items():
            spec = self.specs[topic]
            replaying = self._skip and any((topic, p) in self._skip for p in set(group.partitions))
            if spec.convert_many is None or replaying:
                self._convert_each(group.messages(), batches, rejects)
            else:
                self._convert_many(spec, group, batches, rejects)
        return batches, rejects

    def _convert_many(
        self, spec: TableSpec, msgs: Records, batches: dict[str, _TableBatch],
        rejects: list[tuple[Message, str]],
    ) -> None:
        """The hot path: one topic, no replayed offsets, whole-batch conversion."""
        assert spec.convert_many is not None
        rows, bad = spec.convert_many(msgs.values, spec.topic)
        partitions, offsets = msgs.partitions, msgs.offsets
        first = dict(zip(reversed(partitions), reversed(offsets), strict=True))
        last = dict(zip(partitions, offsets, strict=True))
        topic = msgs.topics[0]
        for p, o in last.items():
            self._next[(topic, p)] = o + 1
        if bad:
            dropped = {i for i, _ in bad}
            rejects.extend((msgs.message(i), reason) for i, reason in bad)
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

    async def _reconcile_starts(self, starts: dict[tuple[str, int], int]) -> None:
        """Before the first batch: what is already stored at or after each assigned
        partition's start position. A partition whose records then begin there needs no
        query of its own in the middle of the pipeline."""
        by_table: dict[str, tuple[str, dict[int, int]]] = {}
        for (topic, p), first in starts.items():
            if topic in self.specs:
                by_table.setdefault(self.specs[topic].table, (topic, {}))[1][p] = first
        await self._query_stored(by_table, retry=False)  # ClickHouse away: not here
        for (topic, p), first in starts.items():
            if topic in self.specs:
                self._next[(topic, p)] = first

    async def _reconcile(self, msgs: Records) -> list[tuple[str, int]]:
        """Learn which offsets are already stored for partitions that did not continue where
        this process left off (start, restart, rebalance); :meth:`store_batch` skips them.
        Returns the batch's (topic, partition)s."""
        firsts = msgs.first_offsets()
        by_table: dict[str, tuple[str, dict[int, int]]] = {}
        seen_before = False
        for (topic, p), first in firsts.items():
            if self._next.get((topic, p)) == first:
                continue
            seen_before = seen_before or (topic, p) in self._seen
            self._skip.pop((topic, p), None)
            table = self.specs[topic].table
            by_table.setdefault(table, (topic, {}))[1][p] = first
        self._seen.update(firsts)
        if seen_before:  # batches in flight may hold it: the query must see what they store
            await self._await_inflight()
        await self._query_stored(by_table)
        return list(firsts)

    async def _query_stored(
        self, by_table: dict[str, tuple[str, dict[int, int]]], retry: bool = True
    ) -> None:
        if by_table:
            self.reconciles += 1
        for table, (topic, starts) in by_table.items():
            source = self.source(self.specs[topic])

            def query(t: str = table, src: str = source, s: dict[int, int] = starts) -> Any:
                return asyncio.to_thread(self.store.stored_offsets, t, src, s)

            found = await (self._retry(query, f"reading {table}") if retry else query())
            for p, offsets in found.items():
                if offsets:
                    log.info("%s[%d]: %d records from offset %d already stored; skipping them",
                             topic, p, len(offsets), starts[p])
                    self._skip[(topic, p)] = offsets
                    self._skip_max[(topic, p)] = max(offsets)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """The offset this sink processes next, per (topic, partition) it has positioned
        (what its consumer lag is measured from)."""
        return dict(self._next)

    def source(self, spec: TableSpec) -> str:
        """The log a row came from: offsets are unique only within it (``Bus.source_id``)."""
        return f"{self.bus.source_id}/{self.bus.topics.name(spec.topic)}"

    async def _commit(self, partial: Callable[[], Awaitable[None]] | None = None) -> None:
        assert self._consumer is not None
        try:
            if partial is not None:
                await partial()
            else:
                await self._consumer.commit()
                self._uncommitted = False
                self._stored.clear()
            self.stats.committed_at = time.time()
            self.failing = False
        except Exception as exc:  # e.g. a rebalance: the replay is reconciled, not duplicated
            self.failing = True
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
                result = await op()
                self.failing = False
                return result
            except (StoreError, BusError) as exc:
                self.failing = True
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
