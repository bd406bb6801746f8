"""Kafka record → ClickHouse row, one converter per topic, with the sink's validation.

The events converter is the hot path: it checks the common, well-typed shape of an event
inline (no pydantic model per row) and hands anything unusual to
:func:`dnsflow.schema.parse_event`, so the accepted set and the rejection reasons are exactly
the core's. On top of the schema the sink rejects values its columns cannot hold (a latency
beyond UInt32, a timestamp outside DateTime64's range), because storing them would fail the
whole batch forever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from dnsflow.schema import RecordError, decode_json, parse_anomaly, parse_event

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
UINT64_MAX = 2**64 - 1
# DateTime64(6) covers 1900-01-01 .. 2299-12-31; keep to the epoch onwards.
TS_MIN_US = 0
TS_MAX_US = 10_413_791_999_000_000

TRANSPORTS = frozenset(("udp", "tcp", "dot", "doh"))
CACHE_STATES = frozenset(("hit", "miss", "stale", "none"))
DECISIONS = frozenset(("allow", "deny", "rewrite", "redirect"))

EVENT_COLUMNS: tuple[str, ...] = (
    "ts", "tenant", "namespace", "pod", "service_account", "edge", "client_ip", "transport",
    "qname", "qtype", "rcode", "answers", "latency_us", "cache", "decision", "rule",
    "policy_version", "upstream", "v", "extra",
)
_KNOWN_EVENT_KEYS = frozenset(
    ("v", "ts", "edge", "tenant", "namespace", "client_ip", "transport", "qname", "qtype",
     "rcode", "answers", "latency_us", "cache", "decision", "rule", "policy_version",
     "upstream", "pod", "service_account")
)


def ts_to_us(value: Any, where: str = "ts") -> int:
    """Integer µs, float seconds-or-µs, or ISO-8601 → integer µs (the core's rules)."""
    if isinstance(value, bool):
        raise RecordError(f"{where}: must be a number or an ISO-8601 string")
    if isinstance(value, int):
        us = value
    elif isinstance(value, float):
        us = int(value * 1_000_000) if value < 1e11 else int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            us = int(text)
        else:
            try:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise RecordError(f"{where}: not an ISO-8601 time ({value!r})") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            us = int(dt.timestamp() * 1_000_000)
    else:
        raise RecordError(f"{where}: must be a number or an ISO-8601 string")
    if not TS_MIN_US <= us <= TS_MAX_US:
        raise RecordError(f"{where}: {us} is outside the storable range (1970..2299)")
    return us


def _fast_event(obj: dict[str, Any]) -> tuple[Any, ...] | None:
    """The row for a well-typed event, or None when the slow path must decide."""
    try:
        ts = obj["ts"]
        tenant = obj["tenant"]
        namespace = obj["namespace"]
        edge = obj["edge"]
        client_ip = obj["client_ip"]
        transport = obj["transport"]
        qname = obj["qname"]
        qtype = obj["qtype"]
        rcode = obj["rcode"]
        latency = obj["latency_us"]
        cache = obj["cache"]
        decision = obj["decision"]
    except KeyError:
        return None
    get = obj.get
    answers = get("answers", ())
    rule = get("rule", "")
    pv = get("policy_version", 0)
    upstream = get("upstream", "")
    pod = get("pod", "")
    sa = get("service_account", "")
    v = get("v", 1)
    if (
        type(ts) is not int or not TS_MIN_US <= ts <= TS_MAX_US
        or type(tenant) is not str or not tenant
        or type(namespace) is not str or type(edge) is not str
        or type(client_ip) is not str or type(qname) is not str
        or type(qtype) is not str or type(rcode) is not str
        or type(latency) is not int or not 0 <= latency <= UINT32_MAX
        or type(pv) is not int or not 0 <= pv <= UINT64_MAX
        or type(rule) is not str or type(upstream) is not str
        or type(pod) is not str or type(sa) is not str
        or transport not in TRANSPORTS or cache not in CACHE_STATES
        or decision not in DECISIONS
        or type(v) is not int or v != 1
        or (type(answers) is not list and answers != ())
    ):
        return None
    if answers:
        for a in answers:
            if type(a) is not str:
                return None
    extra = ""
    if len(obj) > 12:
        unknown = obj.keys() - _KNOWN_EVENT_KEYS
        if unknown:
            extra = orjson.dumps({k: obj[k] for k in unknown}).decode()
    return (
        ts, tenant, namespace, pod, sa, edge, client_ip, transport,
        qname.lower().rstrip("."), qtype.upper(), rcode.upper(), answers or [], latency,
        cache, decision, rule, pv, upstream, 1, extra,
    )


def event_row(raw: bytes | None, where: str) -> tuple[Any, ...]:
    """Validate one event record and return its row (in :data:`EVENT_COLUMNS` order)."""
    if raw is None:
        raise RecordError(f"{where}: empty record (tombstone)")
    obj = decode_json(raw, where)
    row = _fast_event(obj)
    if row is not None:
        return row
    event = parse_event(obj, where)  # raises RecordError with the core's reasons
    data = event.model_dump()
    for key in ("pod", "service_account"):
        if key in data and not isinstance(data[key], str):
            data[key] = orjson.dumps(data[key]).decode()
    data["ts"] = ts_to_us(data["ts"], f"{where}: ts")
    for key, limit in (("latency_us", UINT32_MAX), ("policy_version", UINT64_MAX)):
        if data[key] > limit:
            raise RecordError(f"{where}: {key}: {data[key]} is too large to store (max {limit})")
    row = _fast_event(data)
    if row is None:  # pragma: no cover - the model guarantees the shape
        raise RecordError(f"{where}: event cannot be stored")
    return row


# ---- the low-volume topics: flexible records, whole record kept as JSON where it varies ----


def _obj(raw: bytes | None, where: str) -> dict[str, Any]:
    if raw is None:
        raise RecordError(f"{where}: empty record (tombstone)")
    return decode_json(raw, where)


def _ts_of(obj: dict[str, Any], where: str, fallback_ms: int, *keys: str) -> int:
    for key in keys:
        if obj.get(key) is not None:
            return ts_to_us(obj[key], f"{where}: {key}")
    return fallback_ms * 1000


def _str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _uint(obj: dict[str, Any], key: str, where: str, default: int = 0) -> int:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise RecordError(f"{where}: {key}: expected a non-negative integer, got {value!r}")
    if not 0 <= value <= UINT64_MAX:
        raise RecordError(f"{where}: {key}: {value} is out of range")
    return int(value)


TELEMETRY_COLUMNS = ("ts", "tenant", "window_s", "data")


def telemetry_row(raw: bytes | None, where: str, ts_ms: int) -> tuple[Any, ...]:
    obj = _obj(raw, where)
    ts = _ts_of(obj, where, ts_ms, "ts", "window_end", "window_start", "end", "start")
    window = obj.get("window_s", obj.get("window", 0))
    window_s = window if isinstance(window, int) and 0 <= window <= UINT32_MAX else 0
    return (ts, _str(obj.get("tenant", "")), window_s, orjson.dumps(obj).decode())


ANOMALY_COLUMNS = (
    "ts", "tenant", "kind", "client_ip", "domain", "severity", "score", "evidence", "extra",
)
_ANOMALY_KEYS = frozenset(
    ("v", "ts", "kind", "tenant", "client_ip", "domain", "severity", "score", "evidence")
)


def anomaly_row(raw: bytes | None, where: str, ts_ms: int) -> tuple[Any, ...]:
    obj = _obj(raw, where)
    a = parse_anomaly(obj, where)
    extra = {k: v for k, v in obj.items() if k not in _ANOMALY_KEYS}
    return (
        ts_to_us(a.ts, f"{where}: ts"), a.tenant, a.kind, a.client_ip, a.domain, a.severity,
        a.score, orjson.dumps(a.evidence).decode(), orjson.dumps(extra).decode() if extra else "",
    )


ALERT_COLUMNS = ("ts", "rule", "tenant", "severity", "data")


def alert_row(raw: bytes | None, where: str, ts_ms: int) -> tuple[Any, ...]:
    obj = _obj(raw, where)
    ts = _ts_of(obj, where, ts_ms, "ts", "raised_at", "time")
    rule = obj.get("rule", obj.get("rule_id", ""))
    return (ts, _str(rule), _str(obj.get("tenant", "")), _str(obj.get("severity", "")),
            orjson.dumps(obj).decode())


POLICY_LOG_COLUMNS = (
    "ts", "tenant", "version", "hash", "previous_hash", "source", "actor", "change", "document",
)


def policy_log_row(raw: bytes | None, where: str, ts_ms: int) -> tuple[Any, ...]:
    obj = _obj(raw, where)
    ts = _ts_of(obj, where, ts_ms, "ts")
    return (
        ts, _str(obj.get("tenant", "")), _uint(obj, "version", where), _str(obj.get("hash")),
        _str(obj.get("previous_hash")), _str(obj.get("source")), _str(obj.get("actor")),
        _str(obj.get("change")), _str(obj.get("document")),
    )


@dataclass(frozen=True)
class TableSpec:
    """Where one topic's records go and how each becomes a row."""

    topic: str  # short topic name, resolved with the bus prefix
    table: str
    columns: tuple[str, ...]
    convert: Callable[..., tuple[Any, ...]]
    hot: bool = False  # event rows: convert(raw, where) without the Kafka timestamp


TABLES: tuple[TableSpec, ...] = (
    TableSpec("events", "dns_events", EVENT_COLUMNS, event_row, hot=True),
    TableSpec("telemetry", "telemetry", TELEMETRY_COLUMNS, telemetry_row),
    TableSpec("anomalies", "anomalies", ANOMALY_COLUMNS, anomaly_row),
    TableSpec("alerts", "alerts", ALERT_COLUMNS, alert_row),
    TableSpec("policy_log", "policy_log", POLICY_LOG_COLUMNS, policy_log_row),
)
