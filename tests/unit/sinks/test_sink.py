"""The sink over the in-process bus into chDB: counts, DLQ, replay after a crash, outages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import parse_event
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.dsn import connect
from dnsflow.sinks.migrate import RETENTION_DAYS, TIME_COLUMNS, migrate
from dnsflow.sinks.sink import Sink
from dnsflow.sinks.store import Store, StoreError

CONFIG = SinkConfig(batch_rows=200, batch_ms=50, retry_initial_s=0.01, retry_max_s=0.02)


def count(store: Store, sql: str = "SELECT count() FROM dnsflow.dns_events") -> int:
    return store.client.query(sql).result_rows[0][0]


async def started_sink(store: Store, records: list[tuple[bytes, bytes]]
                       ) -> tuple[MemoryBus, Sink]:
    """A started sink on a fresh in-process bus whose events topic holds ``records``."""
    bus = MemoryBus()
    await bus.send_many(bus.topics.events, records)
    sink = Sink(bus, store, CONFIG)
    await sink.start()
    return bus, sink


async def drain(sink: Sink, rounds: int = 20) -> None:
    for _ in range(rounds):
        if not await sink.step(final=True):
            return


async def test_n_events_become_n_rows_and_poison_goes_to_dlq(store, events):
    bus, sink = await started_sink(store, [*events.encoded(500),
                                           (b"a", b'{"v": 1, "tenant": "a"}')])
    await drain(sink)
    assert count(store) == 500
    assert bus.count(bus.topics.dlq) == 1
    dlq = bus.consumer([bus.topics.dlq], None)
    await dlq.start()
    [msg] = await dlq.getmany(timeout_ms=100)
    body = orjson.loads(msg.value)
    assert body["source_topic"] == bus.topics.events and "ts: Field required" in body["reason"]
    assert orjson.loads(body["value"]) == {"v": 1, "tenant": "a"}
    assert msg.key == bus.topics.events.encode()


async def test_crash_after_insert_before_commit_does_not_duplicate(store, events):
    bus, first = await started_sink(store, events.encoded(300))
    msgs = await first.gather(final=True)
    await first.store_batch(msgs)  # stored ... and the process dies before commit
    assert count(store) == len(msgs) > 0
    await bus.send_many(bus.topics.events, events.encoded(100, start=300))

    second = Sink(bus, store, CONFIG)  # same group: starts at the committed offsets (none)
    await second.start()
    await drain(second)
    assert count(store) == 400
    assert second.stats.skipped_replayed == len(msgs)
    assert count(store, "SELECT uniqExact(kafka_partition, kafka_offset) "
                       "FROM dnsflow.dns_events") == 400
    # the per-minute and per-name rollups did not count the replay either
    assert count(store, "SELECT sum(queries) FROM dnsflow.dns_minute") == 400
    assert count(store, "SELECT sum(queries) FROM dnsflow.dns_names_hour") == 400


async def test_retried_insert_with_same_token_is_stored_once(store, events):
    _, sink = await started_sink(store, events.encoded(120))
    msgs = await sink.gather(final=True)
    inserts = await sink._prepare(msgs)
    await sink._insert(inserts)
    await sink._insert(inserts)  # outcome unknown the first time (e.g. timeout): sent again
    assert count(store) == len(msgs)
    assert count(store, "SELECT sum(queries) FROM dnsflow.dns_minute") == len(msgs)


async def test_a_new_in_process_bus_is_not_mistaken_for_a_replay(store, events):
    """Two `dnsflow demo` runs in one home: both buses start at offset 0."""
    for run in range(2):
        _, sink = await started_sink(store, events.encoded(150, start=run * 1000))
        await drain(sink)
        assert sink.stats.skipped_replayed == 0
    assert count(store) == 300
    assert count(store, "SELECT uniqExact(kafka_source) FROM dnsflow.dns_events") == 2


class FlakyStore(Store):
    """ClickHouse refusing the first ``failures`` inserts, as when the server is down."""

    def __init__(self, inner: Store, failures: int) -> None:
        super().__init__(inner.dsn, inner.client)
        self.failures = failures

    def _fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("insert into dnsflow.dns_events: Connection refused")

    def insert(self, *a, **kw):
        self._fail()
        return super().insert(*a, **kw)

    def insert_json(self, *a, **kw):
        self._fail()
        return super().insert_json(*a, **kw)


async def test_outage_backs_off_and_keeps_offsets_uncommitted(store, events):
    bus, sink = await started_sink(FlakyStore(store, failures=3), events.encoded(50))
    msgs = await sink.gather(final=True)
    task = asyncio.create_task(sink.store_batch(msgs))
    await asyncio.sleep(0.01)
    assert all(bus.committed(CONFIG.group, bus.topics.events, p) is None for p in range(3))
    await asyncio.wait_for(task, 5)
    await sink._commit()
    assert sink.stats.retries == 3 and "Connection refused" in sink.stats.last_error
    assert count(store) == 50


async def test_abandon_while_clickhouse_is_down_leaves_offsets_for_replay(store, events):
    bus, sink = await started_sink(FlakyStore(store, failures=10**6), events.encoded(20))
    run = asyncio.create_task(sink.run())
    await asyncio.sleep(0.2)
    sink.abandon()
    with pytest.raises(Exception, match="gave up while stopping"):
        await asyncio.wait_for(run, 5)
    assert all(bus.committed(CONFIG.group, bus.topics.events, p) is None for p in range(3))
    assert count(store) == 0


async def test_other_topics_land_in_their_tables(store):
    bus = MemoryBus()
    ts = int(time.time() * 1e6) - 60_000_000  # inside every table's retention
    await bus.send(bus.topics.telemetry, orjson.dumps({"ts": ts, "tenant": "a", "q": 1}))
    await bus.send(bus.topics.anomalies, orjson.dumps({
        "ts": ts, "kind": "dga", "tenant": "a", "severity": "high",
        "score": 0.9, "evidence": {"names": ["x.example"]}}))
    await bus.send(bus.topics.alerts, orjson.dumps({"ts": ts, "rule": "r1", "tenant": "a"}))
    await bus.send(bus.topics.name("policy_log"), orjson.dumps({
        "ts": ts, "tenant": "a", "version": 2, "hash": "h2",
        "previous_hash": "h1", "source": "yaml", "actor": "ops", "change": "+deny",
        "document": "{}"}))
    sink = Sink(bus, store, CONFIG)
    await sink.start()
    await drain(sink)
    for table in ("telemetry", "anomalies", "alerts", "policy_log"):
        assert count(store, f"SELECT count() FROM dnsflow.{table}") == 1, table
    assert store.client.query(
        "SELECT evidence FROM dnsflow.anomalies").result_rows[0][0] == '{"names":["x.example"]}'


def test_migrate_is_idempotent_and_retention_follows_config(chdb_dsn):
    client = connect(chdb_dsn)
    try:
        first = migrate(client)
        again = migrate(client, {"dns_events": 7, "policy_log": 4000})
        assert "002_dns_events.sql" in first.applied and again.applied == []
        assert sorted(again.retention) == ["dns_events", "policy_log"]
        assert migrate(client, {"dns_events": 7, "policy_log": 4000}).retention == []
        engines = dict(client.query("SELECT name, engine_full FROM system.tables "
                                    "WHERE database='dnsflow'").result_rows)
        want = {**RETENTION_DAYS, "dns_events": 7, "policy_log": 4000}
        for table, days in want.items():  # every stored table has its TTL
            assert f"toIntervalDay({days})" in engines[table], (table, engines[table])
        assert set(want) == set(TIME_COLUMNS)
        stored = {t for t, e in engines.items() if "MergeTree" in e} - {"schema_migrations"}
        assert stored == set(want)  # a new table needs a retention entry
    finally:
        client.close()


def _unusual_records(events) -> list[bytes]:
    """Values that must not be taken verbatim, or that the core model decides."""
    one = events.one
    recent_iso = datetime.fromtimestamp(time.time() - 60, UTC).isoformat().replace("+00:00", "Z")
    return [
        orjson.dumps(one(1, edge="edge-upper", qname="UPPER.Example..", qtype="aaaa",
                         rcode="nxdomain", pod="p-1", service_account="sa-1")),
        orjson.dumps(one(2, edge="edge-idn", qname="WWW.ÉXAMPLE.İstanbul.", answers=["ä.b"])),
        orjson.dumps(one(3, edge="edge-quote", qname='a"b\\c.Example', rule="tab\there")),
        orjson.dumps(one(4, edge="edge-iso", ts=recent_iso, latency_us=12.0,
                         pod=5, labels={"app": "web"}, policy_version="7")),
        orjson.dumps(one(5, edge="edge-missing")).replace(b',"rule":""', b""),
        orjson.dumps(one(6, edge="edge-uint64", policy_version=2**64 - 1)),
    ]


async def test_stored_rows_equal_their_events_field_by_field(store, events):
    """What a user reads back is what the core model makes of each record: verbatim values
    (parsed by ClickHouse), values the core model decides, non-ASCII and escaped values
    (canonical JSON), and a batch ClickHouse refuses verbatim (a duplicate key, which
    msgspec and the core model accept, the last value winning)."""
    bus = MemoryBus()
    sink = Sink(bus, store, CONFIG)
    await sink.start()
    raws = [orjson.dumps(events.one(i, edge=f"edge-{i}")) for i in range(150)]
    raws[70:70] = _unusual_records(events)
    await bus.send_many(bus.topics.events, [(b"k%d" % i, r) for i, r in enumerate(raws)])
    await bus.send(bus.topics.events, b'{"v": 1, "ts": "soon"}')
    await drain(sink)
    dup = orjson.dumps(events.one(9, edge="edge-dup", latency_us=1)).replace(
        b'"latency_us":1,', b'"latency_us":1,"latency_us":2,')
    assert dup.count(b"latency_us") == 2
    more = [orjson.dumps(events.one(i, edge=f"edge-{i}")) for i in range(150, 160)] + [dup]
    await bus.send_many(bus.topics.events, [(b"m%d" % i, r) for i, r in enumerate(more)])
    await drain(sink)
    raws += more
    assert sink.stats.rejected == 1 and sink.stats.retries == 1  # the refused verbatim body

    names = ("ts", "tenant", "namespace", "pod", "service_account", "edge", "client_ip",
             "transport", "qname", "qtype", "rcode", "answers", "latency_us", "cache",
             "decision", "rule", "policy_version", "upstream", "v", "extra")
    rows = store.client.query(
        "SELECT toUnixTimestamp64Micro(ts), " + ", ".join(names[1:]) + " FROM dnsflow.dns_events"
    ).result_rows
    stored = {r[5]: dict(zip(names, r, strict=True)) for r in rows}
    assert len(stored) == len(rows) == len(raws)
    core_fields = set(names) - {"extra"}
    for raw in raws:
        model = parse_event(raw).model_dump()
        extra = {k: v for k, v in model.items() if k not in core_fields}
        want = {k: model.get(k, "") for k in names if k != "extra"}
        want["pod"], want["service_account"] = (
            v if isinstance(v, str) else orjson.dumps(v).decode()
            for v in (model.get("pod", ""), model.get("service_account", "")))
        got = dict(stored[model["edge"]])
        assert (orjson.loads(got.pop("extra")) if extra else got.pop("extra")) == (extra or "")
        assert got == want, model["edge"]
    assert stored["edge-upper"]["qname"] == "upper.example"
    assert stored["edge-idn"]["qname"] == "www.éxample.i̇stanbul"
    assert stored["edge-dup"]["latency_us"] == 2
    assert stored["edge-uint64"]["policy_version"] == 2**64 - 1


async def test_idle_sink_commits_without_being_stopped(store, events):
    bus = MemoryBus()
    sink = Sink(bus, store, SinkConfig(batch_rows=1000, batch_ms=50, commit_ms=60_000))
    await sink.start()
    run = asyncio.create_task(sink.run())
    try:
        await bus.send_many(bus.topics.events, events.encoded(90))
        for _ in range(100):  # bounded: 5 s
            committed = sum(bus.committed(CONFIG.group, bus.topics.events, p) or 0
                            for p in range(3))
            if committed == 90:
                break
            await asyncio.sleep(0.05)
        assert committed == 90 and count(store) == 90
    finally:
        await sink.stop()
        await asyncio.wait_for(run, 5)
