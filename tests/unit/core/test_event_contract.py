"""One event contract: ``dnsflow.schema.Event``. Every restatement of it is checked here.

The hot paths keep hand-written code for speed (the edge's positional tuple and pre-encoded
templates, the streams' subset decoder, the sink's strict decoder, the SQL): each of them is
compared with the Struct, so adding, removing, renaming or retyping a field in one place
without the others fails a test here.
"""

from __future__ import annotations

import asyncio
import re
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

import dns.asyncquery
import dns.message
import msgspec
import orjson
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.schema import (
    EVENT_FIELDS,
    EVENT_REQUIRED,
    EVENT_TYPES,
    DnsEvent,
    Event,
    event_struct,
    parse_event,
)
from dnsflow.settings import Settings
from dnsflow.topics import Topics

ROOT = Path(__file__).resolve().parents[3]
SQL = ROOT / "sinks" / "schema"
COORDINATES = {"kafka_partition", "kafka_offset", "kafka_source"}

# Every field must decode through the strict struct: exactly the Struct's keys, its types.
Strict = event_struct("Strict", forbid_unknown_fields=True)


def sample(**over: Any) -> Event:
    base: dict[str, Any] = dict(
        ts=1_764_000_000_123_456, tenant="shop", namespace="shop-web", pod="web-1",
        service_account="web", edge="edge-1", client_ip="10.0.0.7", transport="doh",
        qname="api.example.com", qtype="AAAA", rcode="NOERROR", answers=["AAAA 2001:db8::1"],
        latency_us=321, cache="miss", decision="would_deny", rule="audit-1",
        policy_version=7, upstream="tls://1.1.1.1:853")
    base.update(over)
    return Event(**base)


def strict_decode(raw: bytes) -> Any:
    """The record decoded against the contract; raises when a key or a type disagrees."""
    obj = orjson.loads(raw)
    assert set(obj) == set(EVENT_FIELDS), (
        f"missing {sorted(set(EVENT_FIELDS) - set(obj))}, "
        f"not in the contract {sorted(set(obj) - set(EVENT_FIELDS))}")
    return msgspec.json.decode(raw, type=Strict)


# ---- the core ---------------------------------------------------------------------------


def test_the_core_field_list_is_the_struct() -> None:
    assert Event.__struct_fields__ == EVENT_FIELDS
    # the architecture's required fields, plus the identity fields the edge knows
    assert {"v", "ts", "edge", "tenant", "namespace", "client_ip", "transport", "qname",
            "qtype", "rcode", "answers", "latency_us", "cache", "decision", "rule",
            "policy_version", "upstream", "pod", "service_account"} == set(EVENT_FIELDS)
    assert "would_deny" in get_args(EVENT_TYPES["decision"])


def _base(tp: Any) -> Any:
    """``Annotated[X, ...]`` -> X (constraints aside, the type a field holds)."""
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def test_the_pydantic_model_has_the_structs_fields_types_and_defaults() -> None:
    model = DnsEvent.model_fields
    assert set(model) == set(EVENT_FIELDS)
    assert {k for k, f in model.items() if f.is_required()} == EVENT_REQUIRED
    for f in msgspec.structs.fields(Event):
        m = model[f.name]
        core = _base(f.type)
        if get_origin(core) is typing.Literal:
            assert set(get_args(m.annotation)) == set(get_args(core)), f.name
        else:
            assert m.annotation == core, f.name
        if not f.required:
            default = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
            assert m.get_default(call_default_factory=True) == default, f.name


def test_both_core_paths_accept_the_same_event() -> None:
    raw = msgspec.json.encode(sample())
    assert parse_event(raw).model_dump() == msgspec.structs.asdict(msgspec.json.decode(
        raw, type=Event))


# ---- the edge's encoder -----------------------------------------------------------------


def _publisher(tmp_path: Path) -> Any:
    from dnsflow.edge.telemetry.publisher import EventPublisher
    from dnsflow.edge.telemetry.spool import Spool

    return EventPublisher(MemoryBus(Topics("t.")), Spool(tmp_path / "spool"), edge="edge-1")


