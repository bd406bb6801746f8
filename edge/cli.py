"""``dnsflow edge``: run one edge resolver (heavy imports stay inside :func:`run`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("edge")
    g.add_argument("--listen", metavar="HOST:PORT", help="UDP+TCP address (default "
                   "127.0.0.1:5353)")
    g.add_argument("--dot-listen", metavar="HOST:PORT", help="DNS-over-TLS address")
    g.add_argument("--doh-listen", metavar="HOST:PORT", help="DNS-over-HTTPS address")
    g.add_argument("--tls-cert", metavar="FILE", help="PEM cert for DoT/DoH (default: "
                   "self-signed under the data directory)")
    g.add_argument("--tls-key", metavar="FILE", help="PEM key for --tls-cert")
    g.add_argument("--upstream", action="append", metavar="URL", dest="upstreams",
                   help="udp://IP:PORT, tcp://.., tls://HOST:853@SNI, https://HOST/dns-query;"
                   " repeat for failover (default: resolv.conf)")
    g.add_argument("--upstream-ca", metavar="FILE", help="CA bundle for DoT/DoH upstreams")
    g.add_argument("--insecure-upstream", action="store_true",
                   help="do not verify DoT/DoH upstream certificates")
    add_identity_flags(g)
    g.add_argument("--cache-size", type=int, metavar="N", help="cached answers (LRU)")
    g.add_argument("--serve-stale", action="store_true", default=None,
                   help="answer from expired cache when upstreams fail (RFC 8767)")
    g.add_argument("--spool-dir", metavar="DIR", help="event spool while Kafka is away")
    g.add_argument("--spool-limit-mb", type=float, metavar="MB", help="spool size bound")
    g.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve /metrics /healthz /readyz here")
    g.add_argument("--cluster-domain", metavar="DOMAIN")
    g.add_argument("--workers", type=int, metavar="N",
                   help="processes sharing the ports with SO_REUSEPORT (needs --kafka)")
    g.add_argument("--name", metavar="NAME", help="edge name in events (default hostname)")
    g.add_argument("--no-events", action="store_true", help="do not publish events")
    g.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one JSON object per log line (structured logs)")
    n = parser.add_argument_group("node-local set-up (NodeLocal DNSCache style)")
    n.add_argument("--setup-interface", metavar="IFACE",
                   help="first create dummy interface IFACE holding --local-ip and NOTRACK "
                   "rules for DNS to/from those addresses (needs CAP_NET_ADMIN, ip, nft)")
    n.add_argument("--local-ip", metavar="IP[,IP]", default="169.254.20.10",
                   help="addresses for --setup-interface (default 169.254.20.10; add the "
                   "kube-dns ClusterIP to take over its traffic on this node)")
    n.add_argument("--no-notrack", action="store_true",
                   help="with --setup-interface: no NOTRACK rules")
    n.add_argument("--setup-only", action="store_true",
                   help="do the set-up and exit (an init container) without serving")
    parser.set_defaults(func=run)


def add_identity_flags(g: argparse._ArgumentGroup) -> None:
    """Who asked: the same flags for the edge and ``dnsflow tap`` (:func:`overrides` reads
    them), so a tap event names the tenant an edge event would."""
    g.add_argument("--tenant-map", metavar="FILE", help="static CIDR -> tenant/namespace YAML "
                   "(re-read on change)")
    g.add_argument("--kubernetes", action="store_true",
                   help="identify clients from a watch of pods and namespaces")
    g.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig (default: in-cluster)")
    g.add_argument("--default-tenant", metavar="NAME", help="tenant of unknown clients")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for key in ("listen", "dot_listen", "doh_listen", "tls_cert", "tls_key", "upstreams",
                "upstream_ca", "tenant_map", "kubeconfig", "default_tenant", "cache_size",
                "serve_stale", "spool_dir", "spool_limit_mb", "metrics_listen",
                "cluster_domain", "workers", "name"):
        value = getattr(args, key, None)
        if value is not None:
            kw[key] = value
    if getattr(args, "kubernetes", False):
        kw["kubernetes"] = True
    if getattr(args, "insecure_upstream", False):
        kw["upstream_verify"] = False
    if getattr(args, "no_events", False):
        kw["events"] = False
    return kw


def run(args: argparse.Namespace) -> int:
    import logging

    from dnsflow.cli import UsageError, settings_from_args
    from dnsflow.edge.lifecycle import start_bus, until_signalled
    from dnsflow.edge.service import build
    from dnsflow.gctune import tune_for_batches
    from dnsflow.runner import run_async

    if getattr(args, "log_format", "text") == "json":
        from dnsflow.edge.logs import use_json_logs

        use_json_logs()
    if getattr(args, "setup_interface", None):
        from dnsflow.edge import nodelocal

        done = nodelocal.setup(args.setup_interface, nodelocal.parse_local_ips(args.local_ip),
                               notrack=not args.no_notrack)
        print(f"dnsflow edge: node-local set-up {done}", flush=True)
        if args.setup_only:
            return 0
    elif getattr(args, "setup_only", False):
        raise UsageError("dnsflow edge: --setup-only needs --setup-interface IFACE")
    settings = settings_from_args(args)
    kw = overrides(args)
    if (kw.get("workers") or 1) > 1 and not settings.kafka:
        raise UsageError("dnsflow edge: --workers N > 1 needs --kafka (each worker publishes "
                         "its own events)")
    log = logging.getLogger("dnsflow.edge")
    if not settings.kafka and kw.get("events", True):
        log.warning("no --kafka: events stay in this process's in-process bus; pass --kafka "
                    "to publish them to dnsflow.events")

    async def main() -> int:
        bus = await start_bus(settings, log)
        services = build(settings, bus, **kw)
        for s in services:
            await s.start()
        # the answer path allocates short-lived tuples at tens of thousands a second
        tune_for_batches(50_000)
        for s in services:
            print(f"dnsflow edge: serving {s.status()['ports']}", flush=True)
        await until_signalled()
        for s in services:
            await s.stop()
        await bus.stop()
        return 0

    return run_async(main())
