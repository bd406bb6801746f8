"""The edge against a real unbound on loopback: every transport as listener (dnspython and
httpx clients) and as upstream (unbound serving UDP, TCP, DoT and DoH), truncation and TCP
retry, failover, FORMERR."""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import httpx
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.service import build
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.peers import Dnsdist, Unbound, free_port

pytestmark = pytest.mark.skipif(not shutil.which("unbound"), reason="unbound not installed")

LOCAL = [
    "www.bench.test. 300 IN A 192.0.2.10",
    "web.shop.svc.cluster.local. 300 IN A 10.96.1.10",
    "ledger.payments.svc.cluster.local. 300 IN A 10.96.2.10",
    'big.bench.test. 300 IN TXT "' + "a" * 250 + '" "' + "b" * 250 + '" "' + "c" * 250 + '"',
    'big.bench.test. 300 IN TXT "' + "d" * 250 + '" "' + "e" * 250 + '" "' + "f" * 250 + '"',
]


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory):
    u = Unbound(LOCAL, zones=("bench.test", "cluster.local"), tls_port=free_port(),
                https_port=free_port(), workdir=tmp_path_factory.mktemp("unbound"))
    u.start()
    yield u
    u.stop()


@pytest.fixture
async def edge_factory(tmp_path: Path):
    started = []

    async def make(**kw):
        settings = Settings(home=tmp_path / "home", topic_prefix="t.")
        opts = {"listen": "127.0.0.1:0", "name": "edge-it", "upstream_timeout": 2.0,
                "dot_listen": "127.0.0.1:0", "doh_listen": "127.0.0.1:0"}
        opts.update(kw)
        svc = build(settings, MemoryBus(Topics("t.")), **opts)[0]
        await svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop()


def client_tls(svc) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(svc.tls_cert_path))


async def all_transports(svc, name: str) -> dict[str, dns.message.Message]:
    st = svc.status()
    q = dns.message.make_query(name, "A")
    out = {
        "udp": await dns.asyncquery.udp(q, "127.0.0.1", port=st["udp_port"], timeout=3),
        "tcp": await dns.asyncquery.tcp(q, "127.0.0.1", port=st["tcp_port"], timeout=3),
        "dot": await dns.asyncquery.tls(q, "127.0.0.1", port=st["dot_port"], timeout=3,
                                        ssl_context=client_tls(svc),
                                        server_hostname="localhost"),
    }
    url = f"https://localhost:{st['doh_port']}/dns-query"
    async with httpx.AsyncClient(verify=client_tls(svc), http2=True) as h2c:
        # HTTP/2 (ALPN h2): several queries multiplexed on one connection
        replies = await asyncio.gather(*[
            h2c.post(url, content=q.to_wire(),
                     headers={"content-type": "application/dns-message"}) for _ in range(5)])
        assert {r.http_version for r in replies} == {"HTTP/2"}
        assert all(r.status_code == 200 for r in replies)
        out["doh-h2"] = dns.message.from_wire(replies[0].content)
    async with httpx.AsyncClient(verify=client_tls(svc)) as http:
        wire = q.to_wire()
        post = await http.post(url, content=wire,
                               headers={"content-type": "application/dns-message"})
        assert post.status_code == 200
        assert post.headers["content-type"] == "application/dns-message"
        out["doh-post"] = dns.message.from_wire(post.content)
        b64 = base64.urlsafe_b64encode(wire).rstrip(b"=").decode()
        get = await http.get(url, params={"dns": b64})
        assert get.status_code == 200
        out["doh-get"] = dns.message.from_wire(get.content)
        bad = await http.post(url, content=b"x", headers={"content-type": "text/plain"})
        assert bad.status_code == 415
        assert (await http.get(url)).status_code == 400
    return out


@pytest.mark.parametrize("scheme", ["udp", "tcp", "tls", "https"])
async def test_every_listener_with_every_upstream_transport(unbound, edge_factory,
                                                            scheme) -> None:
    url = {"udp": f"udp://127.0.0.1:{unbound.port}",
           "tcp": f"tcp://127.0.0.1:{unbound.port}",
           "tls": f"tls://127.0.0.1:{unbound.tls_port}@localhost",
           "https": f"https://127.0.0.1:{unbound.https_port}/dns-query"}[scheme]
    svc = await edge_factory(upstreams=[url], upstream_ca=str(unbound.cert))
    answers = await all_transports(svc, "www.bench.test")
    for transport, msg in answers.items():
        assert msg.rcode() == dns.rcode.NOERROR, transport
        assert [str(r) for r in msg.answer[0]] == ["192.0.2.10"], transport
    nx = await dns.asyncquery.udp(dns.message.make_query("nope.bench.test", "A"), "127.0.0.1",
                                  port=svc.status()["udp_port"], timeout=3)
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority
    up = svc.status()["upstreams"][svc.pool.names[0]]
    assert up["errors"] == 0 and up["queries"] >= 1


