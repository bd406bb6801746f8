"""Events are never lost: spooled in order while the bus fails, drained when it returns,
dropped (and counted) only beyond the spool limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from dnsflow.bus import BusError
from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.telemetry import EventPublisher, Spool
from dnsflow.edge.telemetry.spool import SpoolBusy
from dnsflow.topics import Topics
from tests.helpers.waiting import until


class FlakyBus(MemoryBus):
    def __init__(self) -> None:
        super().__init__(Topics("t."))
        self.down = False

    async def send_many(self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
                        ) -> None:
        if self.down:
            raise BusError("broker unreachable (test)")
        await super().send_many(topic, records)

    def values(self) -> list[dict]:
        t = self.topic("t.events")
        values = [orjson.loads(m.value) for p in t.partitions for m in p]
        return sorted(values, key=lambda v: v["ts"])


def ev(i: int, tenant: str = "shop") -> tuple:
    return (i, tenant, "ns", "pod", "sa", "10.0.0.1", "udp", f"n{i}.example", "A", "NOERROR",
            [], 10, "miss", "allow", "", 0, "udp://127.0.0.1:53")


async def test_outage_spools_in_order_and_drains(tmp_path: Path) -> None:
    bus = FlakyBus()
    pub = EventPublisher(bus, Spool(tmp_path / "spool"), edge="e1", drain_interval=0.05)
    await pub.start()
    for i in range(100):
        pub.emit(ev(i))
    await until(lambda: pub.published == 100)
    bus.down = True
    for i in range(100, 400):
        pub.emit(ev(i))
    await until(lambda: pub.spooled == 300)
    assert pub.status()["spool_pending"] == 300
    assert not pub.kafka_ok
    bus.down = False
    await until(lambda: pub.published == 400)
    await pub.stop()
    got = [e["ts"] for e in bus.values()]
    assert got == list(range(400))          # each event once, in order
    assert pub.dropped == 0 and pub.status()["spool_pending"] == 0
    assert not list((tmp_path / "spool").glob("*.seg"))


async def test_stop_while_down_spools_everything_and_restart_drains(tmp_path: Path) -> None:
    bus = FlakyBus()
    bus.down = True
    pub = EventPublisher(bus, Spool(tmp_path / "spool"), edge="e1", drain_interval=0.05)
    await pub.start()
    for i in range(50):
        pub.emit(ev(i))
    await pub.stop()
    assert pub.status()["spool_pending"] == 50 and pub.dropped == 0
    bus.down = False
    pub2 = EventPublisher(bus, Spool(tmp_path / "spool"), edge="e1", drain_interval=0.05)
    await pub2.start()
    await until(lambda: pub2.published == 50)
    await pub2.stop()
    assert [e["ts"] for e in bus.values()] == list(range(50))


async def test_spool_limit_drops_loudly(tmp_path: Path, caplog) -> None:
    bus = FlakyBus()
    bus.down = True
    pub = EventPublisher(bus, Spool(tmp_path / "spool", limit_bytes=20_000), edge="e1")
    await pub.start()
    for i in range(500):
        pub.emit(ev(i))
    await until(lambda: pub.spooled + pub.dropped == 500)
    await pub.stop()
    assert pub.dropped > 0 and pub.spooled > 0
    assert any(r.levelname == "ERROR" and "dropped" in r.getMessage() for r in caplog.records)


async def test_stop_with_a_hung_send_spools_the_batch_in_flight(tmp_path: Path) -> None:
    class HangingBus(FlakyBus):
        async def send_many(self, topic, records):  # a broker that never acknowledges
            await asyncio.sleep(3600)

    pub = EventPublisher(HangingBus(), Spool(tmp_path / "spool"), edge="e1", batch=10)
    await pub.start()
    for i in range(25):
        pub.emit(ev(i))
    await asyncio.sleep(0.1)            # the pump is now stuck in send_many
    await pub.stop(timeout=1.0)
    assert pub.status()["spool_pending"] == 25 and pub.dropped == 0 and not pub.queue
    records, _ = Spool(tmp_path / "spool").peek(100)
    assert sorted(orjson.loads(v)["ts"] for _, v in records) == list(range(25))


def test_a_spool_directory_has_one_writer(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    with pytest.raises(SpoolBusy, match="in use by another process"):
        Spool(tmp_path / "spool")
    first.close()
    Spool(tmp_path / "spool").close()   # free again once closed


def hit_template(pub: EventPublisher, i: int) -> tuple[bytes, bytes]:
    return pub.template(("shop", "ns", "pod", "sa", "10.0.0.1", "udp", f"n{i}.example", "A",
                         "NOERROR", [f"A 10.0.0.{i}"], "hit", "allow", "", 3, "udp://u"))


def test_batched_hit_events_encode_exactly_like_single_ones(tmp_path: Path) -> None:
    from dnsflow.schema import parse_event

    pub = EventPublisher(FlakyBus(), Spool(tmp_path / "spool"), edge="e1")
    tpls = [hit_template(pub, i) for i in range(5)]
    batched = pub.encode([(1_700_000_000_000_000, 7, tpls)])
    single = pub.encode([(1_700_000_000_000_000, 7, t) for t in tpls])
    assert batched == single  # byte for byte
    for i, (key, value) in enumerate(batched):
        e = parse_event(value)
        assert key == b"shop" and e.qname == f"n{i}.example" and e.latency_us == 7
        assert e.ts == 1_700_000_000_000_000 and e.answers == [f"A 10.0.0.{i}"]
        assert orjson.loads(value)["v"] == 1 and e.edge == "e1"
    pub.spool.close()


async def test_batched_hits_count_against_the_queue_bound_and_are_never_lost(
        tmp_path: Path) -> None:
    bus = FlakyBus()
    bus.down = True
    pub = EventPublisher(bus, Spool(tmp_path / "spool"), edge="e1", max_queue=100,
                         drain_interval=0.05)
    tpls = [hit_template(pub, i) for i in range(40)]
    for b in range(10):  # 400 events in 10 queue items: the bound (100 events) spills
        pub.emit_many(b, 1, tpls)
    assert pub.status()["queue"] <= 100 + 40
    assert pub.spooled > 0
    bus.down = False
    await pub.start()
    await until(lambda: pub.published == 400)
    await pub.stop()
    got = bus.values()
    assert len(got) == 400 and pub.dropped == 0
    assert [e["ts"] for e in got] == sorted(b for b in range(10) for _ in range(40))


async def test_ready_records_are_one_queue_item_counted_and_never_lost(tmp_path: Path) -> None:
    """``emit_records`` (the tap: one read's events as one item): the records go out as
    they are, in order, count against the queue bound, and spool like any other event."""
    from dnsflow.edge.telemetry.rdkafka import RdKafkaPublisher

    bus = FlakyBus()
    bus.down = True
    pub = EventPublisher(bus, Spool(tmp_path / "spool"), edge="e1", max_queue=100,
                         drain_interval=0.05)
    tpl = hit_template(pub, 1)

    def recs(b: int) -> list[tuple[bytes, bytes]]:
        return [(tpl[0], b'{"ts":%d,"latency_us":%d%b' % (b, i, tpl[1])) for i in range(40)]

    assert pub.encode([(recs(7),)]) == recs(7)  # byte for byte
    assert RdKafkaPublisher._messages(pub, [(recs(7),)]) == [  # type: ignore[arg-type]
        {"key": k, "value": v} for k, v in recs(7)]
    pub.emit(ev(0))
    for b in range(1, 11):  # 400 events in 10 queue items: the bound (100 events) spills
        pub.emit_records(recs(b))
    assert pub.emitted == 401 and pub.status()["queue"] <= 100 + 40 and pub.spooled > 0
    bus.down = False
    await pub.start()
    await until(lambda: pub.published == 401)
    await pub.stop()
    got = bus.values()
    assert len(got) == 401 and pub.dropped == 0
    assert [(e["ts"], e["latency_us"]) for e in got[1:]] == [
        (b, i) for b in range(1, 11) for i in range(40)]
