"""``dnsflow demo``: the embedded pipeline plus synthetic multi-tenant traffic.

It starts a synthetic upstream (the machine may have no internet), the whole pipeline on the
in-process bus (or ``--kafka``) with chDB, drives benign, DGA, tunnelling and cross-tenant
discovery traffic through a real UDP socket to the edge, then reads what the pipeline produced
back from the bus topics — the same records a Kafka user would see — and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import yaml

from dnsflow.bus import Bus, Message
from dnsflow.demo_traffic import TenantCounts, World, demo_world, drive
from dnsflow.demo_upstream import DemoUpstream, DemoZone
from dnsflow.settings import Settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long to drive traffic (default 20)")
    parser.add_argument("--qps", type=float, default=200.0,
                        help="synthetic queries per second (default 200)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (per-tenant entries under 'tenants')")
    # The summary already says what the components logged as warnings (auto-response etc.).
    parser.set_defaults(func=run, default_log_level="ERROR")


def _positive(name: str, value: float, limit: float) -> None:
    from dnsflow.cli import UsageError

    if not 0 < value <= limit:
        raise UsageError(f"dnsflow demo: {name} must be between 0 and {limit:g}, got {value:g}")


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import settings_from_args
    from dnsflow.runner import run_async

    _positive("--seconds", args.seconds, 3600)
    _positive("--qps", args.qps, 20000)
    settings = settings_from_args(args)
    report = run_async(run_demo(settings, args.seconds, args.qps))
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_NON_STR_KEYS) + b"\n")
    else:
        print(render(report))
    return 0 if report["answered"] > 0 else 1


DEMO_POLICIES = """\
# Written by `dnsflow demo`; edit and re-run, or validate with `dnsflow policy validate`.
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: base, namespace: shop}
spec:
  tenant: shop
  exports:
    - {service: catalog, to: [payments]}    # payments may resolve catalog.shop.svc
  rules:
    - id: no-ad-trackers
      match: {suffixes: [doubleclick.net, tracker.example]}
      action: deny
      log: true
---
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: base, namespace: payments}
spec:
  tenant: payments
  clients: {namespaces: ["*"]}
  view:
    records: [{name: vault.payments.internal, type: A, value: 10.20.0.5, ttl: 60}]
  rules:
    - id: card-network-pin
      match: {names: [api.cardnet.example]}
      action: rewrite
      rewrite: {records: [{type: A, value: 10.20.0.9, ttl: 30}]}
    - id: no-paste-sites
      match: {suffixes: [pastebin.com]}
      action: deny
      denyMode: REFUSED
---
apiVersion: dnsflow.io/v1
kind: ClusterDNSPolicy
metadata: {name: guardrails}
spec:
  tier: guardrail
  rules:
    - id: no-tor
      match: {suffixes: [onion]}
      action: deny