@pytest.mark.skipif(not shutil.which("dnsdist"), reason="dnsdist not installed")
async def test_dnsdist_as_dot_and_doh_upstream(unbound, edge_factory, tmp_path) -> None:
    dd = Dnsdist(unbound.port, tmp_path / "dnsdist").start()
    try:
        for i, url in enumerate((f"tls://127.0.0.1:{dd.tls_port}@localhost",
                                 f"https://127.0.0.1:{dd.https_port}/dns-query")):
            svc = await edge_factory(upstreams=[url], upstream_ca=str(dd.cert), cache_size=1,
                                     name=f"edge-dd{i}")
            port = svc.status()["udp_port"]
            for name in ("www.bench.test", "nope.bench.test", "www.bench.test"):
                q = dns.message.make_query(name, "A")
                r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
                want = dns.rcode.NOERROR if name.startswith("www") else dns.rcode.NXDOMAIN
                assert r.rcode() == want, url
            assert svc.status()["upstreams"][svc.pool.names[0]]["errors"] == 0
    finally:
        dd.stop()


async def test_dot_and_doh_upstreams_reuse_connections(unbound, edge_factory) -> None:
    svc = await edge_factory(upstreams=[f"tls://127.0.0.1:{unbound.tls_port}@localhost"],
                             upstream_ca=str(unbound.cert), cache_size=1)
    port = svc.status()["udp_port"]
    for i in range(5):
        q = dns.message.make_query(f"n{i}.bench.test", "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
        assert r.rcode() == dns.rcode.NXDOMAIN
    assert svc.pool.upstreams[0].connects == 1


async def test_truncation_and_tcp_retry(unbound, edge_factory) -> None:
    svc = await edge_factory(upstreams=[f"udp://127.0.0.1:{unbound.port}"])
    port = svc.status()["udp_port"]
    q = dns.message.make_query("big.bench.test", "TXT", use_edns=0, payload=1232)
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=3)
    assert r.flags & dns.flags.TC and not r.answer       # > 1232 bytes: TC over UDP
    assert svc.pool.upstreams[0].tcp_fallbacks == 1         # edge itself retried over TCP
    r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, timeout=3)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 2
    # a 4096-byte EDNS buffer gets no more than 1232 bytes over UDP (unbound's max-udp-size
    # default too) unless the operator raises max_udp_size
    q4k = dns.message.make_query("big.bench.test", "TXT", use_edns=0, payload=4096)
    r = await dns.asyncquery.udp(q4k, "127.0.0.1", port=port, timeout=3)
    assert r.flags & dns.flags.TC and not r.answer
    big = await edge_factory(upstreams=[f"udp://127.0.0.1:{unbound.port}"], max_udp_size=4096,
                             name="edge-big")
    r = await dns.asyncquery.udp(q4k, "127.0.0.1", port=big.status()["udp_port"], timeout=3)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 2


async def test_failover_to_the_next_upstream(unbound, edge_factory) -> None:
    dead = free_port()
    svc = await edge_factory(upstreams=[f"udp://127.0.0.1:{dead}",
                                        f"udp://127.0.0.1:{unbound.port}"],
                             upstream_timeout=1.0, cache_size=1)
    port = svc.status()["udp_port"]
    for i in range(4):
        q = dns.message.make_query("www.bench.test" if i % 2 else f"x{i}.bench.test", "A")
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, timeout=5)
        assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    ups = svc.status()["upstreams"]
    assert ups[f"udp://127.0.0.1:{dead}"]["up"] is False
    assert ups[f"udp://127.0.0.1:{unbound.port}"]["up"] is True


async def test_formerr_over_tcp_keeps_the_connection(unbound, edge_factory) -> None:
    svc = await edge_factory(upstreams=[f"udp://127.0.0.1:{unbound.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.status()["tcp_port"])
    bad = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\xc0\x0c\x00\x01\x00\x01"
    good = dns.message.make_query("www.bench.test", "A").to_wire()
    for msg in (bad, good):
        writer.write(len(msg).to_bytes(2, "big") + msg)
    await writer.drain()
    replies = []
    for _ in range(2):
        ln = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 3), "big")
        replies.append(dns.message.from_wire(await reader.readexactly(ln)))
    writer.close()
    by_id = {r.id: r for r in replies}
    assert by_id[0xABCD].rcode() == dns.rcode.FORMERR
    assert str(by_id[dns.message.from_wire(good).id].answer[0][0]) == "192.0.2.10"
