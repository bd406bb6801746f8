"""Apache Kafka bus through aiokafka.

The producer batches (``linger_ms``) and compresses; :meth:`KafkaBus.send_many` waits for
acknowledgements so callers know what to spool. It is idempotent with ``acks=all``: a record
counts as written once every in-sync replica has it (at least ``min.insync.replicas``), and a
retry after a lost acknowledgement or a leader change is not written twice. Topics are
created on start with the contract's configs (the policy topic compacted), the replication
factor ``replication`` and ``min.insync.replicas`` = ``min_insync``; :meth:`create_topics` is
the one place dnsflow creates topics. The admin calls every component needs
(:meth:`KafkaBus.create_topics`, :meth:`~KafkaBus.partition_count`,
:meth:`~KafkaBus.end_offsets`) live here, so no component opens an admin client of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from dnsflow.bus.base import Bus, BusError, Consumer, Message, Positions
from dnsflow.topics import Topics, TopicSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


class KafkaBus(Bus):
    def __init__(
        self,
        bootstrap: str,
        topics: Topics | None = None,
        *,
        events_partitions: int = 6,
        linger_ms: int = 5,
        request_timeout_ms: int = 10_000,
        create_topics: bool = True,
        replication: int = 1,
        min_insync: int = 1,
    ) -> None:
        if not 1 <= min_insync <= replication:
            raise ValueError(f"kafka topics: min.insync.replicas {min_insync} must be between 1 "
                             f"and the replication factor {replication}")
        super().__init__(topics)
        self.bootstrap = bootstrap
        self._events_partitions = events_partitions
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._create_topics = create_topics
        self.replication = replication
        self.min_insync = min_insync
        self._producer: AIOKafkaProducer | None = None
        self.source_id = f"kafka:{bootstrap}"

    async def start(self) -> None:
        if self._create_topics:
            await self.ensure_topics()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            linger_ms=self._linger_ms,
            max_batch_size=256 * 1024,
            compression_type="lz4",
            # every in-sync replica has it (>= min.insync.replicas), and a retry after a lost
            # acknowledgement or a leader change is deduplicated by the broker
            acks="all",
            request_timeout_ms=self._request_timeout_ms,
            enable_idempotence=True,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise BusError(f"kafka {self.bootstrap}: {exc}") from exc

    async def ensure_topics(self) -> None:
        """Create the contract topics that are missing (safe to call on every start)."""
        await self.create_topics(self.topics.specs(self._events_partitions), cluster_id=True)

    async def _admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=self._request_timeout_ms
        )
        try:
            await admin.start()
        except KafkaError as exc:
            await admin.close()
            raise BusError(f"kafka {self.bootstrap}: {exc}") from exc
        return admin

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """``op()``, again while it fails with a retriable Kafka error (bounded: three request
        timeouts). A broker that just died stays in the metadata until the controller fences
        it (``broker.session.timeout.ms``), so admin requests routed to it fail for a while
        during a failover. What still fails is a :class:`BusError` naming ``what``."""
        deadline = time.monotonic() + 3 * self._request_timeout_ms / 1000
        while True:
            try:
                return await op()
            except KafkaError as exc:
                if exc.retriable and time.monotonic() < deadline:
                    log.info("kafka %s: %s: %r; retrying", self.bootstrap, what, exc)
                    await asyncio.sleep(0.5)
                    continue
                raise BusError(f"kafka {self.bootstrap}: {what}: {exc}") from exc

    async def create_topics(self, specs: Iterable[TopicSpec], *, cluster_id: bool = False
                            ) -> None:
        """Create the missing ones of ``specs`` with replication factor ``replication`` and
        ``min.insync.replicas`` = ``min_insync`` (unless a spec sets its own); topics that
        exist are left as they are. ``cluster_id``: also learn the cluster's id for
        :attr:`source_id`. A cluster with fewer brokers than ``replication`` is a
        :class:`BusError` saying so."""
        specs = list(specs)
        names = ", ".join(s.name for s in specs)
        await self._retrying(f"creating topics {names}",
                             lambda: self._create_topics_once(specs, cluster_id))

    async def _create_topics_once(self, specs: list[TopicSpec], cluster_id: bool) -> None:
        admin = await self._admin()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(s.name, s.partitions, self.replication,
                            topic_configs={"min.insync.replicas": str(self.min_insync),
                                           **s.configs})
                   for s in specs if s.name not in existing]
            if cluster_id or (new and self.replication > 1):
                cluster = await admin.describe_cluster()
                if cluster.get("cluster_id"):
                    self.source_id = f"kafka:{cluster['cluster_id']}"
                brokers = len(cluster.get("brokers") or ())
                if new and brokers < self.replication:
                    raise BusError(
                        f"kafka {self.bootstrap}: topics need replication factor "
                        f"{self.replication} (kafka_replication, DNSFLOW_KAFKA_REPLICATION, "
                        f"--kafka-replication) but the cluster has {brokers} broker(s) up: "
                        f"cannot create {', '.join(t.name for t in new)}")
            if new:
                try:
                    response = await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    response = None
                # aiokafka returns per-topic errors instead of raising them
                refused = [(t[0], t[1], t[2] if len(t) > 2 else None)
                           for t in getattr(response, "topic_errors", ())
                           if t[1] not in (0, TopicAlreadyExistsError.errno)]
                if refused:
                    name, code, message = refused[0]
                    raise BusError(f"kafka {self.bootstrap}: creating topic {name} "
                                   f"(replication {self.replication}, min.insync.replicas "
                                   f"{self.min_insync}): {for_code(code).__name__}"
                                   f"{': ' + message if message else ''}")
                # created is not yet visible: wait until the metadata has them (bounded)
                deadline = time.monotonic() + self._request_timeout_ms / 1000
                for t in new:
                    while (await self._partitions(admin, t.name) is None
                           and time.monotonic() < deadline):
                        await asyncio.sleep(0.05)
        finally:
            await admin.close()

    async def _partitions(self, admin: AIOKafkaAdminClient, topic: str) -> list[int] | None:
        (meta,) = await admin.describe_topics([topic])
        if meta.get("error_code") or not meta.get("partitions"):
            return None
        return sorted(p["partition"] for p in meta["partitions"])

    async def _partition_ids(self, topic: str) -> list[int] | None:
        """The topic's partition ids through a short-lived admin client (None: no topic)."""
        async def once() -> list[int] | None:
            admin = await self._admin()
            try:
                return await self._partitions(admin, topic)
            finally:
                await admin.close()

        return await self._retrying(f"describing {topic}", once)

    async def partition_count(self, topic: str) -> int | None:
        ids = await self._partition_ids(topic)
        return None if ids is None else len(ids)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        ids = await self._partition_ids(topic)
        if not ids:
            return {}

        async def once() -> dict[TopicPartition, int]:
            reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                      enable_auto_commit=False,
                                      request_timeout_ms=self._request_timeout_ms)
            try:
                await reader.start()
                return await reader.end_offsets([TopicPartition(topic, p) for p in ids])
            finally:
                await reader.stop()

        ends = await self._retrying(f"end offsets of {topic}", once)
        return {tp.partition: off for tp, off in ends.items()}

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send_many(
        self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> None:
        if self._producer is None:
            raise BusError("kafka bus is not started")
        try:
            futures = [
                await self._producer.send(topic, value=value, key=key) for key, value in records
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
        except KafkaError as exc:
            raise BusError(f"kafka {self.bootstrap} {topic}: {exc}") from exc
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise BusError(f"kafka {self.bootstrap} {topic}: {len(failed)} not delivered "
                           f"({failed[0]!r})")

    def consumer(
        self, topics: Iterable[str], group: str | None, *, from_beginning: bool = True
    ) -> Consumer:
        return KafkaConsumer(self.bootstrap, list(topics), group, from_beginning)


class KafkaConsumer(Consumer):
    def __init__(
        self, bootstrap: str, topics: list[str], group: str | None, from_beginning: bool
    ) -> None:
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_poll_records=5000,
            fetch_max_wait_ms=100,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1000,
        )
        self._returned: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def getmany(self, timeout_ms: int = 1000, max_records: int = 1000) -> list[Message]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Message] = []
        for tp, records in batches.items():
            for r in records:
                out.append(Message(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp))
            if records:
                self._returned[tp] = records[-1].offset + 1
        return out

    async def commit(self) -> None:
        if self._returned:
            await self._consumer.commit(dict(self._returned))

    async def seek_to_end(self) -> None:
        await self._consumer.seek_to_end()

    async def commit_positions(self, positions: Positions) -> None:
        if positions:
            await self._consumer.commit({TopicPartition(t, p): o
                                         for (t, p), o in positions.items()})

    async def position(self, topic: str, partition: int) -> int:
        tp = TopicPartition(topic, partition)
        if tp not in self._consumer.assignment():
            return -1
        return await self._consumer.position(tp)
