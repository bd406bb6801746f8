"""Input records: a fast structural check for the hot path, pydantic for the slow path.

Well-formed events (what the edge writes) are decoded and type-checked in one C pass by a
msgspec decoder (:func:`decode_fast`, ~1 µs), or pass :func:`check` with a few type tests, with
no model construction. Anything else goes through ``dnsflow.schema.parse_event``, which either
normalises it (ISO timestamps, upper-case qnames) or raises ``RecordError`` naming the field —
the reason that ends up in the DLQ or the replay error report.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import orjson

from dnsflow.schema import RecordError, decode_json, now_us, parse_event

_TRANSPORTS = frozenset(("udp", "tcp", "dot", "doh"))
_CACHE = frozenset(("hit", "miss", "stale", "none"))
_DECISIONS = frozenset(("allow", "deny", "rewrite", "redirect"))


_REQUIRED = frozenset(("v", "ts", "edge", "tenant", "namespace", "client_ip", "transport",
                       "qname", "qtype", "rcode", "latency_us", "cache", "decision"))


def _fast_ok(o: dict[str, Any]) -> bool:
    """True when ``o`` is a well-formed, already normalised event (no model needed)."""
    if not o.keys() >= _REQUIRED:
        return False
    ts = o["ts"]
    lat = o["latency_us"]
    q = o["qname"]
    qt = o["qtype"]
    rc = o["rcode"]
    t = o["tenant"]
    return (o["v"] == 1 and type(ts) is int and type(lat) is int and lat >= 0
            and type(t) is str and t != "" and type(q) is str and type(qt) is str
            and type(rc) is str and type(o["client_ip"]) is str
            and type(o.get("rule", "")) is str and type(o.get("policy_version", 0)) is int
            and o["transport"] in _TRANSPORTS and o["cache"] in _CACHE
            and o["decision"] in _DECISIONS
            and (not q or (q[-1] != "." and (q.islower() or q == q.lower())))
            and qt.isupper() and rc.isupper())


def check(obj: dict[str, Any], where: str = "event") -> dict[str, Any]:
    """Return the event (normalised if needed) or raise ``RecordError`` naming the field."""
    if _fast_ok(obj):
        obj.setdefault("rule", "")
        return obj
    return parse_event(obj, where).model_dump()


class _Event(TypedDict):
    """The event fields the fast path checks, typed as the edge writes them; fields not
    listed here (answers, upstream, fields added later) are skipped, not copied."""

    v: Literal[1]
    ts: int
    edge: str
    tenant: Annotated[str, msgspec.Meta(min_length=1)]
    namespace: str
    client_ip: str
    transport: Literal["udp", "tcp", "dot", "doh"]
    qname: str
    qtype: str
    rcode: str
    latency_us: Annotated[int, msgspec.Meta(ge=0)]
    cache: Literal["hit", "miss", "stale", "none"]
    decision: Literal["allow", "deny", "rewrite", "redirect"]
    rule: NotRequired[str]
    policy_version: NotRequired[int]


_decode_event = msgspec.json.Decoder(_Event).decode


def decode_fast(raw: bytes | str) -> dict[str, Any] | None:
    """The hot path: a well-formed event, or None (then call :func:`decode` for the reason)."""
    try:
        obj: dict[str, Any] = _decode_event(raw)  # type: ignore[assignment]
    except msgspec.MsgspecError:
        return None
    q = obj["qname"]
    if ((q and (q[-1] == "." or not (q.islower() or q == q.lower())))
            or not (obj["qtype"].isupper() and obj["rcode"].isupper())):
        return None  # not normalised: the slow path normalises it
    obj.setdefault("rule", "")
    return obj


def decode(raw: bytes | str, where: str = "event", not_after_us: int | None = None
           ) -> dict[str, Any]:
    """Decode and check one record; live drivers reject events from the future.

    An edge with a clock far ahead would otherwise drag the watermark forward and make every
    other tenant's events late; ``not_after_us`` (wall clock + ``max_future_s``) stops that.
    """
    ev = check(decode_json(raw, where), where)
    if not_after_us is not None and ev["ts"] > not_after_us:
        raise RecordError(f"{where}: ts: {ev['ts']} is more than the allowed clock skew "
                          f"ahead of this worker's clock")
    return ev


def dlq_record(source_topic: str, partition: int, offset: int, reason: str,
               value: bytes | None, key: bytes | None = None) -> bytes:
    """The DLQ value: where the record came from, why it was rejected, and the raw bytes."""
    raw = value or b""
    try:
        text, encoding = raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return orjson.dumps({
        "ts": now_us(), "source_topic": source_topic, "partition": partition, "offset": offset,
        "reason": reason, "component": "streams",
        "key": (key or b"").decode("utf-8", "replace"),
        "value": text, "value_encoding": encoding,
    })


__all__ = ["RecordError", "check", "decode", "decode_fast", "dlq_record"]
