"""Input records: a fast structural check for the hot path, pydantic for the slow path.

Well-formed events (what the edge writes) pass :func:`check` with a few type tests and no
model construction. Anything else goes through ``dnsflow.schema.parse_event``, which either
normalises it (ISO timestamps, upper-case qnames) or raises ``RecordError`` naming the field —
the reason that ends up in the DLQ or the replay error report.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from dnsflow.schema import RecordError, decode_json, parse_event

_STR_FIELDS = ("edge", "tenant", "namespace", "client_ip", "qname", "qtype", "rcode", "rule",
               "upstream")
_TRANSPORTS = frozenset(("udp", "tcp", "dot", "doh"))
_CACHE = frozenset(("hit", "miss", "stale", "none"))
_DECISIONS = frozenset(("allow", "deny", "rewrite", "redirect"))


def _fast_ok(o: dict[str, Any]) -> bool:
    ts = o.get("ts")
    lat = o.get("latency_us")
    pv = o.get("policy_version", 0)
    if (o.get("v") != 1 or type(ts) is not int or type(lat) is not int or lat < 0
            or type(pv) is not int or pv < 0):
        return False
    for f in _STR_FIELDS:
        if type(o.get(f, "")) is not str:
            return False
    q = o.get("qname")
    qt = o.get("qtype")
    rc = o.get("rcode")
    return (bool(o.get("tenant")) and q is not None and qt is not None and rc is not None
            and o.get("transport") in _TRANSPORTS and o.get("cache") in _CACHE
            and o.get("decision") in _DECISIONS and type(o.get("answers", [])) is list
            and "client_ip" in o and "edge" in o and "namespace" in o
            and (not q or (q[-1] != "." and (q.islower() or q == q.lower())))
            and qt.isupper() and rc.isupper())


def check(obj: dict[str, Any], where: str = "event") -> dict[str, Any]:
    """Return the event (normalised if needed) or raise ``RecordError`` naming the field."""
    if _fast_ok(obj):
        obj.setdefault("rule", "")
        return obj
    return parse_event(obj, where).model_dump()


def decode(raw: bytes | str, where: str = "event") -> dict[str, Any]:
    return check(decode_json(raw, where), where)


def dlq_record(source_topic: str, partition: int, offset: int, reason: str,
               value: bytes | None, key: bytes | None = None) -> bytes:
    """The DLQ value: where the record came from, why it was rejected, and the raw bytes."""
    raw = value or b""
    try:
        text, encoding = raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return orjson.dumps({
        "source_topic": source_topic, "partition": partition, "offset": offset,
        "reason": reason, "component": "streams",
        "key": (key or b"").decode("utf-8", "replace"),
        "value": text, "value_encoding": encoding,
    })


__all__ = ["RecordError", "check", "decode", "dlq_record"]
