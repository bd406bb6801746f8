"""Synthetic multi-tenant workload for ``dnsflow demo``: benign, DGA, tunnelling, discovery.

Each pod is a loopback address (127.0.T.P), so the edge sees distinct clients and maps them
to tenants exactly as it would map pod IPs. Queries go over a real UDP socket to the edge.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass, field

from dnslib import QTYPE, DNSRecord

CLUSTER = "cluster.local"

POPULAR = (
    "github.com", "api.github.com", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org",
    "www.google.com", "storage.googleapis.com", "s3.amazonaws.com", "sts.amazonaws.com",
    "api.stripe.com", "hooks.slack.com", "login.microsoftonline.com", "graph.microsoft.com",
    "www.wikipedia.org", "cdn.jsdelivr.net", "fonts.gstatic.com", "www.cloudflare.com",
    "d1a2b3c4d5e6f7.cloudfront.net", "sentry.io", "api.datadoghq.com", "www.youtube.com",
    "auth.docker.io", "registry-1.docker.io", "quay.io", "gcr.io", "ghcr.io", "time.apple.com",
    "ocsp.digicert.com", "www.bbc.co.uk", "api.twilio.com", "www.example.com", "mail.google.com",
)


@dataclass
class Pod:
    tenant: str
    namespace: str
    name: str
    ip: str
    role: str = "benign"  # benign | dga | tunnel | discovery


@dataclass
class World:
    """Tenants, their namespaces and services, and the pods that ask."""

    services: dict[str, dict[str, str]]
    namespace_tenant: dict[str, str]
    pods: list[Pod]
    nxdomain: set[str] = field(default_factory=set)
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def tenant_map(self) -> list[dict[str, str]]:
        """CIDR → tenant/namespace entries for the edge's static identity map."""
        out = []
        for pod in self.pods:
            out.append({"cidr": f"{pod.ip}/32", "tenant": pod.tenant,
                        "namespace": pod.namespace, "pod": pod.name})
        return out


def demo_world() -> World:
    services = {
        "shop": {"web": "10.96.1.10", "cart": "10.96.1.11", "catalog": "10.96.1.12"},
        "payments": {"ledger": "10.96.2.10", "gateway": "10.96.2.11"},
        "payments-batch": {"settle": "10.96.2.20"},
        "analytics": {"warehouse": "10.96.3.10", "etl": "10.96.3.11"},
    }
    ns_tenant = {"shop": "shop", "payments": "payments", "payments-batch": "payments",
                 "analytics": "analytics"}
    pods = [
        Pod("shop", "shop", "web-7d9f", "127.0.1.10"),
        Pod("shop", "shop", "cart-5c2a", "127.0.1.11"),
        Pod("shop", "shop", "catalog-9b1e", "127.0.1.12"),
        Pod("shop", "shop", "recommender-66f1", "127.0.1.66", role="dga"),
        Pod("payments", "payments", "ledger-0", "127.0.2.10"),
        Pod("payments", "payments", "gateway-8c4d", "127.0.2.11"),
        Pod("payments", "payments-batch", "settle-job-x2", "127.0.2.20"),
        Pod("payments", "payments", "debug-shell", "127.0.2.99", role="discovery"),
        Pod("analytics", "analytics", "warehouse-0", "127.0.3.10"),
        Pod("analytics", "analytics", "etl-4f7a", "127.0.3.11"),
        Pod("analytics", "analytics", "notebook-3a9c", "127.0.3.77", role="tunnel"),
    ]
    extras = {  # names only some tenants ask for, which their demo policies act on
        "shop": ("ads.doubleclick.net", "pixel.tracker.example", "catalog.shop.svc.cluster.local"),
        "payments": ("vault.payments.internal", "api.cardnet.example", "pastebin.com",
                     "catalog.shop.svc.cluster.local"),
        "analytics": ("hidden-service.onion", "warehouse", "etl"),
    }
    return World(services, ns_tenant, pods, extras=extras)


