"""Realistic events for the sink tests (fixture `events`) and a migrated chDB store (`store`)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from dnsflow.schema import now_us
from dnsflow.sinks.dsn import parse
from dnsflow.sinks.migrate import migrate
from dnsflow.sinks.store import Store


def event(i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "v": 1, "ts": now_us() - 1_000_000 + i, "edge": "node-1", "tenant": f"tenant-{i % 3}",
        "namespace": f"ns-{i % 3}", "client_ip": f"10.0.{i % 3}.{i % 50}", "transport": "udp",
        "qname": f"svc{i}.example.com", "qtype": "A", "rcode": "NOERROR",
        "answers": ["192.0.2.1"], "latency_us": 250 + i, "cache": "miss", "decision": "allow",
        "rule": "", "policy_version": 3, "upstream": "udp://127.0.0.1:53",
    }
    e.update(over)
    return e


def encoded(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"tenant-{i % 3}".encode(), orjson.dumps(event(i))) for i in range(start, start + n)]


class Events:
    """Fixture namespace: ``events.one(i, **over)`` and ``events.encoded(n)``."""

    one = staticmethod(event)
    encoded = staticmethod(encoded)


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def store(chdb_dsn):
    s = Store(parse(chdb_dsn))
    migrate(s.client)
    yield s
    s.close()
