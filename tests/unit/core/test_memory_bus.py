"""The in-process bus keeps Kafka's semantics the components rely on."""

from __future__ import annotations

import asyncio

import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.topics import Topics


async def _drain(consumer, rounds: int = 5):
    out = []
    for _ in range(rounds):
        batch = await consumer.getmany(timeout_ms=20)
        if not batch:
            break
        out.extend(batch)
    return out


async def test_records_with_one_key_stay_in_order_on_one_partition():
    bus = MemoryBus(Topics("x."))
    await bus.send_many("x.events", [(b"shop", b"%d" % i) for i in range(50)])
    c = bus.consumer(["x.events"], None)
    await c.start()
    got = await _drain(c)
    assert [m.value for m in got] == [b"%d" % i for i in range(50)]
    assert len({m.partition for m in got}) == 1
    assert [m.offset for m in got] == list(range(50))


async def test_group_resumes_from_committed_offset_and_uncommitted_is_redelivered():
    bus = MemoryBus(Topics("x."))
    await bus.send_many("x.events", [(b"t", b"a"), (b"t", b"b")])
    c1 = bus.consumer(["x.events"], "sink")
    await c1.start()
    assert [m.value for m in await _drain(c1)] == [b"a", b"b"]
    await c1.commit()
    await bus.send_many("x.events", [(b"t", b"c")])
    c2 = bus.consumer(["x.events"], "sink")
    await c2.start()
    assert [m.value for m in await _drain(c2)] == [b"c"]  # no commit: c is redelivered
    c3 = bus.consumer(["x.events"], "sink")
    await c3.start()
    assert [m.value for m in await _drain(c3)] == [b"c"]


async def test_compacted_topic_read_from_start_keeps_newest_per_key():
    bus = MemoryBus(Topics("x."))
    await bus.send_many("x.policies", [(b"shop", b"v1"), (b"pay", b"p1"), (b"shop", b"v2")])
    c = bus.consumer(["x.policies"], None)
    await c.start()
    got = {m.key: m.value for m in await _drain(c)}
    assert got == {b"shop": b"v2", b"pay": b"p1"}
    assert bus.count("x.policies") == 3


async def test_reader_from_end_sees_only_new_records_and_waits_for_them():
    bus = MemoryBus(Topics("x."))
    await bus.send("x.alerts", b"old", key=b"r")
    c = bus.consumer(["x.alerts"], None, from_beginning=False)
    await c.start()
    assert await c.getmany(timeout_ms=10) == []
    await bus.send("x.alerts", b"new", key=b"r")
    assert [m.value for m in await c.getmany(timeout_ms=100)] == [b"new"]


def test_each_in_process_bus_is_its_own_offset_source():
    assert MemoryBus().source_id != MemoryBus().source_id


async def test_cancelling_a_waiting_reader_cancels_it():
    bus = MemoryBus(Topics("x."))
    c = bus.consumer(["x.events"], "g")
    await c.start()
    for _ in range(20):  # cancellation must win every time, whatever the timing
        task = asyncio.create_task(c.getmany(timeout_ms=5_000))
        await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
