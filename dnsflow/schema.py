"""Event and anomaly schema v1 — the contract every component meets on.

Two paths on purpose: :class:`DnsEvent` (pydantic) validates records that cross a trust
boundary (Kafka input, replay files), while :func:`encode_event` serialises the plain dicts
the edge builds on its hot path without model construction.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1

Transport = Literal["udp", "tcp", "dot", "doh"]
CacheState = Literal["hit", "miss", "stale", "none"]
Decision = Literal["allow", "deny", "rewrite", "redirect"]
AnomalyKind = Literal[
    "dga", "tunneling", "nxdomain_burst", "rate_spike", "cross_tenant", "new_domain"
]
Severity = Literal["low", "medium", "high", "critical"]

EVENT_FIELDS: tuple[str, ...] = (
    "v", "ts", "edge", "tenant", "namespace", "client_ip", "transport", "qname", "qtype",
    "rcode", "answers", "latency_us", "cache", "decision", "rule", "policy_version", "upstream",
)


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


class DnsEvent(BaseModel):
    """One DNS query/response as seen by an edge (schema v1)."""

    model_config = ConfigDict(extra="allow", frozen=False)

    v: Literal[1] = SCHEMA_VERSION
    ts: int = Field(description="UTC time of the query, integer microseconds since the epoch")
    edge: str
    tenant: str = Field(min_length=1)
    namespace: str
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

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> int:
        return _ts_to_us(value)

    @field_validator("qname")
    @classmethod
    def _qname(cls, value: str) -> str:
        name = value.lower().rstrip(".")
        return name

    @field_validator("qtype", "rcode")
    @classmethod
    def _mnemonic(cls, value: str) -> str:
        return value.upper()


class Anomaly(BaseModel):
    """One detection on ``dnsflow.anomalies`` (schema v1)."""

    model_config = ConfigDict(extra="allow")

    v: Literal[1] = SCHEMA_VERSION
    ts: int
    kind: str
    tenant: str
    client_ip: str = ""
    domain: str = ""
    severity: Severity
    score: float = Field(ge=0.0, le=1.0)
    evidence: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> int:
        return _ts_to_us(value)


class RecordError(ValueError):
    """A record that cannot be decoded or validated; carries a reason fit for the DLQ."""


def encode_event(event: dict[str, Any]) -> bytes:
    """Serialise an event dict built on the hot path (no validation, ~1 µs)."""
    return orjson.dumps(event)


def decode_json(raw: bytes | str, where: str = "record") -> dict[str, Any]:
    """Parse one JSON object or raise :class:`RecordError` naming ``where``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _explain(exc: ValidationError, where: str) -> RecordError:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return RecordError(f"{where}: " + "; ".join(parts))


def parse_event(raw: bytes | str | dict[str, Any], where: str = "event") -> DnsEvent:
    """Decode and validate one event, raising :class:`RecordError` with field paths."""
    obj = raw if isinstance(raw, dict) else decode_json(raw, where)
    try:
        return DnsEvent.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc, where) from None


def parse_anomaly(raw: bytes | str | dict[str, Any], where: str = "anomaly") -> Anomaly:
    """Decode and validate one anomaly, raising :class:`RecordError` with field paths."""
    obj = raw if isinstance(raw, dict) else decode_json(raw, where)
    try:
        return Anomaly.model_validate(obj)
    except ValidationError as exc:
        raise _explain(exc, where) from None
