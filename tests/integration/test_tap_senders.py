"""Real dnstap senders into ``dnsflow tap``: Debian's unbound (built with dnstap) and
dnsdist (``newFrameStreamUnixLogger`` + ``DnstapLogAction``/``DnstapLogResponseAction``).

Each test asks from known loopback clients (source addresses 127.0.0.2 and 127.0.0.3, mapped
to two tenants), over UDP and TCP, names that exist and names that do not, and checks that
every query arrives as exactly one event: right tenant, question, rcode, transport, a
latency, and the sender's identity as ``edge``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import msgspec
import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.tap.service import TapService, build
from dnsflow.schema import Event
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.peers import Dnsdist, Unbound

TENANTS = """
default: {tenant: guests, namespace: guests}
clients:
  - {cidr: 127.0.0.2/32, tenant: shop, namespace: shop, pod: web-1, service_account: web}
  - {cidr: 127.0.0.3/32, tenant: payments, namespace: payments, pod: ledger-0}
"""
CLIENTS = {"127.0.0.2": ("shop", "web-1", "web"), "127.0.0.3": ("payments", "ledger-0", "")}
LOCAL = [f"h{i}.bench.test. 300 IN A 10.0.{i // 256}.{i % 256}" for i in range(100)]
LOCAL += [f"h{i}.bench.test. 300 IN AAAA 2001:db8::{i:x}" for i in range(100)]


@pytest.fixture
def workdir() -> AsyncIterator[Path]:
    # short: a unix socket path must fit in 108 bytes
    d = Path(tempfile.mkdtemp(prefix="tap-it-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def tap(workdir: Path) -> AsyncIterator[tuple[TapService, MemoryBus, str]]:
    (workdir / "tenants.yaml").write_text(TENANTS)
    bus = MemoryBus(Topics("t."))
    await bus.start()
    sock = str(workdir / "tap.sock")
    svc = build(Settings(home=workdir / "home", topic_prefix="t."), bus,
                listen=[f"unix:{sock}", "tcp:127.0.0.1:0"],
                tenant_map=str(workdir / "tenants.yaml"), name="tap-it", pair_timeout=2.0)
    await svc.start()
    yield svc, bus, sock
    await svc.stop()
    await bus.stop()


async def ask(port: int, n: int) -> list[tuple[str, str, str, str, str]]:
    """n queries from the two clients: (client, qname, qtype, rcode, transport) each."""
    sent = []
    for i in range(n):
        client = "127.0.0.2" if i % 2 else "127.0.0.3"
        name, want = (f"h{i % 100}.bench.test", "NOERROR") if i % 4 else (
            f"missing{i}.bench.test", "NXDOMAIN")
        qtype = "AAAA" if i % 3 == 0 else "A"
        q = dns.message.make_query(name, qtype)
        if i % 5 == 0:
            r = await dns.asyncquery.tcp(q, "127.0.0.1", port=port, source=client, timeout=3)
            transport = "tcp"
        else:
            r = await dns.asyncquery.udp(q, "127.0.0.1", port=port, source=client, timeout=3)
            transport = "udp"
        assert dns.rcode.to_text(r.rcode()) == want
        sent.append((client, name, qtype, want, transport))
    return sent


async def events_of(svc: TapService, bus: MemoryBus, clients: set[str], want: int,
                    timeout: float = 20.0) -> list[Event]:
    """The events of ``clients`` once ``want`` arrived and nothing more came for a while
    (a duplicate would arrive late; senders flush their queues about every second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    consumer = bus.consumer([bus.topics.events], None)
    await consumer.start()
    out: list[Event] = []
    quiet_since = loop.time()
    try:
        while loop.time() < deadline:
            got = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for m in got:
                e = msgspec.json.decode(m.value, type=Event)
                if e.client_ip in clients:
                    out.append(e)
            if got:
                quiet_since = loop.time()
            if len(out) >= want and loop.time() - quiet_since > 2.5:
                break
    finally:
        await consumer.stop()
    return out


def check(events: list[Event], sent: list[tuple[str, str, str, str, str]], edge: str) -> None:
    seen = sorted((e.client_ip, e.qname, e.qtype, e.rcode, e.transport) for e in events)
    assert seen == sorted(sent)  # every query exactly once
    for e in events:
        tenant, pod, sa = CLIENTS[e.client_ip]
        assert (e.tenant, e.namespace, e.pod, e.service_account) == (tenant, tenant, pod, sa)
        assert e.edge == edge
        assert e.latency_us >= 0 and e.cache == "none" and e.decision == "allow"
        if e.rcode == "NOERROR":
            assert e.answers and e.answers[0].startswith(e.qtype + " ")


async def via_dnsdist(tap: tuple[TapService, MemoryBus, str], workdir: Path, n: int,
                      make: Callable[[int, Path], Dnsdist]
                      ) -> tuple[list[Event], list[tuple[str, str, str, str, str]]]:
    """``n`` queries through a dnsdist (``make(backend port, its workdir)``) in front of
    unbound: the tap's events of them, and what was asked."""
    svc, bus, _ = tap
    ub = Unbound(LOCAL, workdir=workdir / "unbound").start()
    dd = None
    try:
        dd = make(ub.port, workdir / "dnsdist").start()
        sent = await ask(dd.port, n)
        return await events_of(svc, bus, set(CLIENTS), len(sent)), sent
    finally:
        if dd is not None:
            dd.stop()
        ub.stop()


@pytest.mark.skipif(not shutil.which("unbound"), reason="unbound not installed")
async def test_unbound_dnstap_every_query_is_one_event(tap, workdir: Path) -> None:
    svc, bus, sock = tap
    ub = Unbound(LOCAL, workdir=workdir / "unbound", dnstap_socket=sock).start()
    try:
        sent = await ask(ub.port, 120)
        events = await events_of(svc, bus, set(CLIENTS), len(sent))
    finally:
        ub.stop()
    check(events, sent, socket.gethostname())  # unbound's dnstap identity: its host name
    st = svc.status()
    assert st["decode_errors"] == 0 and st["listeners"][0]["protocol_errors"] == 0
    assert st["pairing"]["unpaired"] == 0 and st["pairing"]["orphan_responses"] == 0
    assert st["adjacent_pairs"] > 0  # unbound's layout: its pairs are read from the stream


@pytest.mark.skipif(not shutil.which("unbound") or not shutil.which("dnsdist"),
                    reason="unbound or dnsdist not installed")
async def test_dnsdist_dnstap_every_query_is_one_event(tap, workdir: Path) -> None:
    svc, _, sock = tap
    events, sent = await via_dnsdist(tap, workdir, 120, lambda port, wd: Dnsdist(
        port, wd, dnstap_socket=sock, dnstap_identity="dnsdist-it"))
    check(events, sent, "dnsdist-it")
    assert svc.status()["decode_errors"] == 0


class TcpDnsdist(Dnsdist):
    """dnsdist logging to ``newFrameStreamTcpLogger`` (the harness writes the unix one)."""

    def __init__(self, backend_port: int, workdir: Path, tcp: str) -> None:
        super().__init__(backend_port, workdir, dnstap_socket="@unix@",
                         dnstap_identity="dnsdist-tcp")
        self.tcp = tcp

    def config(self) -> str:
        text = super().config()
        unix = 'newFrameStreamUnixLogger("@unix@")'
        assert unix in text
        return text.replace(unix, f'newFrameStreamTcpLogger("{self.tcp}")')


@pytest.mark.skipif(not shutil.which("unbound") or not shutil.which("dnsdist"),
                    reason="unbound or dnsdist not installed")
async def test_dnsdist_over_tcp_frame_streams(tap, workdir: Path) -> None:
    svc = tap[0]
    tcp = svc.status()["listen"][1].removeprefix("tcp:")
    events, sent = await via_dnsdist(tap, workdir, 40,
                                     lambda port, wd: TcpDnsdist(port, wd, tcp))
    check(events, sent, "dnsdist-tcp")
    assert svc.status()["listeners"][1]["accepted"] >= 1
