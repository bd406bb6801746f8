"""One upstream URL grammar: the edge's configuration and policies accept and refuse the
same addresses with the same messages (bare ``host[:port]`` is the edge's only extra)."""

from __future__ import annotations

import pytest

from dnsflow.edge.upstream.base import parse_upstream
from dnsflow.policies.model import check_upstream
from dnsflow.upstream_url import UpstreamURLError, parse_upstream_url

GOOD = ["udp://10.0.0.53", "udp://10.0.0.53:5353", "tcp://[::1]:53", "tls://1.1.1.1@one.one",
        "dot://dns.quad9.net", "https://dns.google/dns-query", "doh://dns.google",
        "https://user:pw@doh.example:8443/q", "udp://resolver_1.corp.internal"]
BAD = [("ftp://1.2.3.4", "unknown scheme 'ftp'"), ("udp://1.1.1.1/x", "path is only allowed"),
       ("tls://1.1.1.1:853@", "empty SNI"), ("udp://1.1.1.1:99999", "out of range"),
       ("https://", "missing host"), ("udp://1.1.1.1:0", "port 0"),
       ("udp://bad host", "not a valid host name"), ("tls://1.1.1.1@bad..sni", "not a valid"),
       ("", "empty upstream address")]


@pytest.mark.parametrize("url", GOOD)
def test_good_addresses_pass_both(url: str) -> None:
    assert check_upstream(url) == url
    assert parse_upstream(url) == parse_upstream_url(url)


@pytest.mark.parametrize(("url", "needle"), BAD)
def test_bad_addresses_fail_both_with_one_message(url: str, needle: str) -> None:
    with pytest.raises(UpstreamURLError) as edge_err:
        parse_upstream(url)
    with pytest.raises(UpstreamURLError) as policy_err:
        check_upstream(url)
    assert needle in str(edge_err.value)
    assert str(edge_err.value) == str(policy_err.value)


def test_only_the_edge_takes_a_bare_address_and_credentials_never_show() -> None:
    assert str(parse_upstream("10.0.0.53")) == "udp://10.0.0.53:53"
    with pytest.raises(UpstreamURLError, match="expected udp://"):
        check_upstream("10.0.0.53")
    doh = parse_upstream("doh://user:secret@doh.example/q")
    assert doh.url == "https://user:secret@doh.example/q" and "secret" not in str(doh)
    with pytest.raises(UpstreamURLError) as err:
        parse_upstream("ftp://user:secret@x")
    assert "secret" not in str(err.value)