def test_the_edge_tuple_and_template_encode_the_contract(tmp_path: Path) -> None:
    from dnsflow.edge.telemetry.publisher import EVENT_KEYS, TEMPLATE_KEYS

    ev = sample()
    pub = _publisher(tmp_path)
    as_dict = msgspec.structs.asdict(ev)
    tup = tuple(as_dict[k] for k in EVENT_KEYS)
    [(key, raw)] = pub.encode([tup])
    assert key == b"shop"
    assert strict_decode(raw) == msgspec.convert(as_dict, Strict)
    template = pub.template(tuple(as_dict[k] for k in TEMPLATE_KEYS))
    for item in ((ev.ts, ev.latency_us, template), (ev.ts, ev.latency_us, [template])):
        [(key, raw)] = pub.encode([item])
        assert key == b"shop"
        assert strict_decode(raw) == msgspec.convert(as_dict, Strict)


def test_a_misordered_edge_tuple_fails_the_strict_decode(tmp_path: Path) -> None:
    """The check above bites: a tuple in another order than the Struct's does not decode."""
    from dnsflow.edge.telemetry.publisher import EVENT_KEYS

    as_dict = msgspec.structs.asdict(sample())
    keys = list(EVENT_KEYS)
    i, j = keys.index("latency_us"), keys.index("qname")
    keys[i], keys[j] = keys[j], keys[i]
    [(_, raw)] = _publisher(tmp_path).encode([tuple(as_dict[k] for k in keys)])
    with pytest.raises(msgspec.ValidationError):
        strict_decode(raw)


async def test_the_events_a_running_edge_publishes_are_the_contract(tmp_path: Path) -> None:
    """The resolver's own tuple (miss, full-path hit, memoised UDP hit, TCP) and the fast
    path's template, as published: exactly the Struct's keys, each of its type."""
    from dnsflow.edge.service import build
    from harness.fake_upstream import FakeUpstream

    up = FakeUpstream(["web.shop.svc.cluster.local. 300 IN A 10.96.1.10"])
    await up.start()
    tmap = tmp_path / "tenants.yaml"
    tmap.write_text("clients: [{cidr: 127.0.0.0/8, tenant: shop, namespace: shop, pod: web-1,"
                    " service_account: web}]\n")
    bus = MemoryBus(Topics("t."))
    svc = build(Settings(home=tmp_path / "home", topic_prefix="t."), bus,
                listen="127.0.0.1:0", upstreams=[up.address], tenant_map=str(tmap),
                name="edge-test", upstream_timeout=1.0)[0]
    await svc.start()
    try:
        port = svc.status()["udp_port"]
        q = dns.message.make_query("web.shop.svc.cluster.local", "A")
        for _ in range(4):  # miss, full-path hit (memoised), then memoised hits
            await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
        await dns.asyncquery.tcp(q, "127.0.0.1", port=svc.status()["tcp_port"], timeout=3)
        for _ in range(100):
            if svc.publisher.published >= 5:
                break
            await asyncio.sleep(0.02)
    finally:
        await svc.stop()
        await up.stop()
    topic = bus.topic("t.events")
    raws = [m.value for p in topic.partitions for m in p]
    assert len(raws) == 5
    evs = [strict_decode(r) for r in raws]
    assert sorted(e.cache for e in evs).count("hit") >= 3
    assert {e.transport for e in evs} == {"udp", "tcp"}
    assert {(e.pod, e.service_account, e.edge) for e in evs} == {("web-1", "web", "edge-test")}


# ---- the streams' decoder ---------------------------------------------------------------


def test_the_streams_fast_decoder_takes_its_fields_and_types_from_the_struct() -> None:
    from dnsflow.streams.event_decode import FastEvent, decode, decode_fast

    hints = typing.get_type_hints(FastEvent, include_extras=True)
    assert set(hints) <= set(EVENT_FIELDS)
    for name, tp in hints.items():
        if name != "v":
            tp = get_args(tp)[0] if get_origin(tp) is typing.NotRequired else tp
            assert tp == EVENT_TYPES[name], name
    raw = msgspec.json.encode(sample())
    fast = decode_fast(raw)
    assert fast is not None  # would_deny and every other value of the contract: fast path
    full = msgspec.structs.asdict(sample())
    assert fast == {k: full[k] for k in fast}
    slow = decode(raw)
    assert {k: slow[k] for k in fast} == fast
    for decision in get_args(EVENT_TYPES["decision"]):
        assert decode_fast(msgspec.json.encode(sample(decision=decision))) is not None


# ---- the sink's columns and the SQL -----------------------------------------------------


