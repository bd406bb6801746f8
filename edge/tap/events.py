"""A paired query/response -> one schema-v1 event, handed to the edge's event publisher.

The client's identity comes from the edge's :class:`IdentityTable` (static map or the
Kubernetes watch), so a tap event names the same tenant, namespace, pod and service account
as an edge event from the same address. What a resolver's dnstap cannot say is fixed:
``cache`` "none", ``decision`` "allow" (the resolver answered), no rule, policy version 0.
A query without a response has ``rcode`` :data:`NO_RESPONSE` and ``latency_us`` 0.

The record is handed over pre-encoded through ``EventPublisher.emit_many`` (the form the
edge's memoised hits use) because ``edge`` varies per sender here: the publisher's queue
bound, spool, librdkafka producer and drop counting apply unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from dnsflow.edge.identity import IdentityTable
from dnsflow.edge.tap.decode import TapMessage, names
from dnsflow.schema import SCHEMA_VERSION, now_us

NO_RESPONSE = "TIMEOUT"  # rcode of a query whose response never came (within the timeout)


def client_part(edge: str, info: Any, client_ip: str, transport: str) -> tuple[bytes, bytes]:
    """(Kafka key, the event's JSON from ``,"v"`` to ``"transport":"..",``): what one
    sender's client on one transport shares across its events."""
    d = {"v": SCHEMA_VERSION, "edge": edge, "tenant": info.tenant,
         "namespace": info.namespace, "pod": info.pod,
         "service_account": info.service_account, "client_ip": client_ip,
         "transport": transport}
    return info.tenant.encode(), b"," + orjson.dumps(d)[1:-1] + b","


def answer_part(qname: str, qtype: str, rcode: str, answers: list[str],
                upstream: str = "") -> bytes:
    """The event's JSON from ``"qname"`` to the closing brace: what one response (its bytes
    after the DNS ID) gives every event it answers."""
    return orjson.dumps({"qname": qname, "qtype": qtype, "rcode": rcode, "answers": answers,
                         "cache": "none", "decision": "allow", "rule": "",
                         "policy_version": 0, "upstream": upstream})[1:]


class EventBuilder:
    """``__call__(edge, query, response)``: the pairing's output, one event each."""

    def __init__(self, identity: IdentityTable, publisher: Any) -> None:
        self.identity = identity
        self.publisher = publisher
        self.built = 0

    def record(self, edge: str, q: TapMessage | None, r: TapMessage | None
               ) -> tuple[int, int, bytes, bytes]:
        """(ts, latency_us, key, JSON tail) of the event: the publisher's template form."""
        m = q if q is not None else r
        assert m is not None
        if q is not None:
            ts = q.query_us or (r.query_us if r is not None else 0)
        else:
            ts = m.query_us or m.response_us
        latency = 0
        if r is not None:
            start = q.query_us if q is not None and q.query_us else r.query_us
            if start and r.response_us:
                latency = max(0, r.response_us - start)
        client_ip = m.client_ip
        key, head = client_part(edge, self.identity.lookup(client_ip), client_ip,
                                m.transport)
        qname, qtype = names(r.question if r is not None and r.question else m.question)
        tail = answer_part(qname, qtype, r.rcode if r is not None else NO_RESPONSE,
                           r.answers if r is not None else [],
                           "" if m.client_side else m.server)
        return ts or now_us(), latency, key, head + tail

    def __call__(self, edge: str, q: TapMessage | None, r: TapMessage | None) -> None:
        if q is None and r is None:  # a waiting frame that no longer decodes: nothing to say
            return
        ts, latency, key, tail = self.record(edge, q, r)
        self.built += 1
        self.publisher.emit_many(ts, latency, [(key, tail)])


def encode(ts: int, latency_us: int, tail: bytes) -> bytes:
    """The JSON the publisher writes for a template (tests, the DLQ-free CLI dump)."""
    return b'{"ts":%d,"latency_us":%d%b' % (ts, latency_us, tail)
