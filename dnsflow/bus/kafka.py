"""Apache Kafka bus through aiokafka.

The producer batches (``linger_ms``) and compresses; :meth:`KafkaBus.send_many` waits for
acknowledgements so callers know what to spool. Topics are created on start with the
contract's configs (the policy topic compacted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from dnsflow.bus.base import Bus, BusError, Consumer, Message
from dnsflow.topics import Topics

log = logging.getLogger(__name__)


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
    ) -> None:
        super().__init__(topics)
        self.bootstrap = bootstrap
        self._events_partitions = events_partitions
        self._linger_ms = linger_ms
        self._request_timeout_ms = request_timeout_ms
        self._create_topics = create_topics
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
            acks=1,
            request_timeout_ms=self._request_timeout_ms,
            enable_idempotence=False,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise BusError(f"kafka {self.bootstrap}: {exc}") from exc

    async def ensure_topics(self) -> None:
        """Create the contract topics that are missing (safe to call on every start)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=self._request_timeout_ms
        )
        try:
            await admin.start()
        except KafkaError as exc:
            await admin.close()
            raise BusError(f"kafka {self.bootstrap}: {exc}") from exc
        try:
            cluster = await admin.describe_cluster()
            if cluster.get("cluster_id"):
                self.source_id = f"kafka:{cluster['cluster_id']}"
            existing = set(await admin.list_topics())
            new = [
                NewTopic(s.name, s.partitions, 1, topic_configs=s.configs)
                for s in self.topics.specs(self._events_partitions)
                if s.name not in existing
            ]
            if new:
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
        finally:
            await admin.close()

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