def test_the_sinks_columns_and_decoder_are_the_struct() -> None:
    from dnsflow.sinks.rows import EVENT_COLUMNS, StoredEvent, event_objects, event_row

    assert (*EVENT_FIELDS, "extra") == EVENT_COLUMNS
    assert StoredEvent.__struct_fields__ == EVENT_FIELDS
    stored = {f.name: _base(f.type) for f in msgspec.structs.fields(StoredEvent)}
    assert stored == {k: _base(v) for k, v in EVENT_TYPES.items()}
    raw = msgspec.json.encode(sample())
    assert event_objects([raw], "e") == ([raw], [])  # the fast path takes it as it is
    row = dict(zip(EVENT_COLUMNS, event_row(raw, "e"), strict=True))
    assert row == {**msgspec.structs.asdict(sample()), "extra": ""}


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _paren_body(text: str, start: int) -> str:
    """The text inside the parenthesis opening at or after ``start``."""
    i = text.index("(", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    raise AssertionError("unbalanced parentheses")


def _top_level(body: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in body:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def ddl_columns(sql: str, table: str) -> dict[str, str]:
    """``CREATE TABLE table (...)`` column -> type, plus ``ALTER TABLE table ADD COLUMN``."""
    sql = _strip_comments(sql)
    out: dict[str, str] = {}
    m = re.search(rf"CREATE TABLE IF NOT EXISTS {re.escape(table)}\s*\(", sql)
    if m:
        for part in _top_level(_paren_body(sql, m.start())):
            name, _, rest = part.partition(" ")
            if name.upper() not in ("INDEX", "PROJECTION", "CONSTRAINT"):
                out[name] = rest.strip()
    for m in re.finditer(rf"ALTER TABLE {re.escape(table)}\b(.*?);", sql, re.S):
        for c in re.finditer(r"ADD COLUMN IF NOT EXISTS (\w+) ([^,;]+)", m.group(1)):
            out[c.group(1)] = c.group(2).strip()
    return out


def _sql() -> str:
    return "\n".join(p.read_text() for p in sorted(SQL.glob("*.sql")))


_CH_TYPE = {int: r"(U?Int\d+|DateTime64)", str: r"String", list: r"Array\("}


def check_columns(columns: dict[str, str], fields: dict[str, Any]) -> None:
    assert set(columns) == set(fields), (
        f"only in SQL {sorted(set(columns) - set(fields))}, "
        f"only in the Struct {sorted(set(fields) - set(columns))}")
    for name, tp in fields.items():
        base = _base(tp)
        kind = get_origin(base) or base
        if kind is typing.Literal:
            kind = type(get_args(base)[0])
        assert re.search(_CH_TYPE[kind], columns[name]), f"{name}: {columns[name]} vs {tp}"


def test_the_dns_events_table_has_the_structs_columns() -> None:
    columns = ddl_columns(_sql(), "dnsflow.dns_events")
    for c in COORDINATES:
        columns.pop(c)
    assert columns.pop("extra").startswith("String")
    check_columns(columns, EVENT_TYPES)


def test_the_ingest_tuple_and_view_carry_every_column() -> None:
    sql = _strip_comments(_sql())
    ingest = ddl_columns(sql, "dnsflow.dns_events_ingest")
    from dnsflow.sinks.rows import EVENT_COLUMNS

    tup = ingest["event"]
    assert tup.startswith("Tuple(")
    members = dict(p.split(None, 1) for p in _top_level(_paren_body(tup, 0)))
    assert tuple(members) == EVENT_COLUMNS
    check_columns({k: v for k, v in members.items() if k != "extra"}, EVENT_TYPES)
    view = sql[sql.index("dns_events_ingest_mv"):]
    select = view[view.index("SELECT") + 6:view.index("FROM dnsflow.dns_events_ingest")]
    aliases = [re.split(r"\s+AS\s+", p)[-1].strip() for p in _top_level(select)]
    stored = ddl_columns(sql, "dnsflow.dns_events")
    assert set(aliases) == set(stored) and len(aliases) == len(stored)


def test_a_column_missing_from_the_sql_is_caught() -> None:
    """The DDL check bites: dropping a column (or adding one the Struct lacks) fails."""
    columns = {k: "LowCardinality(String)" for k in EVENT_TYPES}
    columns.update(ts="DateTime64(6, 'UTC')", latency_us="UInt32", policy_version="UInt64",
                   v="UInt8", answers="Array(LowCardinality(String))")
    check_columns(columns, EVENT_TYPES)
    with pytest.raises(AssertionError, match="only in the Struct"):
        check_columns({k: v for k, v in columns.items() if k != "pod"}, EVENT_TYPES)
    with pytest.raises(AssertionError):
        check_columns({**columns, "latency_us": "String"}, EVENT_TYPES)
