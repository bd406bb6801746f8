"""Kafka record → ClickHouse row, one converter per topic, with the sink's validation.

The events converter is the hot path: msgspec decodes and type-checks the common,
well-typed shape of an event in C (no pydantic model per row) and anything unusual goes to
:func:`dnsflow.schema.parse_event`, so the accepted set and the rejection reasons are exactly
the core's. On top of the schema the sink rejects values its columns cannot hold (a latency
beyond UInt32, a timestamp outside DateTime64's range), because storing them would fail the
whole batch forever. An accepted event is not turned into a Python row: its JSON goes on to
ClickHouse (``sinks/ingest.py``), which parses it again in C++.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import Meta

from dnsflow.schema import (
    EVENT_FIELDS,
    RecordError,
    decode_json,
    event_struct,
    parse_anomaly,
    parse_egress,
    parse_event,
)

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
# DateTime64(6) covers 1900-01-01 .. 2299-12-31; keep to the epoch onwards.
TS_MIN_US = 0
TS_MAX_US = 10_413_791_999_000_000

# The stored row: the core's event fields in the core's order, then what did not fit them.
EVENT_COLUMNS: tuple[str, ...] = (*EVENT_FIELDS, "extra")
_KNOWN_EVENT_KEYS = frozenset(EVENT_FIELDS)


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


# The well-typed shape of an event, decoded and checked in C by msgspec: the core's
# :class:`dnsflow.schema.Event` in :data:`EVENT_COLUMNS` order (without ``extra``), with no
# unknown fields and the columns' bounds. It accepts a subset of what the core model accepts
# (strict types, no unknown fields), so anything it refuses is decided by the core model
# instead: same rules, same reasons. ``policy_version`` is bounded to int64 here (msgspec's
# limit for bounds); the rest of UInt64 takes the model path.
StoredEvent = event_struct(
    "StoredEvent", order=EVENT_COLUMNS[:-1], forbid_unknown_fields=True,
    types={"ts": Annotated[int, Meta(ge=TS_MIN_US, le=TS_MAX_US)],
           "latency_us": Annotated[int, Meta(ge=0, le=UINT32_MAX)],
           "policy_version": Annotated[int, Meta(ge=0, le=INT64_MAX)]})


_decode_event = msgspec.json.Decoder(StoredEvent).decode
_astuple = msgspec.structs.astuple
_NO_EXTRA = ("",)
_QNAME = EVENT_COLUMNS.index("qname")
_QTYPE = EVENT_COLUMNS.index("qtype")
_RCODE = EVENT_COLUMNS.index("rcode")


class CanonicalEvent(bytes):
    """An event object the sink wrote itself (:func:`canonical_event`): already normalised,
    so it may hold any Unicode; the raw values the sink forwards as they came are plain
    ``bytes``."""


def event_row(raw: bytes | None, where: str) -> tuple[Any, ...]:
    """Validate one event record and return its row as stored (:data:`EVENT_COLUMNS` order,
    ``qname``/``qtype``/``rcode`` normalised like the core model does)."""
    if raw is None:
        raise RecordError(f"{where}: empty record (tombstone)")
    try:
        ev = _decode_event(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _slow_event_row(raw, where)
    return normalise(_astuple(ev) + _NO_EXTRA)


def normalise(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The core's validators: qname lower case without the trailing dot, qtype and rcode
    upper case."""
    out = list(row)
    out[_QNAME] = row[_QNAME].lower().rstrip(".")
    out[_QTYPE] = row[_QTYPE].upper()
    out[_RCODE] = row[_RCODE].upper()
    return tuple(out)


def canonical_event(row: tuple[Any, ...]) -> CanonicalEvent:
    """A stored row (:func:`event_row`) as the JSON object ``dns_events_ingest`` reads."""
    return CanonicalEvent(orjson.dumps(dict(zip(EVENT_COLUMNS, row, strict=True))))


def event_object(raw: bytes | None, where: str) -> bytes:
    """One record as the JSON object to ingest: the value itself when msgspec accepts it
    (ClickHouse parses it again, in C++), else the canonical JSON of the row the core
    model made of it. Raises :class:`RecordError` with the core's reason."""
    if raw is not None:
        try:
            _decode_event(raw)
            return raw
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
    return canonical_event(event_row(raw, where))


