"""The edge serves several local addresses on one port (169.254.20.10 and the kube-dns
ClusterIP, as NodeLocal DNSCache does) and refuses to forward to itself."""

from __future__ import annotations

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from dnsflow.settings import ConfigError
from harness.peers import free_port


async def test_every_extra_address_answers_over_udp_and_tcp(start_edge) -> None:
    port = free_port()
    svc = await start_edge(listen=f"127.0.0.1:{port}", extra_addresses=["127.0.0.2"])
    assert svc.ports["udp"] == port
    for where in ("127.0.0.1", "127.0.0.2"):
        q = dns.message.make_query("web.shop.svc.cluster.local", "A")
        for ask in (dns.asyncquery.udp, dns.asyncquery.tcp):
            r = await ask(q, where, port=port, timeout=2)
            assert r.rcode() == dns.rcode.NOERROR, (where, ask.__name__)
            assert [str(rr) for rrset in r.answer for rr in rrset] == ["10.96.1.10"]


@pytest.mark.parametrize("own", ["udp://127.0.0.2:{port}", "tcp://127.0.0.1:{port}"])
async def test_an_upstream_that_is_the_edge_itself_is_refused(start_edge, own) -> None:
    port = free_port()
    with pytest.raises((ConfigError, ValueError), match="one of the edge's own addresses"):
        await start_edge(listen=f"127.0.0.1:{port}", extra_addresses=["127.0.0.2"],
                         upstreams=[own.format(port=port)])


async def test_an_extra_address_must_be_an_ip(start_edge) -> None:
    with pytest.raises((ConfigError, ValueError), match="not an IP address"):
        await start_edge(extra_addresses=["kube-dns"])
