"""The sink's event validation accepts and rejects exactly what the core schema does."""

from __future__ import annotations

import orjson
import pytest

from dnsflow.schema import RecordError, parse_event
from dnsflow.sinks.rows import EVENT_COLUMNS, event_row, policy_log_row, telemetry_row


def row_dict(raw: bytes) -> dict:
    """One row as the sink stores it."""
    return dict(zip(EVENT_COLUMNS, event_row(raw, "event"), strict=True))


def test_well_formed_event_is_normalised_like_the_model(events):
    e = events.one(1, qname="WWW.Example.COM.", qtype="aaaa", rcode="nxdomain")
    row = row_dict(orjson.dumps(e))
    model = parse_event(orjson.dumps(e))
    assert row["qname"] == model.qname == "www.example.com"
    assert row["qtype"] == "AAAA" and row["rcode"] == "NXDOMAIN"
    assert row["ts"] == model.ts and row["latency_us"] == e["latency_us"]
    assert row["pod"] == "" and row["extra"] == ""


def test_pod_and_service_account_are_columns_and_unknown_fields_kept(events):
    e = events.one(2, pod="web-1", service_account="web", labels={"app": "web"})
    row = row_dict(orjson.dumps(e))
    assert (row["pod"], row["service_account"]) == ("web-1", "web")
    assert orjson.loads(row["extra"]) == {"labels": {"app": "web"}}


@pytest.mark.parametrize(
    "over",
    [{"ts": "2026-01-02T03:04:05.000006Z"}, {"ts": 1767323045.5}, {"latency_us": 12.0},
     {"policy_version": "7"}, {"v": True}, {"pod": 5}],
)
def test_unusual_but_valid_values_take_the_model_path(events, over):
    e = events.one(3, **over)
    row = row_dict(orjson.dumps(e))
    model = parse_event(orjson.dumps(e))
    assert row["ts"] == model.ts
    assert row["latency_us"] == model.latency_us and row["policy_version"] == model.policy_version


@pytest.mark.parametrize(
    ("over", "drop", "needle"),
    [
        ({"transport": "carrier-pigeon"}, None, "transport"),
        ({"tenant": ""}, None, "tenant"),
        ({"latency_us": -1}, None, "latency_us"),
        ({"answers": "1.2.3.4"}, None, "answers"),
        ({"v": 2}, None, "v"),
        ({}, "qname", "qname"),
    ],
)
def test_invalid_events_are_rejected_with_the_core_reason(events, over, drop, needle):
    e = events.one(4, **over)
    if drop:
        del e[drop]
    raw = orjson.dumps(e)
    with pytest.raises(RecordError) as ours:
        event_row(raw, "event")
    with pytest.raises(RecordError) as core:
        parse_event(raw, "event")
    assert str(ours.value) == str(core.value)
    assert needle in str(ours.value)


def test_values_the_columns_cannot_hold_are_rejected_not_stored(events):
    with pytest.raises(RecordError, match="latency_us"):
        event_row(orjson.dumps(events.one(5, latency_us=2**40)), "event")
    with pytest.raises(RecordError, match="policy_version"):
        raw = orjson.dumps(events.one(5, policy_version=7)).replace(b":7,", b":%d," % 2**64)
        event_row(raw, "event")
    with pytest.raises(RecordError, match="outside the storable range"):
        event_row(orjson.dumps(events.one(5, ts=-5)), "event")


def test_not_json_and_tombstones_are_rejected():
    with pytest.raises(RecordError, match="not valid JSON"):
        event_row(b"{nope", "event")
    with pytest.raises(RecordError, match="tombstone"):
        event_row(None, "event")


def test_telemetry_keeps_whole_record_and_falls_back_to_kafka_time():
    row = telemetry_row(b'{"tenant": "a", "window_s": 60, "queries": 5}', "telemetry", 1_000)
    assert row[0] == 1_000_000 and row[1] == "a" and row[2] == 60
    assert orjson.loads(row[3])["queries"] == 5


def test_policy_log_fields_and_bad_version():
    raw = orjson.dumps({"ts": 5, "tenant": "a", "version": 3, "hash": "h3", "previous_hash": "h2",
                        "source": "yaml", "actor": "alice", "change": "add rule",
                        "document": {"rules": []}})
    row = policy_log_row(raw, "policy_log", 0)
    assert row[:6] == (5, "a", 3, "h3", "h2", "yaml")
    assert orjson.loads(row[8]) == {"rules": []}
    with pytest.raises(RecordError, match="version"):
        policy_log_row(b'{"version": "x"}', "policy_log", 0)
