"""Every query in docs/queries.md runs against the schema and answers the question it names."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.sinks.config import SinkConfig
from dnsflow.sinks.dsn import parse
from dnsflow.sinks.migrate import migrate
from dnsflow.sinks.query import run_sql
from dnsflow.sinks.sink import Sink
from dnsflow.sinks.store import Store

DOC = Path(__file__).resolve().parents[3] / "docs" / "queries.md"


def doc_queries() -> dict[str, str]:
    """heading -> SQL (the first block under each heading)."""
    out: dict[str, str] = {}
    heading = ""
    for part in re.split(r"(^## .*$)", DOC.read_text(), flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        for i, sql in enumerate(re.findall(r"```sql\n(.*?)```", part, flags=re.S)):
            out[heading + (f" #{i + 1}" if i else "")] = sql
    return out


@pytest.fixture
async def stored(chdb_dsn, events):
    store = Store(parse(chdb_dsn))
    migrate(store.client)
    bus = MemoryBus()
    records = events.encoded(300)
    records += [(b"tenant-01", orjson.dumps(events.one(
        1000 + i, tenant="tenant-01", pod="web-0039-1ec6c", qname="db.tenant-2.svc.cluster.local",
        decision="deny", rule="isolation:tenant-01", rcode="NXDOMAIN"))) for i in range(4)]
    records += [(b"tenant-0", orjson.dumps(events.one(
        2000 + i, tenant="tenant-0", client_ip="10.9.9.9", qname=f"x{i}a9f.tunnel.example.net",
        rcode="NXDOMAIN"))) for i in range(30)]
    await bus.send_many(bus.topics.events, records)
    sink = Sink(bus, store, SinkConfig(batch_rows=1000, batch_ms=20))
    await sink.start()
    while await sink.step(final=True):
        pass
    yield store
    store.close()


def rows(store: Store, sql: str) -> list[dict]:
    r = run_sql(store.client, sql)
    return [dict(zip(r.columns, row, strict=True)) for row in r.rows]


def test_all_documented_queries_run(stored):
    queries = doc_queries()
    assert len(queries) >= 9
    for heading, sql in queries.items():
        try:
            rows(stored, sql)
        except Exception as exc:
            pytest.fail(f"docs/queries.md: {heading}: {exc}")


def test_documented_answers_make_sense(stored):
    q = doc_queries()
    denied = rows(stored, q["Top denied names per tenant (last 24 hours)"])
    assert denied == [{"tenant": "tenant-01", "qname": "db.tenant-2.svc.cluster.local",
                       "denied": 4, "clients": 4}]
    discover = rows(stored, q["Which tenants tried to discover other tenants"])
    assert {r["tenant"] for r in discover} == {"tenant-01"}
    assert sum(r["attempts"] for r in discover) == 4
    pod = rows(stored, q["What a given pod resolved in the last hour"])
    assert pod[0]["qname"] == "db.tenant-2.svc.cluster.local" and pod[0]["queries"] == 4
    tunnel = rows(stored, q["Clients with the most unique subdomains (tunneling / DGA suspects, "
                            "last hour)"])
    assert tunnel[0]["client_ip"] == "10.9.9.9" and tunnel[0]["subdomains"] == 30
    ratio = rows(stored, q["NXDOMAIN ratio over time (per tenant, 5-minute steps, last 6 hours)"])
    t0 = [r for r in ratio if r["tenant"] == "tenant-0"]
    assert sum(r["total"] for r in t0) == 130 and max(r["nxdomain_ratio"] for r in t0) > 0
