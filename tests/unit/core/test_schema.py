"""Event schema v1: validation errors name the field; ts accepts the documented forms."""

from __future__ import annotations

import pytest

from dnsflow.schema import EVENT_FIELDS, RecordError, encode_event, parse_event


def event(**kw):
    base = {
        "v": 1, "ts": 1_764_000_000_000_000, "edge": "e1", "tenant": "shop",
        "namespace": "shop", "client_ip": "10.0.0.1", "transport": "udp",
        "qname": "Example.COM.", "qtype": "a", "rcode": "NOERROR", "answers": ["1.2.3.4"],
        "latency_us": 120, "cache": "miss", "decision": "allow", "rule": "",
        "policy_version": 3, "upstream": "udp://127.0.0.1:53",
    }
    base.update(kw)
    return base


def test_round_trip_normalises_qname_and_mnemonics():
    ev = parse_event(encode_event(event()))
    assert ev.qname == "example.com"
    assert ev.qtype == "A"
    assert set(EVENT_FIELDS) <= set(ev.model_dump())


@pytest.mark.parametrize("ts", ["2025-11-24T16:00:00Z", "2025-11-24T16:00:00.000000+00:00",
                                1_764_000_000.0, "1764000000000000"])
def test_ts_forms_become_integer_microseconds(ts):
    assert parse_event(event(ts=ts)).ts == 1_764_000_000_000_000


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "expected a JSON object"),
        (encode_event(event(transport="carrier-pigeon")), "transport"),
        (encode_event(event(latency_us=-5)), "latency_us"),
        (encode_event({k: v for k, v in event().items() if k != "tenant"}), "tenant"),
    ],
)
def test_bad_records_name_what_is_wrong(raw, needle):
    with pytest.raises(RecordError, match=needle):
        parse_event(raw, where="dnsflow.events[0]@7")
