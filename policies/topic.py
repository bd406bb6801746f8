"""Read the compacted policies topic to its current end: what is published right now.

The bus API has no 'end offsets', so for Kafka this uses aiokafka directly (assign, seek
to beginning, read up to the end offsets captured at the start); for the in-process bus a
zero-timeout poll until empty is exact.
"""

from __future__ import annotations

import asyncio
import time

from dnsflow.bus import Bus
from dnsflow.bus.base import BusError


async def read_compacted(bus: Bus, topic: str, timeout_s: float = 15.0
                         ) -> dict[str, bytes | None]:
    """Latest value per key (``None`` for a tombstone), in offset order of arrival."""
    bootstrap = getattr(bus, "bootstrap", None)
    if isinstance(bootstrap, str):
        return await _read_kafka(bootstrap, topic, timeout_s)
    return await _read_generic(bus, topic, timeout_s)


async def _read_generic(bus: Bus, topic: str, timeout_s: float) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    consumer = bus.consumer([topic], None, from_beginning=True)
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=0, max_records=10_000)
            if not batch:
                break
            for m in batch:
                if m.key is not None:
                    out[m.key.decode("utf-8", "replace")] = m.value
    finally:
        await consumer.stop()
    return out


async def _read_kafka(bootstrap: str, topic: str, timeout_s: float) -> dict[str, bytes | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    out: dict[str, bytes | None] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise BusError(f"kafka {bootstrap}: {exc}") from exc
    try:
        # the consumer's public metadata only covers subscribed topics; ask the cluster
        meta = await consumer._client.fetch_all_metadata()
        ids = meta.partitions_for_topic(topic)
        if not ids:
            return out
        tps = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            if time.monotonic() > deadline:
                raise BusError(f"kafka {bootstrap}: reading {topic} to its end took more "
                               f"than {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for _tp, records in batches.items():
                for r in records:
                    if r.key is not None:
                        out[r.key.decode("utf-8", "replace")] = r.value
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out


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
