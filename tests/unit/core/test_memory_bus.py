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


async def test_retention_is_bounded_oldest_first_and_offsets_stay_absolute():
    # issue #11: the embedded bus kept every event in memory
    bus = MemoryBus(Topics("x."), partitions=1, retain_records=100, retain_bytes=0)
    c = bus.consumer(["x.events"], "slow")
    await c.start()
    for i in range(10):
        await bus.send_many("x.events", [(b"t", b"%d" % (i * 100 + j)) for j in range(100)])
    log = bus.topic("x.events").partitions[0]
    assert 90 <= len(log) <= 100
    assert log[-1].offset == 999 and log[0].offset == 1000 - len(log)
    assert bus.count("x.events") == 1000
    # the consumer that fell behind skips ahead to the oldest kept record, and says so
    got = await _drain(c, rounds=3)
    assert [m.offset for m in got] == list(range(1000 - len(log), 1000))
    assert c.skipped == 1000 - len(log) == bus.skipped
    assert bus.stats()["x.events"]["trimmed"] == 1000 - len(log)


async def test_retention_in_bytes():
    bus = MemoryBus(Topics("x."), partitions=1, retain_records=0, retain_bytes=50_000)
    await bus.send_many("x.events", [(b"t", b"x" * 800) for _ in range(1000)])
    st = bus.stats()["x.events"]
    assert st["written"] == 1000 and st["bytes"] <= 50_000 and st["kept"] >= 40


async def test_compacted_topic_keeps_the_newest_of_every_key_past_the_bound():
    bus = MemoryBus(Topics("x."), partitions=1, retain_records=10, retain_bytes=0)
    for round_ in range(5):
        await bus.send_many("x.policies", [(b"k%d" % k, b"v%d" % round_) for k in range(8)])
    c = bus.consumer(["x.policies"], None)
    await c.start()
    got = await _drain(c)
    assert {m.key: m.value for m in got} == {b"k%d" % k: b"v4" for k in range(8)}
    assert len(bus.topic("x.policies").partitions[0]) <= 10
    assert c.skipped == 0


async def test_default_bound_and_environment(monkeypatch):
    assert MemoryBus(Topics("x.")).retain_records == 50_000
    monkeypatch.setenv("DNSFLOW_MEMORY_BUS_RETAIN_RECORDS", "7")
    assert MemoryBus(Topics("x.")).retain_records == 7