"""


def write_demo_inputs(world: World, home: Path) -> dict[str, Path]:
    """The static identity map and the demo policies the edge and policy source read."""
    demo_dir = home / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    policies = demo_dir / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "demo.yaml").write_text(DEMO_POLICIES)
    tenant_map = demo_dir / "tenants.yaml"
    tenant_map.write_text(yaml.safe_dump({
        "default": {"tenant": "unknown", "namespace": "unknown"},
        "clients": world.tenant_map(),
        "namespaces": world.namespace_tenant,
    }, sort_keys=False))
    return {"tenant_map": tenant_map, "policies": policies}


def demo_settings(settings: Settings, world: World, upstream: str) -> Settings:
    """Point the embedded components at the demo world (edge map, upstream, auto-response)."""
    inputs = write_demo_inputs(world, settings.home)
    edge = {
        "listen": "127.0.0.1:0",
        "upstreams": [upstream],
        "tenant_map": str(inputs["tenant_map"]),
        **settings.edge,
    }
    streams = {"windows": [10], "auto_response": {"enabled": True}, **settings.streams}
    policies = {"dir": str(inputs["policies"]), **settings.policies}
    return settings.model_copy(update={"edge": edge, "streams": streams, "policies": policies})


async def _read_topic(bus: Bus, topic: str) -> list[Message]:
    consumer = bus.consumer([topic], None, from_beginning=True)
    await consumer.start()
    out: list[Message] = []
    try:
        for _ in range(10_000):
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not batch:
                break
            out.extend(batch)
    finally:
        await consumer.stop()
    return out


def _loads(msg: Message) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(msg.value or b"")
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _edge_listen(status: dict[str, Any]) -> tuple[str, int]:
    for services in status.get("edge", {}).values():
        udp = services.get("udp") or services.get("listen")
        if isinstance(udp, str) and ":" in udp:
            host, _, port = udp.replace("udp://", "").rpartition(":")
            return host.strip("[]"), int(port)
        if isinstance(udp, list | tuple) and len(udp) == 2:
            return str(udp[0]), int(udp[1])
    from dnsflow.cli import CommandError

    raise CommandError("the edge did not report a UDP listen address")


async def run_demo(settings: Settings, seconds: float, qps: float) -> dict[str, Any]:
    from dnsflow.runner import Pipeline, serve_console

    world = demo_world()
    upstream = DemoUpstream(DemoZone(world.services, world.nxdomain))
    await upstream.start()
    started_us = time.time_ns() // 1000
    try:
        pipeline = Pipeline(demo_settings(settings, world, upstream.address))
        await pipeline.start()
        console = await serve_console(pipeline.settings, pipeline.bus)
        if console is not None:
            print(f"dnsflow demo: console on {console.url} while the demo runs",
                  file=sys.stderr, flush=True)
        try:
            if "edge" not in pipeline.services:
                from dnsflow.cli import CommandError

                raise CommandError("the edge component is not available")
            host, port = _edge_listen(pipeline.status())
            counts = await drive(world, host, port, seconds, qps)
            await asyncio.sleep(1.0)  # let publishers and processors drain
            status = pipeline.status()
        finally:
            if console is not None:
                await console.stop()
            await pipeline.stop()  # flushes the edge, closes stream windows, flushes the sink
        report = await collect(pipeline.bus, counts, status, seconds)
    finally:
        await upstream.stop()
    report["stored_rows"] = stored_rows(settings, started_us)
    report["missing_components"] = status.get("missing", [])
    return report


async def collect(
    bus: Bus, counts: dict[str, TenantCounts], status: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Summarise what the pipeline published, per tenant, from the topics themselves."""
    t = bus.topics
    events = [e for m in await _read_topic(bus, t.events) if (e := _loads(m))]
    tenants: dict[str, dict[str, Any]] = {}
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        per[str(e.get("tenant", "?"))].append(e)
    for tenant in sorted(set(per) | set(counts)):
        evs = per.get(tenant, [])
        lat = sorted(int(e.get("latency_us", 0)) for e in evs)
        c = counts.get(tenant, TenantCounts())
        tenants[tenant] = {
            "queries_sent": c.sent,
            "answered": c.answered,
            "events": len(evs),
            "decisions": dict(Counter(e.get("decision", "?") for e in evs)),
            "rcodes": dict(Counter(e.get("rcode", "?") for e in evs)),
            "cache_hits": sum(1 for e in evs if e.get("cache") == "hit"),
            "latency_p50_us": lat[len(lat) // 2] if lat else None,
            "top_names": Counter(e.get("qname") for e in evs).most_common(3),
        }
    telemetry = [x for m in await _read_topic(bus, t.telemetry) if (x := _loads(m))]
    anomalies = [x for m in await _read_topic(bus, t.anomalies) if (x := _loads(m))]
    alerts = [x for m in await _read_topic(bus, t.alerts) if (x := _loads(m))]
    policy = [
        {"key": (m.key or b"").decode(errors="replace"), **(x or {})}
        for m in await _read_topic(bus, t.policies)
        if (x := _loads(m)) is not None or m.value is None
    ]
    return {
        "seconds": seconds,
        "answered": sum(c.answered for c in counts.values()),
        "sent": sum(c.sent for c in counts.values()),
        "tenants": tenants,
        "telemetry_windows": len(telemetry),
        "telemetry": telemetry[-20:],
        "anomalies": anomalies,
        "alerts": alerts,
        "policy_updates": policy,
        "dlq": len(await _read_topic(bus, t.dlq)),
        "components": status,
    }


def stored_rows(settings: Settings, since_us: int) -> int | None:
    """Rows the sink wrote to ClickHouse during this demo (None when no sink ran)."""
    try:
        import clickhouse_connect

        client = clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
        try:
            res = client.query(
                "SELECT count() FROM dnsflow.dns_events "
                "WHERE ts >= fromUnixTimestamp64Micro({s:Int64})",
                parameters={"s": since_us},
            )
            return int(res.result_rows[0][0])
        finally:
            client.close()
    except Exception:
        return None


def _latest_per_incident(anomalies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anomalies are one record per incident plus updates: show each incident once, latest."""
    latest: dict[str, dict[str, Any]] = {}
    for a in anomalies:
        evidence = a.get("evidence") or {}
        key = str(evidence.get("incident") or (a.get("kind"), a.get("tenant"),
                                               a.get("client_ip"), a.get("domain")))
        latest[key] = a
    return list(latest.values())


def render(report: dict[str, Any]) -> str:
    lines = [
        f"dnsflow demo: {report['sent']} queries in {report['seconds']:g}s, "
        f"{report['answered']} answered",
        "",
        f"{'tenant':<12}{'sent':>7}{'answered':>10}{'allow':>8}{'deny':>7}{'NXDOMAIN':>10}"
        f"{'cache hit':>11}{'p50 ms':>8}",
    ]
    for tenant, t in report["tenants"].items():
        p50 = t["latency_p50_us"]
        lines.append(
            f"{tenant:<12}{t['queries_sent']:>7}{t['answered']:>10}"
            f"{t['decisions'].get('allow', 0):>8}{t['decisions'].get('deny', 0):>7}"
            f"{t['rcodes'].get('NXDOMAIN', 0):>10}{t['cache_hits']:>11}"
            f"{(p50 / 1000 if p50 is not None else 0):>8.2f}"
        )
    lines += ["", f"telemetry windows published: {report['telemetry_windows']}"]
    incidents = _latest_per_incident(report["anomalies"])
    lines.append(f"anomalies: {len(incidents)} incidents ({len(report['anomalies'])} records "
                 "incl. updates)")
    for a in incidents[:15]:
        lines.append(
            f"  {a.get('severity', '?'):<8} {a.get('kind', '?'):<15} tenant={a.get('tenant')} "
            f"client={a.get('client_ip') or '-'} domain={a.get('domain') or '-'} "
            f"score={float(a.get('score', 0)):.2f}"
        )
    lines.append(f"alerts: {len(report['alerts'])}")
    for a in report["alerts"][:10]:
        lines.append(f"  [{a.get('rule', '?')}] {a.get('summary', '')}")
    denied = sum(len(p.get("denies") or ()) for p in report["policy_updates"])
    lines.append(f"policies: {len(report['policy_updates'])} (latest version of each), "
                 f"{denied} auto-denied domains")
    for p in report["policy_updates"][:10]:
        denies = p.get("denies")
        if denies is None:
            lines.append(f"  {p.get('key')}: version {p.get('version')} from {p.get('source')}")
            continue
        for d in denies:
            minutes = (int(d.get("expires_at_us", 0)) - int(p.get("published_at", 0))) / 60e6
            cause = str(d.get("cause", "")).split(" incident=")[0]
            lines.append(f"  {p.get('key')}: auto-deny {d.get('domain')} for {minutes:.0f} min "
                         f"({cause})")
    if report.get("dlq"):
        lines.append(f"rejected records (dnsflow.dlq): {report['dlq']}")
    rows = report.get("stored_rows")
    lines.append("")
    if rows is None:
        lines.append("ClickHouse: not stored (sink not available)")
    else:
        lines.append(f"ClickHouse: {rows} events stored in dnsflow.dns_events — try:")
        lines.append('  dnsflow query "SELECT tenant, decision, count() FROM dnsflow.dns_events '
                     'GROUP BY tenant, decision ORDER BY tenant"')
        lines.append("  dnsflow console    # the web console over them: http://127.0.0.1:8484/")
    if report.get("missing_components"):
        lines.append(f"(not built yet: {', '.join(report['missing_components'])})")
    return "\n".join(lines)
