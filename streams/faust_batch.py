"""Batch delivery for faust: the firehose topic skips faust's per-record path.

faust-streaming hands every fetched record to its Conductor one at a time: a ``Message``, an
``Event``, a channel queue, and an ``asyncio.wait`` over two new tasks per record
(``Consumer._drain_messages``). That costs ~70 µs per record, so a worker tops out at
~10-14k records/s whatever its agent does (``bench.streams``' count-only peer shows it).

For the events topic we keep everything else faust does -- group membership and rebalancing,
partition assignment co-partitioned with the state table, table recovery before input flows,
the commit timer, the producer, timers -- and replace only the delivery: each fetched batch
of a registered topic goes to one handler as ``(partition, offset, key, value)`` rows, and
its offsets become committable when the app says so with :meth:`BatchConsumer.mark_committable`
(the streams app does it when a checkpoint holding them is written, so a restarted worker reads
exactly what its checkpoint does not include). Records of every other topic (table
changelogs) still take faust's own path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

Row = tuple[int, int, bytes | None, bytes | None]
"""One record of a batch: partition, offset, key, value."""

BatchHandler = Callable[[str, list[Row]], Awaitable[None]]


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with whole-batch delivery for the app's batch topics."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._processed: dict[TP, int] = {}  # last committable offset per batch partition

    def _batch_handlers(self) -> dict[str, BatchHandler]:
        return getattr(self.app, "batch_handlers", {})

    def mark_committable(self, tp: TP, offset: int) -> None:
        """Records of ``tp`` up to ``offset`` are safely processed: commit them."""
        if offset > self._processed.get(tp, -1):
            self._processed[tp] = offset

    def _new_offset(self, tp: TP) -> int | None:
        # Batch topics are processed in offset order: the next offset to commit is one past
        # the last record the app marked committable.
        if tp.topic in self._batch_handlers():
            done = self._processed.get(tp)
            return None if done is None else done + 1
        return super()._new_offset(tp)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        # faust commits only partitions with acked messages; batch partitions have none
        pending = set(super()._filter_tps_with_pending_acks(topics))
        pending.update(tp for tp in self._processed
                       if topics is None or tp in topics or tp.topic in topics)
        return iter(pending)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)
        for tp in revoked:
            self._processed.pop(tp, None)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - faust loop
        """faust's fetch loop, with one handler call per batch for the batch topics."""
        handlers = self._batch_handlers()
        callback = self.callback
        read_offset = self._read_offset
        fetcher_stopped = fetcher._stopped.is_set
        consumer_stopped = self._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()  # as faust does: back to committed offsets
                    continue
                generation = self.app.consumer_generation_id
                batches: dict[str, list[Row]] = {}
                last: dict[TP, int] = {}
                others: list[tuple[TP, Any]] = []
                for tp, recs in records.items():
                    if not (active is None or tp in active or tp in self._buffered_partitions):
                        continue
                    if tp.topic not in handlers:
                        others.extend((tp, r) for r in recs)
                        continue
                    start = read_offset[tp]
                    part = tp.partition
                    rows = [(part, r.offset, r.key, r.value) for r in recs
                            if start is None or r.offset >= start]
                    if rows:
                        batches.setdefault(tp.topic, []).extend(rows)
                        last[tp] = rows[-1][1]
                        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                for topic, rows in batches.items():
                    if self.app.consumer_generation_id != generation or not self.flow_active:
                        break  # a rebalance started: these records are read again
                    # awaited whole, never cancelled by a starting rebalance: a half-handled
                    # batch would leave offsets marked done for events not yet in the state
                    await handlers[topic](topic, rows)
                    for tp, offset in last.items():
                        if tp.topic == topic:
                            read_offset[tp] = offset
                for tp, record in others:
                    if self.app.consumer_generation_id != generation:
                        break
                    message = self._to_message(tp, record)
                    start = read_offset[tp]
                    if start is None or message.offset >= start:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                        read_offset[tp] = message.offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


class BatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport, creating :class:`BatchConsumer` consumers."""

    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A faust app whose topics in ``batch_handlers`` are delivered in whole batches."""

    batch_handlers: dict[str, BatchHandler]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = {}

    def batch_topic(self, topic: faust.TopicT, handler: BatchHandler) -> None:
        """Subscribe ``topic`` and hand its records to ``handler`` batch by batch."""
        self.batch_handlers[topic.get_topic_name()] = handler
        self.topics.add(topic)

    def _new_transport(self) -> BatchTransport:
        return BatchTransport(self.conf.broker_consumer, self)