def event_objects(
    values: list[bytes | None], where: str
) -> tuple[list[bytes], list[tuple[int, str]]]:
    """:func:`event_object` over a batch: the objects of the accepted records, in order,
    and ``(index, reason)`` for each reject.

    The sink's hot path: one msgspec decode per record, whose result is only checked, not
    used — the value itself goes on to ClickHouse. The usual batch, all well-typed, is
    checked without a Python step per record (``map`` drained by a zero-length deque).
    """
    try:
        deque(map(_decode_event, values), maxlen=0)  # type: ignore[arg-type]
        return values, []  # type: ignore[return-value]
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
        pass  # one or more need the model: record by record
    out: list[bytes] = []
    bad: list[tuple[int, str]] = []
    append = out.append
    decode = _decode_event
    for i, raw in enumerate(values):
        try:
            decode(raw)  # type: ignore[arg-type]
            append(raw)  # type: ignore[arg-type]
            continue
        except (msgspec.ValidationError, msgspec.DecodeError, TypeError):
            pass
        try:
            append(canonical_event(event_row(raw, where)))
        except RecordError as exc:
            bad.append((i, str(exc)))
    return out, bad


def _slow_event_row(raw: bytes, where: str) -> tuple[Any, ...]:
    """The core model decides (and names the reason); then the storage limits apply."""
    obj = decode_json(raw, where)
    event = parse_event(obj, where)  # raises RecordError with the core's reasons
    data = event.model_dump()
    ts = ts_to_us(data["ts"], f"{where}: ts")
    for key, limit in (("latency_us", UINT32_MAX), ("policy_version", UINT64_MAX)):
        if data[key] > limit:
            raise RecordError(f"{where}: {key}: {data[key]} is too large to store (max {limit})")
    extra = {k: v for k, v in data.items() if k not in _KNOWN_EVENT_KEYS}
    data["ts"] = ts
    data["v"] = 1
    return (*[data[k] for k in EVENT_FIELDS], orjson.dumps(extra).decode() if extra else "")


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
    ok = isinstance(window, int | float) and not isinstance(window, bool)
    window_s = int(window) if ok and 0 <= window <= UINT32_MAX else 0
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


EGRESS_COLUMNS = (
    "ts", "tenant", "namespace", "pod", "edge", "kind", "client_ip", "dst_ip", "protocol",
    "port", "qname", "rule", "mode", "ttl", "policy_version", "extra",
)
_EGRESS_KEYS = frozenset(("v", *EGRESS_COLUMNS[:-1]))


def egress_row(raw: bytes | None, where: str, ts_ms: int) -> tuple[Any, ...]:
    """One ``dnsflow.egress`` record (the core's :class:`EgressEvent` decides, with its
    reasons); fields it does not name (an allow's ``ports`` ...) are kept in ``extra``."""
    obj = _obj(raw, where)
    e = parse_egress(obj, where)
    if e.ttl > UINT32_MAX:
        raise RecordError(f"{where}: ttl: {e.ttl} is too large to store (max {UINT32_MAX})")
    if e.policy_version > UINT64_MAX or e.policy_version < 0:
        raise RecordError(f"{where}: policy_version: {e.policy_version} is out of range")
    extra = {k: v for k, v in obj.items() if k not in _EGRESS_KEYS}
    return (
        ts_to_us(e.ts, f"{where}: ts"), e.tenant, e.namespace, e.pod, e.edge, e.kind,
        e.client_ip, e.dst_ip, e.protocol.lower(), e.port, e.qname.lower().rstrip("."),
        e.rule, e.mode, e.ttl, e.policy_version,
        orjson.dumps(extra).decode() if extra else "",
    )


@dataclass(frozen=True)
class TableSpec:
    """Where one topic's records go and how each becomes a row."""

    topic: str  # short topic name, resolved with the bus prefix
    table: str
    columns: tuple[str, ...]
    convert: Callable[..., tuple[Any, ...]]
    hot: bool = False  # event rows: convert(raw, where) without the Kafka timestamp
    convert_many: Callable[..., tuple[list[Any], list[tuple[int, str]]]] | None = None
    # rows go in as JSON objects through this table (``convert`` returns bytes), not columns
    ingest: str | None = None


TABLES: tuple[TableSpec, ...] = (
    TableSpec("events", "dns_events", EVENT_COLUMNS, event_object, hot=True,
              convert_many=event_objects, ingest="dns_events_ingest"),
    TableSpec("telemetry", "telemetry", TELEMETRY_COLUMNS, telemetry_row),
    TableSpec("anomalies", "anomalies", ANOMALY_COLUMNS, anomaly_row),
    TableSpec("alerts", "alerts", ALERT_COLUMNS, alert_row),
    TableSpec("policy_log", "policy_log", POLICY_LOG_COLUMNS, policy_log_row),
    TableSpec("egress", "egress_events", EGRESS_COLUMNS, egress_row),
)
