"""dnstap records -> what an event needs (question, client, times, rcode, answers)."""

from __future__ import annotations

import pytest
from dnstap_pb import dnstap_pb2

from dnsflow.edge.tap.decode import DecodeError, decode


def test_client_query_and_response(dnstap) -> None:
    q = decode(dnstap(5, "Web.Shop.TEST", qid=7, client="127.0.0.2", port=5300))
    assert q is not None and not q.response and q.client_side
    assert (q.qname, q.qtype, q.qid, q.client_ip, q.client_port) == (
        "web.shop.test", "A", 7, "127.0.0.2", 5300)
    assert q.identity == "unbound-1" and q.transport == "udp"
    assert q.query_us == 1_700_000_000_000_000
    r = decode(dnstap(6, "web.shop.test", qid=7, client="127.0.0.2", port=5300))
    assert r is not None and r.response
    assert (r.rcode, r.answers) == ("NOERROR", ["A 10.0.0.1"])
    assert r.response_us == 1_700_000_000_000_000
    assert q.key("e") == r.key("e")  # the question is compared without letter case


def test_rcodes_ipv6_and_transports(dnstap) -> None:
    r = decode(dnstap(6, "gone.shop.test", rcode=3, client="fd00::7", protocol=3))
    assert r is not None
    assert (r.rcode, r.answers, r.client_ip, r.transport) == ("NXDOMAIN", [], "fd00::7", "dot")
    for proto, name in ((1, "udp"), (2, "tcp"), (3, "dot"), (4, "doh")):
        m = decode(dnstap(5, protocol=proto))
        assert m is not None and m.transport == name
    aaaa = decode(dnstap(6, qtype="AAAA", answer="2001:db8::1"))
    assert aaaa is not None and aaaa.answers == ["AAAA 2001:db8::1"] and aaaa.qtype == "AAAA"


def test_resolver_side_names_its_upstream(dnstap) -> None:
    m = decode(dnstap(3))  # RESOLVER_QUERY
    assert m is not None and not m.client_side and m.server == "127.0.0.1:53"


def test_not_dns_messages_are_skipped(dnstap) -> None:
    d = dnstap_pb2.Dnstap.FromString(dnstap(5))
    d.message.type = 11  # TOOL_QUERY
    assert decode(d.SerializeToString()) is None


def test_garbage_is_a_decode_error(dnstap) -> None:
    for raw in (b"\xff\xff\xff", dnstap(5)[:-10], b"\x0a\x05ab"):
        with pytest.raises(DecodeError, match="not a dnstap"):
            decode(raw)


def test_message_without_dns_or_with_a_short_one(dnstap) -> None:
    d = dnstap_pb2.Dnstap.FromString(dnstap(5))
    d.message.ClearField("query_message")
    with pytest.raises(DecodeError, match="without its DNS message"):
        decode(d.SerializeToString())
    d.message.query_message = b"\x00\x01"
    with pytest.raises(DecodeError, match="shorter than a header"):
        decode(d.SerializeToString())


def test_unparseable_answers_keep_the_header_rcode(dnstap) -> None:
    d = dnstap_pb2.Dnstap.FromString(dnstap(6, rcode=0))
    d.message.response_message = d.message.response_message[:-2]  # the A record cut short
    m = decode(d.SerializeToString())
    assert m is not None and m.rcode == "NOERROR" and m.answers == [] and m.wire_errors == 1
