"""Input records: a fast structural check for the hot path, pydantic for the slow path.

Well-formed events (what the edge writes) are decoded and type-checked in one C pass by a
msgspec decoder (:func:`decode_fast`, ~1 µs), or pass :func:`check` with a few type tests, with
no model construction. Anything else goes through ``dnsflow.schema.parse_event``, which either
normalises it (ISO timestamps, upper-case qnames) or raises ``RecordError`` naming the field —
the reason that ends up in the DLQ or the replay error report.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, get_args

import msgspec

from dnsflow.schema import (
    EVENT_REQUIRED,
    EVENT_TYPES,
    CacheState,
    Decision,
    RecordError,
    Transport,
    decode_json,
    parse_event,
)

_TRANSPORTS = frozenset(get_args(Transport))
_CACHE = frozenset(get_args(CacheState))
_DECISIONS = frozenset(get_args(Decision))

# Event fields the logic does not read: the fast decoder skips them instead of copying them
# (``answers`` is a list per event; only a PTR event's are read, by the cross-tenant detector,
# and decoded for those alone). Every other field of ``dnsflow.schema.Event`` is decoded with
# the core's type; ``v`` is required here (its absence takes the slow path).
_SKIPPED = frozenset(("pod", "service_account", "answers", "upstream"))
_REQUIRED = EVENT_REQUIRED | {"v"}


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


def _fast_shape() -> Any:
    """The event fields the fast path checks, typed as the core's :class:`Event` declares
    them (a ``TypedDict``: the result is a plain dict, as the logic expects)."""
    fields: dict[str, Any] = {}
    for name, typ in EVENT_TYPES.items():
        if name in _SKIPPED:
            continue
        fields[name] = typ if name in _REQUIRED else NotRequired[typ]
    fields["v"] = Literal[1]
    return TypedDict("FastEvent", fields)  # type: ignore[operator]


FastEvent = _fast_shape()
_decode_event = msgspec.json.Decoder(FastEvent).decode


class _Answers(msgspec.Struct):
    answers: list[str] = []


_decode_answers = msgspec.json.Decoder(_Answers).decode


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
    if obj["qtype"] == "PTR":  # whose name an address is: read by the cross-tenant detector
        try:
            obj["answers"] = _decode_answers(raw).answers
        except msgspec.MsgspecError:
            return None  # malformed answers: the slow path names the field
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


__all__ = ["FastEvent", "RecordError", "check", "decode", "decode_fast"]
