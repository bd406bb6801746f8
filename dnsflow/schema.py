"""Event and anomaly schema v1 — the contract every component meets on.

:class:`Event` (a ``msgspec.Struct``) is *the* event: every field, its type, its bounds and
its default. Everything else is derived from it or checked against it
(``tests/unit/core/test_event_contract.py``): :data:`EVENT_FIELDS`, the edge's positional
tuple and pre-encoded templates (``edge/telemetry/publisher.py``), the streams' fast decoder
(``streams/event_decode.py``), the sink's strict decoder and columns (``sinks/rows.py``) and
the ClickHouse DDL (``sinks/schema/*.sql``).

Two validation paths on purpose: msgspec decoders derived from :class:`Event` check
well-formed records in C on the hot paths, while :class:`DnsEvent` (pydantic) decides the
unusual ones that cross a trust boundary (ISO timestamps, upper-case names, ...) and names
the field that is wrong.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import orjson
from msgspec import Meta
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1

Transport = Literal["udp", "tcp", "dot", "doh"]
CacheState = Literal["hit", "miss", "stale", "none"]
Decision = Literal["allow", "deny", "rewrite", "redirect", "would_deny"]  # last: audit mode
AnomalyKind = Literal[
    "dga", "tunneling", "nxdomain_burst", "rate_spike", "cross_tenant", "new_domain",
    "unresolved_egress",
]
Severity = Literal["low", "medium", "high", "critical"]



class Event(msgspec.Struct, kw_only=True, gc=False):
    """One DNS query/response as seen by an edge (schema v1): the one field list.

    The field order is the storage order (``dns_events`` columns) and, without ``edge`` and
    ``v``, the order of the edge's event tuple. Unknown fields are allowed (fields may be
    added); ``gc=False``: an event never holds a cycle.
    """

    ts: int  # UTC, integer microseconds since the epoch
    tenant: Annotated[str, Meta(min_length=1)]
    namespace: str
    pod: str = ""
    service_account: str = ""
    edge: str
    client_ip: str
    transport: Transport
    qname: str  # lower case, no trailing dot
    qtype: str  # mnemonic, upper case
    rcode: str  # mnemonic, upper case
    answers: list[str] = []  # msgspec copies empty-list defaults
    latency_us: Annotated[int, Meta(ge=0)]
    cache: CacheState
    decision: Decision
    rule: str = ""
    policy_version: Annotated[int, Meta(ge=0)] = 0
    upstream: str = ""
    v: Literal[1] = SCHEMA_VERSION


EVENT_FIELDS: tuple[str, ...] = Event.__struct_fields__
EVENT_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Event)}
EVENT_REQUIRED: frozenset[str] = frozenset(
    f.name for f in msgspec.structs.fields(Event) if f.required)


def event_struct(name: str, *, order: tuple[str, ...] = EVENT_FIELDS,
                 types: dict[str, Any] | None = None, forbid_unknown_fields: bool = False
                 ) -> type[msgspec.Struct]:
    """A ``msgspec.Struct`` with :class:`Event`'s fields (in ``order``, which must hold each
    of them once) and types, except where ``types`` narrows one (a store's column bounds).
    Components that need a stricter decoder derive it here instead of restating fields."""
    if sorted(order) != sorted(EVENT_FIELDS):
        raise ValueError(f"{name}: order must list the event's fields once each")
    over = types or {}
    unknown = set(over) - set(EVENT_FIELDS)
    if unknown:
        raise ValueError(f"{name}: not event fields: {sorted(unknown)}")
    by_name = {f.name: f for f in msgspec.structs.fields(Event)}
    spec: list[Any] = []
    for key in order:
        f = by_name[key]
        typ = over.get(key, f.type)
        if f.required:
            spec.append((key, typ))
        elif f.default_factory is not msgspec.NODEFAULT:
            spec.append((key, typ, msgspec.field(default_factory=f.default_factory)))
        else:
            spec.append((key, typ, f.default))
    return msgspec.defstruct(name, spec, kw_only=True, gc=False,
                             forbid_unknown_fields=forbid_unknown_fields)


def now_us() -> int:
    """Current UTC time in integer microseconds since the epoch (the `ts` unit)."""
    return time.time_ns() // 1000


def _ts_to_us(value: Any) -> int:
    """Accept integer µs, float seconds-or-µs, or ISO-8601 strings; return integer µs (UTC)."""
    if isinstance(value, bool):
        raise ValueError("ts must be a number or an ISO-8601 string")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # A float below ~1e11 can only be seconds (µs for year 1973); above, µs.
        return int(value * 1_000_000) if value < 1e11 else int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1_000_000)
    raise ValueError("ts must be a number or an ISO-8601 string")


class _Record(BaseModel):
    """What every schema v1 record on a topic has: the version, a ``ts`` in integer µs
    (given as µs, seconds or ISO-8601) and room for fields added later (``extra="allow"``)."""

    model_config = ConfigDict(extra="allow")

    v: Literal[1] = SCHEMA_VERSION
    ts: int

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> int:
        return _ts_to_us(value)


class DnsEvent(_Record):
    """One DNS query/response as seen by an edge (schema v1)."""

    ts: int = Field(description="UTC time of the query, integer microseconds since the epoch")
    edge: str
    tenant: str = Field(min_length=1)
    namespace: str
    pod: str = ""
    service_account: str = ""
    client_ip: str
    transport: Transport
    qname: str
    qtype: str
    rcode: str
    answers: list[str] = Field(default_factory=list)
    latency_us: int = Field(ge=0)
    cache: CacheState
    decision: Decision
    rule: str = ""
    policy_version: int = Field(ge=0, default=0)
    upstream: str = ""

    @field_validator("pod", "service_account", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        # identity fields come from labels and APIs: a non-string is kept as its JSON text
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    @field_validator("qname")
    @classmethod
    def _qname(cls, value: str) -> str:
        name = value.lower().rstrip(".")
        return name

    @field_validator("qtype", "rcode")
    @classmethod
    def _mnemonic(cls, value: str) -> str:
        return value.upper()


class Anomaly(_Record):
    """One detection on ``dnsflow.anomalies`` (schema v1)."""

    kind: str
    tenant: str
    client_ip: str = ""
    domain: str = ""
    severity: Severity
    score: float = Field(ge=0.0, le=1.0)
    evidence: dict[str, Any] = Field(default_factory=dict)


EgressKind = Literal["allow", "drop", "would_drop"]


class EgressEvent(_Record):
    """One record on ``dnsflow.egress`` (schema v1, key = tenant): an address the edge
    allowed a client to connect to because it answered it an allowed name (``allow``), or a
    connection attempt the node dropped (``drop``, mode enforce) or would have dropped
    (``would_drop``, mode audit). ``port`` 0 with ``protocol`` "" means every port."""

    edge: str
    kind: EgressKind
    tenant: str = ""
    namespace: str = ""
    pod: str = ""
    client_ip: str
    dst_ip: str
    protocol: str = ""  # tcp | udp | sctp | "" (any)
    port: int = Field(default=0, ge=0, le=65535)
    qname: str = ""     # allow: the answered name
    rule: str = ""      # allow: the egress rule
    mode: Literal["enforce", "audit"] = "enforce"
    ttl: int = Field(default=0, ge=0)  # allow: seconds the address stays allowed
    policy_version: int = 0


class RecordError(ValueError):
    """A record that cannot be decoded or validated; carries a reason fit for the DLQ."""


def encode_event(event: dict[str, Any]) -> bytes:
    """Serialise an event dict built on the hot path (no validation, ~1 µs)."""
    return orjson.dumps(event)


def decode_json(raw: bytes | str, where: str = "record",
                error: type[ValueError] = RecordError) -> dict[str, Any]:
    """Parse one JSON object or raise ``error`` (a component's own record error, default
    :class:`RecordError`) naming ``where``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise error(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _explain(exc: ValidationError, where: str) -> RecordError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return RecordError(f"{where}: " + "; ".join(parts))


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], raw: bytes | str | dict[str, Any], where: str) -> M:
    obj = raw if isinstance(raw, dict) else decode_json(raw, where)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc, where) from None


def parse_event(raw: bytes | str | dict[str, Any], where: str = "event") -> DnsEvent:
    """Decode and validate one event, raising :class:`RecordError` with field paths."""
    return _parse(DnsEvent, raw, where)


def parse_egress(raw: bytes | str | dict[str, Any], where: str = "egress event"
                 ) -> EgressEvent:
    """Decode and validate one egress event, raising :class:`RecordError` with field paths."""
    return _parse(EgressEvent, raw, where)


def parse_anomaly(raw: bytes | str | dict[str, Any], where: str = "anomaly") -> Anomaly:
    """Decode and validate one anomaly, raising :class:`RecordError` with field paths."""
    return _parse(Anomaly, raw, where)