class QueryMaker:
    """Chooses what each pod asks next, by its role."""

    def __init__(self, world: World, seed: int = 7) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self._seq = 0
        self._secret = bytes(self.rng.getrandbits(8) for _ in range(4096))

    def next(self, pod: Pod) -> tuple[str, str]:
        rng = self.rng
        if pod.role == "dga" and rng.random() < 0.6:
            return self._dga(), "A"
        if pod.role == "tunnel" and rng.random() < 0.6:
            return self._tunnel(), rng.choice(("TXT", "TXT", "TXT", "A", "CNAME"))
        if pod.role == "discovery" and rng.random() < 0.5:
            return self._discovery(pod)
        extras = self.world.extras.get(pod.tenant)
        if extras and rng.random() < 0.08:
            return rng.choice(extras), "A"
        if rng.random() < 0.45:
            own = self.world.services.get(pod.namespace, {})
            if own:
                svc = rng.choice(sorted(own))
                return f"{svc}.{pod.namespace}.svc.{CLUSTER}", "A"
        name = POPULAR[min(int(rng.paretovariate(1.2)) - 1, len(POPULAR) - 1)]
        return name, rng.choice(("A", "A", "A", "AAAA"))

    def _dga(self) -> str:
        letters = "abcdefghijklmnopqrstuvwxyz"
        n = self.rng.randint(10, 18)
        label = "".join(self.rng.choice(letters) for _ in range(n))
        name = f"{label}.{self.rng.choice(('com', 'net', 'org', 'info', 'biz'))}"
        if self.rng.random() < 0.95:
            self.world.nxdomain.add(name)
        return name

    def _tunnel(self) -> str:
        self._seq += 1
        start = (self._seq * 37) % (len(self._secret) - 40)
        chunk = base64.b32encode(self._secret[start : start + 35]).decode().rstrip("=").lower()
        return f"{chunk[:56]}.{self._seq:x}.t.exfil-relay.net"

    def _discovery(self, pod: Pod) -> tuple[str, str]:
        others = [ns for ns, t in self.world.namespace_tenant.items() if t != pod.tenant]
        ns = self.rng.choice(others)
        svc = self.rng.choice(sorted(self.world.services[ns]))
        form = self.rng.randrange(4)
        if form == 0:
            return f"{svc}.{ns}.svc.{CLUSTER}", "A"
        if form == 1:
            return f"_http._tcp.{svc}.{ns}.svc.{CLUSTER}", "SRV"
        if form == 2:
            return f"{svc.upper()}.{ns}.SVC.{CLUSTER.upper()}.", "A"
        ip = self.world.services[ns][svc].split(".")
        return ".".join(reversed(ip)) + ".in-addr.arpa", "PTR"


@dataclass
class TenantCounts:
    """Queries one tenant's pods sent, and how many got an answer (the demo's summary
    compares them with the events; rcodes are read from the events themselves)."""

    sent: int = 0
    answered: int = 0
    timeouts: int = 0


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 2:
            fut = self.pending.pop(int.from_bytes(data[:2], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)


async def drive(
    world: World, host: str, port: int, seconds: float, qps: float = 200.0, seed: int = 7
) -> dict[str, TenantCounts]:
    """Send ``qps`` queries per second for ``seconds`` from the world's pods; count answers."""
    loop = asyncio.get_running_loop()
    maker = QueryMaker(world, seed)
    clients: dict[str, _Client] = {}
    for pod in world.pods:
        _, proto = await loop.create_datagram_endpoint(
            _Client, local_addr=(pod.ip, 0), remote_addr=(host, port)
        )
        clients[pod.ip] = proto
    counts = {pod.tenant: TenantCounts() for pod in world.pods}
    weights = [3.0 if p.role != "benign" else 1.0 for p in world.pods]
    tasks: set[asyncio.Task[None]] = set()

    async def one(pod: Pod) -> None:
        qname, qtype = maker.next(pod)
        req = DNSRecord.question(qname, qtype)
        client = clients[pod.ip]
        while req.header.id in client.pending:
            req.header.id = (req.header.id + 1) & 0xFFFF
        fut: asyncio.Future[bytes] = loop.create_future()
        client.pending[req.header.id] = fut
        c = counts[pod.tenant]
        c.sent += 1
        assert client.transport is not None
        client.transport.sendto(req.pack())
        try:
            await asyncio.wait_for(fut, 2.0)
        except TimeoutError:
            client.pending.pop(req.header.id, None)
            c.timeouts += 1
            return
        c.answered += 1

    tick = 0.05
    per_tick = qps * tick
    carry = 0.0
    deadline = time.monotonic() + seconds
    rng = random.Random(seed + 1)
    while time.monotonic() < deadline:
        carry += per_tick
        n, carry = int(carry), carry - int(carry)
        for pod in rng.choices(world.pods, weights, k=n):
            t = asyncio.ensure_future(one(pod))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.sleep(tick)
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    for client in clients.values():
        if client.transport:
            client.transport.close()
    return counts


__all__ = ["QTYPE", "World", "demo_world", "drive"]
