"""Kafka → ClickHouse (chDB) ingest rate and bytes on disk per event, for 1 M realistic events.

dnsflow: the sink (same code as ``dnsflow sink``: consume, validate, columnar insert, commit)
reading the events from a real Kafka topic into chDB. Peer: a plain
``INSERT INTO ... FORMAT JSONEachRow`` of the same JSON straight into ClickHouse (no Kafka,
no validation), into a table of the same schema. Disk figures are after ``OPTIMIZE FINAL``
from ``system.parts``. Uses ``--kafka`` or DNSFLOW_TEST_KAFKA, else starts
``scripts/kafka-local`` in a temporary directory and stops it afterwards.

    python -m bench.sink [--kafka BOOTSTRAP] [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

from dnsflow.schema import now_us

ROOT = Path(__file__).resolve().parent.parent

# ---- realistic multi-tenant DNS traffic ---------------------------------------------------

_WORDS = ("api", "auth", "cdn", "static", "img", "login", "mail", "app", "data", "edge",
          "metrics", "logs", "events", "pay", "shop", "search", "media", "video", "files",
          "update", "telemetry", "push", "ws", "graph", "assets", "docs", "status", "id")
_BRANDS = ("github", "amazonaws", "googleapis", "cloudflare", "akamaiedge", "fastly",
           "docker", "npmjs", "pypi", "slack", "stripe", "sentry", "datadoghq", "okta",
           "azure", "office", "apple", "mozilla", "ubuntu", "debian", "gitlab", "twilio",
           "segment", "newrelic", "pagerduty", "atlassian", "zoom", "salesforce")
_TLDS = ("com", "net", "io", "org", "co.uk", "dev", "cloud")
_QTYPES = ("A", "AAAA", "SRV", "PTR", "TXT", "MX", "HTTPS", "CNAME")
_QTYPE_P = (0.55, 0.33, 0.03, 0.03, 0.02, 0.01, 0.02, 0.01)
_TRANSPORTS = ("udp", "tcp", "dot", "doh")
_TRANSPORT_P = (0.90, 0.05, 0.03, 0.02)
_UPSTREAMS = ("tls://1.1.1.1:853@cloudflare-dns.com", "tls://9.9.9.9:853@dns.quad9.net",
              "https://dns.google/dns-query")


def _ip4(h: bytes) -> str:
    return f"{h[0] % 223 + 1}.{h[1]}.{h[2]}.{h[3] % 254 + 1}"


def _ip6(h: bytes) -> str:
    return "2001:db8:" + ":".join(f"{h[i]:02x}{h[i + 1]:02x}" for i in range(4, 12, 2)) + "::1"


class Traffic:
    """Tenants with namespaces, pods and services; Zipf-popular external names; ndots:5
    search-list expansions (NXDOMAIN); cache hits; a little policy enforcement."""

    def __init__(self, seed: int = 7, tenants: int = 24) -> None:
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.external = [
            f"{w}.{b}{k if k else ''}.{t}"
            for k in range(30) for b in _BRANDS for w in _WORDS[: 4 + k % 10] for t in _TLDS[:1]
        ]
        r.shuffle(self.external)
        self.tenants = []
        for t in range(tenants):
            name = f"tenant-{t:02d}"
            nss = [f"{name}-{s}" for s in ("web", "api", "jobs", "data", "ops")[: 2 + t % 4]]
            services = [f"{w}.{ns}.svc.cluster.local" for ns in nss
                        for w in _WORDS[: 5 + (t * 7) % 20]]
            pods = []
            for p in range(10 + (t * 37) % 190):
                ns = nss[p % len(nss)]
                suffix = hashlib.blake2b(f"{t}/{p}".encode(), digest_size=3).hexdigest()[:5]
                pods.append((ns, f"{ns.rsplit('-', 1)[1]}-{p:04d}-{suffix}",
                             f"sa-{ns.rsplit('-', 1)[1]}", f"10.{t}.{p // 250}.{p % 250 + 2}",
                             f"node-{(p * 7 + t) % 12:02d}"))
            self.tenants.append((name, nss, services, pods, 1_700_000_000_000_000 + t * 1_000))
        w = 1.0 / np.arange(1, tenants + 1) ** 0.9
        self.tenant_p = w / w.sum()
        self._answers: dict[tuple[str, str], list[str]] = {}

    def answers(self, qname: str, qtype: str, internal: bool) -> list[str]:
        key = (qname, qtype)
        got = self._answers.get(key)
        if got is None:
            h = hashlib.blake2b(qname.encode(), digest_size=16).digest()
            if internal:
                got = [f"10.96.{h[0]}.{h[1]}"] if qtype == "A" else []
            elif qtype == "A":
                got = [_ip4(h[i:]) for i in range(0, 1 + h[5] % 3 * 4, 4)]
            elif qtype == "AAAA":
                got = [_ip6(h)] if h[6] % 3 else []
            elif qtype == "CNAME" or qtype == "HTTPS":
                got = [f"{qname.split('.', 1)[1]}.cdn.cloudflare.net"]
            else:
                got = []
            self._answers[key] = got
        return got

    def events(self, n: int, start_us: int) -> Iterator[dict]:
        r = self.rng
        tenant_idx = r.choice(len(self.tenants), size=n, p=self.tenant_p)
        ext_rank = np.minimum(r.zipf(1.15, size=n), len(self.external)) - 1
        kind = r.random(n)  # internal / external / search-expansion / unique tail
        qtypes = r.choice(len(_QTYPES), size=n, p=_QTYPE_P)
        transports = r.choice(4, size=n, p=_TRANSPORT_P)
        hit = r.random(n) < 0.68
        lat_hit = r.integers(15, 180, size=n)
        lat_miss = np.minimum(r.lognormal(np.log(6000), 0.9, size=n), 2_000_000).astype(int)
        pick = r.random(n)
        dt = r.exponential(3600e6 / n, size=n).astype(np.int64)
        ts = (start_us + np.cumsum(dt)).tolist()
        tenant_idx, ext_rank, kind, qtypes = (a.tolist() for a in (tenant_idx, ext_rank, kind,
                                                                     qtypes))
        transports, hit, lat_hit, lat_miss, pick = (a.tolist() for a in (transports, hit,
                                                                          lat_hit, lat_miss, pick))
        for i in range(n):
            name, _nss, services, pods, pv = self.tenants[tenant_idx[i]]
            ns, pod, sa, ip, edge = pods[int(pick[i] * len(pods))]
            k = kind[i]
            qtype = _QTYPES[qtypes[i]]
            rule, decision, rcode = "", "allow", "NOERROR"
            upstream = ""
            if k < 0.38:  # own services
                qname = services[int(pick[i] * 7919) % len(services)]
                qtype = "A" if qtype != "AAAA" else qtype
                internal = True
                latency = lat_hit[i] * 2
                cache = "hit" if hit[i] else "miss"
            elif k < 0.40:  # another tenant's services: isolation deny
                other = self.tenants[(tenant_idx[i] + 1) % len(self.tenants)]
                qname = other[2][int(pick[i] * 31) % len(other[2])]
                internal, decision, rcode = True, "deny", "NXDOMAIN"
                rule = f"isolation:{name}"
                latency, cache = lat_hit[i], "none"
            else:
                qname = self.external[ext_rank[i]]
                internal = False
                search = k < 0.58  # ndots:5 search-list expansion, answered by cluster DNS
                if search:
                    qname = f"{qname}.{ns}.svc.cluster.local"
                    rcode, internal = "NXDOMAIN", True
                elif k > 0.985:  # long tail: unique CDN / tracking names
                    qname = f"e{int(pick[i] * 1e9):08x}.{qname}"
                if k > 0.975 and k <= 0.985:
                    decision, rule, rcode = "deny", "deny-list:malware", "NXDOMAIN"
                cache = "hit" if hit[i] else "miss"
                latency = lat_hit[i] if hit[i] or search else lat_miss[i]
                if cache == "miss" and not internal:
                    upstream = _UPSTREAMS[tenant_idx[i] % 3]
                if rcode == "NOERROR" and pick[i] > 0.996:
                    rcode = "SERVFAIL"
            ans = self.answers(qname, qtype, internal) if rcode == "NOERROR" else []
            yield {
                "v": 1, "ts": ts[i], "edge": edge, "tenant": name, "namespace": ns,
                "pod": pod, "service_account": sa, "client_ip": ip,
                "transport": _TRANSPORTS[transports[i]], "qname": qname, "qtype": qtype,
                "rcode": rcode, "answers": ans, "latency_us": latency, "cache": cache,
                "decision": decision, "rule": rule, "policy_version": pv, "upstream": upstream,
            }


def generate(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """``n`` encoded events ``(key=tenant, value=JSON)`` over the last hour."""
    start = now_us() - 3_600_000_000
    return [(e["tenant"].encode(), orjson.dumps(e)) for e in Traffic(seed).events(n, start)]


# ---- Kafka for the run -------------------------------------------------------------------


@contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    """The given broker, or a fresh local one started (and stopped) for this run."""
    given = bootstrap or os.environ.get("DNSFLOW_TEST_KAFKA")
    if given:
        yield given
        return
    from harness.peers import KafkaLocal

    with tempfile.TemporaryDirectory(prefix="bench-sink-kafka-") as state:
        broker = KafkaLocal(Path(state))
        try:
            yield broker.start()
        finally:
            broker.stop()


async def produce(bootstrap: str, prefix: str, values: list[tuple[bytes, bytes]]) -> float:
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.topics import Topics

    bus = KafkaBus(bootstrap, Topics(prefix), linger_ms=20)
    await bus.start()
    t0 = time.perf_counter()
    try:
        for i in range(0, len(values), 20_000):
            await bus.send_many(bus.topics.events, values[i : i + 20_000])
    finally:
        await bus.stop()
    return time.perf_counter() - t0


# ---- dnsflow: the sink -----------------------------------------------------------------


async def run_sink(
    bootstrap: str, prefix: str, dsn: str, n: int, timeout: float, batch_rows: int,
) -> dict:
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.gctune import tune_for_batches
    from dnsflow.sinks.config import SinkConfig
    from dnsflow.sinks.dsn import parse
    from dnsflow.sinks.migrate import migrate
    from dnsflow.sinks.sink import Sink
    from dnsflow.sinks.store import Store
    from dnsflow.topics import Topics

    tune_for_batches()  # as `dnsflow sink` does
    store = Store(parse(dsn))
    migrate(store.client)
    bus = KafkaBus(bootstrap, Topics(prefix), create_topics=False)
    sink = Sink(bus, store, SinkConfig(topics=["events"], group=f"{prefix}bench",
                                         batch_rows=batch_rows))
    await sink.start()
    t0 = time.perf_counter()
    cpu0 = _cpu()
    first_end = first_rows = None  # after the first batch: consumer joined, caches warm
    deadline = t0 + timeout
    try:
        while sink.stats.stored.get("dns_events", 0) + sink.stats.rejected < n:
            if time.perf_counter() > deadline:
                break
            if await sink.step() and first_end is None:
                first_end, first_rows = time.perf_counter(), sink.stats.records
    finally:
        await sink.close()
    end = time.perf_counter()
    cpu = _cpu() - cpu0
    if first_end is not None and sink.stats.batches > 1 and end > first_end:
        sustained = (sink.stats.records - (first_rows or 0)) / (end - first_end)
    else:  # one batch only: no steady state to speak of, report the whole run
        sustained = sink.stats.records / (end - t0)
    return {"store": store, "elapsed": end - t0, "sustained": sustained, "stats": sink.stats,
            "cpu_s": cpu}


def _cpu() -> float:
    """CPU seconds of this process (all threads, chDB's included) and ended children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def disk_figures(client, table: str) -> tuple[int, int, dict[str, int]]:
    client.command(f"OPTIMIZE TABLE dnsflow.{table} FINAL")
    rows, size = client.query(
        "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
        f"WHERE database = 'dnsflow' AND table = '{table}' AND active").result_rows[0]
    cols = dict(client.query(
        "SELECT name, data_compressed_bytes FROM system.columns "
        f"WHERE database = 'dnsflow' AND table = '{table}' ORDER BY 2 DESC").result_rows)
    return int(rows), int(size), cols


# ---- peer: plain INSERT ... FORMAT JSONEachRow ------------------------------------------------

_PEER_INPUT = (
    "ts Int64, edge String, tenant String, namespace String, pod String, "
    "service_account String, client_ip String, transport String, qname String, qtype String, "
    "rcode String, answers Array(String), latency_us UInt32, cache String, decision String, "
    "rule String, policy_version UInt64, upstream String, v UInt8"
)
_PEER_COLUMNS = ", ".join(c.split()[0] for c in _PEER_INPUT.split(", "))


def run_peer(
    client, values: list[tuple[bytes, bytes]], workdir: Path, chunk: int
) -> tuple[float, float]:
    """The same JSON, ``chunk`` rows per INSERT, ts µs mapped with ClickHouse's own function
    (a JSON number is seconds for DateTime64)."""
    client.command("CREATE TABLE IF NOT EXISTS dnsflow.dns_events_peer AS dnsflow.dns_events")
    t0 = time.perf_counter()
    cpu0 = _cpu()
    for i in range(0, len(values), chunk):
        path = workdir / f"peer-{i}.json"
        path.write_bytes(b"\n".join(v for _, v in values[i : i + chunk]))
        client.command(
            f"INSERT INTO dnsflow.dns_events_peer ({_PEER_COLUMNS}) "
            "SELECT * REPLACE (fromUnixTimestamp64Micro(ts, 'UTC') AS ts) "
            f"FROM file('{path}', 'JSONEachRow', '{_PEER_INPUT}')"
        )
        path.unlink()
    return time.perf_counter() - t0, _cpu() - cpu0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.split("\n")[0])
    ap.add_argument("--kafka", help="use this broker instead of starting one")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--batch-rows", type=int, default=50_000, help="as `dnsflow sink`")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    values = generate(args.events)
    json_bytes = sum(len(v) for _, v in values) / len(values)
    print(f"generated {len(values)} events in {time.perf_counter() - t:.1f}s "
          f"({json_bytes:.0f} JSON bytes each)", file=sys.stderr)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    with kafka(args.kafka) as bootstrap, tempfile.TemporaryDirectory(prefix="bench-sink-") as d:
        produced = asyncio.run(produce(bootstrap, prefix, values))
        print(f"produced to {bootstrap} in {produced:.1f}s", file=sys.stderr)
        res = asyncio.run(run_sink(bootstrap, prefix, f"chdb://{d}/chdb", len(values),
                                   args.timeout, args.batch_rows))
        stats, store = res["stats"], res["store"]
        stored = stats.stored.get("dns_events", 0)
        rows_per_s = res["sustained"]
        print(f"sink: {stored} rows in {res['elapsed']:.1f}s including consumer join "
              f"({stored / res['elapsed']:.0f} rows/s), sustained after the first batch "
              f"{rows_per_s:.0f} rows/s ({stats.batches} batches, {stats.rejected} rejected)",
              file=sys.stderr)
        client = store.client
        rows, size, cols = disk_figures(client, "dns_events")
        assert rows == stored == len(values), (rows, stored, len(values))
        peer_s, peer_cpu = run_peer(client, values, Path(d), 50_000)
        peer_rows, peer_size, _ = disk_figures(client, "dns_events_peer")
        if any(cols.values()):  # compact (small) parts do not account per column
            print("bytes on disk per column (dnsflow): " + ", ".join(
                f"{k}={v / rows:.2f}" for k, v in cols.items()), file=sys.stderr)
        store.close()
    peer_rps = len(values) / peer_s
    print(
        f"bench sink: rows_per_s={rows_per_s:.0f} bytes_per_event={size / rows:.1f} "
        f"json_bytes_per_event={json_bytes:.0f} events={rows} "
        f"peer_jsoneachrow_rows_per_s={peer_rps:.0f} "
        f"peer_bytes_per_event={peer_size / max(peer_rows, 1):.1f} "
        f"ratio_rows_per_s={rows_per_s / peer_rps:.2f} "
        f"cpu_us_per_event={res['cpu_s'] / rows * 1e6:.1f} "
        f"peer_cpu_us_per_event={peer_cpu / len(values) * 1e6:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
