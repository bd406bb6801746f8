"""Reading a topic to the end, and what a consumer group has committed: for tests that check
outputs and that offsets follow them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from dnsflow.bus.kafka import KafkaBus


async def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of ``group``'s committed offsets on ``topic`` (0 before the group exists)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:  # the group is not there yet
        return 0
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offsets.items() if tp.topic == topic and m.offset > 0)


async def read(bus: KafkaBus, short: str, want: int = 1, seconds: float = 30.0) -> list[Any]:
    """The records of topic ``short`` from the start: at least ``want`` (then a moment more
    for stragglers), or what arrived within ``seconds``."""
    c = bus.consumer([bus.topics.name(short)], None)
    await c.start()
    out: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while loop.time() < deadline:
            out.extend(await c.getmany(timeout_ms=300, max_records=1000))
            if len(out) >= want:
                more = await c.getmany(timeout_ms=300, max_records=1000)
                out.extend(more)
                if not more:
                    break
    finally:
        await c.stop()
    return out
