"""``dnsflow policy validate|apply|diff|show|explain|egress-export``.

Heavy imports stay inside the handlers: ``dnsflow --help`` imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

EPILOG = """exit codes: 0 ok; 1 invalid policy (validate/apply/diff/explain/egress-export) or,
for diff, differences found; 2 bad usage or configuration; 3 Kafka (or, for explain
--connect and egress-export, ClickHouse) unreachable."""


def _common(p: argparse.ArgumentParser) -> None:
    """The common options again after the action (defaults suppressed so values given
    before the action are kept)."""
    g = p.add_argument_group("common (also accepted before the action)")
    s = argparse.SUPPRESS
    g.add_argument("--config", metavar="FILE", default=s, help="YAML config file")
    g.add_argument("--kafka", metavar="BOOTSTRAP", default=s, help="Kafka bootstrap servers")
    g.add_argument("--home", metavar="DIR", default=s, help="data directory")
    g.add_argument("--topic-prefix", metavar="PREFIX", default=s, help="topic prefix")
    g.add_argument("--clickhouse", metavar="DSN", default=s,
                   help="ClickHouse DSN (explain --connect, egress-export)")
    g.add_argument("--kafka-replication", type=int, metavar="N", default=s,
                   help="replication factor of the topics it creates")
    g.add_argument("--kafka-min-insync", type=int, metavar="N", default=s,
                   help="their min.insync.replicas")
    g.add_argument("--log-level", metavar="LEVEL", default=s,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def register(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                parser_class=type(parser))
    p = sub.add_parser("validate", help="check policy files (errors one per line)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="YAML files or directories")
    _common(p)
    p = sub.add_parser("apply", help="publish policy files (and/or the cluster's DNSPolicy "
                                      "resources) to the policies topic")
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--kubernetes", action="store_true",
                   help="also publish DNSPolicy/ClusterDNSPolicy resources (tenant = the "
                        "namespace's dnsflow.io/tenant label)")
    p.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster, ~/.kube/config")
    p.add_argument("--watch", action="store_true",
                   help="keep running: republish on every change (files polled, Kubernetes "
                        "watched) until SIGTERM/SIGINT")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="file polling interval for --watch (default 1s)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="with --watch: serve /metrics /healthz /readyz here (default "
                        "127.0.0.1:9157; PORT alone is loopback; 'off' serves nothing)")
    p.add_argument("--dry-run", action="store_true", help="show what would be published")
    p.add_argument("--prune", action="store_true",
                   help="empty tenants previously applied from the CLI that are not in PATH")
    p.add_argument("--actor", help="who to record in the policy_log (default user@host)")
    _common(p)
    p = sub.add_parser("diff", help="what apply would change against what is published "
                                    "(exit 1 if anything differs)")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _common(p)
    p = sub.add_parser("show", help="what is in force for a tenant (from the topic)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--json", action="store_true", help="print the raw records")
    _common(p)
    p = sub.add_parser("explain", help="which rule decides a query, why, and what the "
                                       "client gets")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--client", metavar="IP", help="client address (needs --tenant-map)")
    who.add_argument("--tenant", help="the client's tenant")
    p.add_argument("--tenant-map", metavar="FILE", help="static tenant map (edge format)")
    p.add_argument("--namespace", help="the client's namespace (default: the tenant)")
    p.add_argument("--service-account", default="")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--name", help="query name")
    what.add_argument("--connect", metavar="ADDR:PORT[/PROTO]",
                      help="egress: may --client connect there (tcp unless /udp or /sctp)")
    p.add_argument("--type", default="A", help="query type (default A)")
    p.add_argument("--since", default="24h", metavar="SPAN",
                   help="--connect: how far back to look for allowances (default 24h)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="explain against these files instead of what is published")
    _common(p)
    p = sub.add_parser("egress-export", help="egress rules as Kubernetes NetworkPolicy "
                                             "(observed addresses) or CiliumNetworkPolicy "
                                             "(toFQDNs) documents")
    p.add_argument("--format", choices=["networkpolicy", "cilium"], default="networkpolicy")
    p.add_argument("--since", default="24h", metavar="SPAN",
                   help="networkpolicy: addresses observed over this window (default 24h)")
    p.add_argument("--tenant", action="append", default=[], metavar="T",
                   help="only these tenants (repeatable; default all)")
    p.add_argument("--tenant-map", metavar="FILE",
                   help="static tenant map: more namespaces of each tenant")
    p.add_argument("--dns-namespace", default="kube-system", metavar="NS",
                   help="where the cluster DNS runs (default kube-system)")
    p.add_argument("--dns-label", action="append", default=[], metavar="KEY=VALUE",
                   help="the cluster DNS pods' labels (default k8s-app=kube-dns)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="export these files instead of what is published")
    _common(p)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    handler = {"validate": _validate, "apply": _apply, "diff": _diff, "show": _show,
               "explain": _explain, "egress-export": _egress_export}[args.action]
    return handler(args)


def _load(paths: list[str]) -> tuple[dict[str, dict[str, Any]] | None, int]:
    from dnsflow.policies import policyset
    from dnsflow.policies.loader import PolicySetError, load_paths

    docs, problems = load_paths(paths)
    try:
        return policyset.build(docs, problems), len(docs)
    except PolicySetError as exc:
        for p in exc.problems:
            print(p)
        print(f"{len(exc.problems)} problem(s); nothing published", file=sys.stderr)
        return None, 0


def _validate(args: argparse.Namespace) -> int:
    built, n = _load(args.paths)
    if built is None:
        return 1
    keys = ", ".join(sorted(built)) or "none"
    print(f"ok: {n} document(s) valid; keys: {keys}")
    return 0


def _bus(args: argparse.Namespace, need_kafka: str | None = None) -> Any:
    from dnsflow.bus import bus_for
    from dnsflow.cli import UsageError, settings_from_args

    settings = settings_from_args(args)
    if need_kafka and not settings.kafka:
        raise UsageError(f"dnsflow policy {args.action}: {need_kafka} needs --kafka BOOTSTRAP "
                         "(or DNSFLOW_KAFKA): the in-process bus only lives inside `dnsflow up`")
    return bus_for(settings)  # topics it creates get the configured replication


def _kafka_down(args: argparse.Namespace, exc: Exception) -> int:
    print(f"dnsflow policy {args.action}: {exc}", file=sys.stderr)
    return 3


def _apply(args: argparse.Namespace) -> int:
    from dnsflow.bus.base import BusError
    from dnsflow.cli import UsageError
    from dnsflow.policies.publisher import Publisher

    if not args.paths and not args.kubernetes:
        raise UsageError("dnsflow policy apply: give PATH... and/or --kubernetes")
    if args.metrics_listen is not None and not args.watch:
        raise UsageError("dnsflow policy apply: --metrics-listen goes with --watch")
    if args.metrics_listen is not None and args.metrics_listen.strip().lower() != "off":
        from dnsflow.ops import parse_listen

        try:
            parse_listen(args.metrics_listen)
        except ValueError as exc:
            raise UsageError(f"dnsflow policy apply: --metrics-listen {exc}") from None
    if args.watch or args.kubernetes:
        if args.dry_run:
            raise UsageError("dnsflow policy apply: --dry-run works with PATH... only")
        try:
            return asyncio.run(_follow_sources(args, _bus(args, "publishing")))
        except BusError as exc:
            return _kafka_down(args, exc)
    built, _ = _load(args.paths)
    if built is None:
        return 1
    bus = _bus(args, None if args.dry_run else "publishing")

    async def go() -> list[Any]:
        pub = Publisher(bus, source="cli", actor=args.actor)
        try:
            if args.dry_run:
                return await pub.publish(built, prune=args.prune, dry_run=True)
            await bus.start()
            try:
                return await pub.publish(built, prune=args.prune)
            finally:
                await bus.stop()
        finally:
            await pub.close()

    try:
        changes = asyncio.run(go())
    except BusError as exc:
        return _kafka_down(args, exc)
    verb = "would publish" if args.dry_run else "published"
    for c in changes:
        print(f"{verb} {c}")
    if not changes:
        print("no changes: everything is already published")
    return 0


class _Closer:
    """Lets a publisher be stopped with the sources it serves."""

    def __init__(self, pub: Any) -> None:
        self.pub = pub

    async def stop(self) -> None:
        await self.pub.close()


async def _follow_sources(args: argparse.Namespace, bus: Any) -> int:
    """`apply --watch` and/or `--kubernetes`: the policy service outside `dnsflow up`."""
    import signal

    from dnsflow.policies.loader import PolicySetError
    from dnsflow.policies.metrics import PublishTracker
    from dnsflow.policies.publisher import Publisher
    from dnsflow.policies.service import send_rejection
    from dnsflow.policies.sources.yaml_dir import YamlDirSource

    await bus.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    started: list[Any] = []
    rc = 0
    tracker = PublishTracker()
    try:
        if args.paths:
            pub = tracker.wrap(Publisher(bus, source="cli", actor=args.actor))
            await pub.load()

            async def publish(docs: dict[str, dict[str, Any]]) -> None:
                for c in await pub.publish(docs, prune=args.prune):
                    print(f"published {c}", flush=True)

            async def rejected(exc: PolicySetError) -> None:
                nonlocal rc
                rc = 1
                tracker.rejected(len(exc.problems))
                for p in exc.problems:
                    print(p, flush=True)
                print(f"{len(exc.problems)} problem(s); last good version stays", file=sys.stderr)
                await send_rejection(bus, "cli", exc)

            src = YamlDirSource(list(args.paths), publish, rejected, args.interval)
            await src.start()
            started.append(src)
            started.append(_Closer(pub))
            tracker.loops.append(lambda: src._task)
        if args.kubernetes:
            from dnsflow.policies.sources.kubernetes import KubernetesSource

            kube = KubernetesSource(bus, kubeconfig=args.kubeconfig)
            tracker.wrap(kube.publisher)
            await kube.start()
            started.append(kube)
            tracker.loops.append(lambda: kube._task)
            tracker.invalid_keys = lambda: len(kube.problems)
            if not args.watch:  # one pass: wait for the first complete sync
                deadline = loop.time() + 60
                while kube.syncs == 0 and loop.time() < deadline and not stop.is_set():
                    await asyncio.sleep(0.05)
                if kube.syncs == 0:
                    print(f"dnsflow policy apply: no complete Kubernetes sync within 60s "
                          f"({kube.last_error or 'no answer'})", file=sys.stderr)
                    return 3
                for key, errs in kube.status()["problems"].items():
                    rc = 1
                    for p in errs:
                        print(f"{key}: {p}")
                print(f"kubernetes: versions {kube.status()['versions']}")
        if args.watch:
            ops = await _serve_metrics(args.metrics_listen, tracker)
            if ops is not None:
                started.append(ops)
            await stop.wait()
            return 0  # a graceful stop; problems along the way were reported as they came
        return rc
    finally:
        for s in reversed(started):
            await s.stop()
        await bus.stop()


async def _serve_metrics(listen: str | None, tracker: Any) -> Any:
    """/metrics /healthz /readyz of the watching source (``policies.metrics``)."""
    from dnsflow.cli import CommandError
    from dnsflow.ops import component_registry, registry_render, serve_ops
    from dnsflow.policies.metrics import PolicySourceCollector

    registry = component_registry("policies")
    registry.register(PolicySourceCollector(tracker))  # type: ignore[arg-type]
    try:
        return await serve_ops("policies", listen, registry_render(registry),
                               tracker.readiness, tracker.liveness)
    except OSError as exc:
        raise CommandError(exc.strerror or str(exc)) from None


def _published(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    from dnsflow.policies.publisher import Publisher

    async def go() -> dict[str, dict[str, Any]]:
        pub = Publisher(_bus(args, "reading the policies topic"), source="cli")
        try:
            return await pub.load()
        finally:
            await pub.close()

    return asyncio.run(go())


def _diff(args: argparse.Namespace) -> int:
    import difflib

    import yaml

    from dnsflow.bus.base import BusError
    from dnsflow.policies.publisher import Publisher

    built, _ = _load(args.paths)
    if built is None:
        return 1
    try:
        current = _published(args)
    except BusError as exc:
        return _kafka_down(args, exc)
    pub = Publisher(_bus(args), source="cli")
    pub.current, pub.loaded = current, True
    changes = pub.plan(built)
    for c in changes:
        old = yaml.safe_dump_all((c.previous or {}).get("policies", []), sort_keys=False)
        new = yaml.safe_dump_all(c.document.get("policies", []), sort_keys=False)
        head_old = f"{c.key} v{c.previous_version} (published)" if c.previous else \
            f"{c.key} (not published)"
        sys.stdout.writelines(difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), head_old,
            f"{c.key} v{c.version} ({', '.join(args.paths)})"))
        print(f"# {c.summary}")
    if not changes:
        print("no differences")
    return 1 if changes else 0


def _show(args: argparse.Namespace) -> int:
    import orjson
    import yaml

    from dnsflow.bus.base import BusError
    from dnsflow.policies.records import AUTO_PREFIX, GLOBAL

    try:
        current = _published(args)
    except BusError as exc:
        return _kafka_down(args, exc)
    keys = [k for k in (args.tenant, GLOBAL, AUTO_PREFIX + args.tenant) if k in current]
    if args.json:
        for k in keys:
            print(orjson.dumps(current[k]).decode())
        return 0
    if args.tenant not in current:
        print(f"# tenant {args.tenant}: no policy published (default allow, isolation only)")
    for k in keys:
        rec = current[k]
        print(f"# {k}: version {rec['version']} {rec['hash']} published_at {rec['published_at']}"
              f" by {rec.get('actor', '?')} from {rec.get('source', '?')}")
        if rec["kind"] == "AutoDeny":
            for d in rec["denies"]:
                print(f"#   auto-deny {d['domain']} until {d['expires_at_us']} ({d['kind']}: "
                      f"{d['cause']})")
            continue
        if k == GLOBAL:
            pols = [p for p in rec["policies"]
                    if not p.get("spec", {}).get("clients", {}).get("tenants")
                    or args.tenant in p["spec"]["clients"]["tenants"]]
        else:
            pols = rec["policies"]
        if pols:
            print("---")
            print(yaml.safe_dump_all(pols, sort_keys=False, explicit_start=False).rstrip())
    return 0


def _explain(args: argparse.Namespace) -> int:
    from types import MappingProxyType

    from dnsflow.cli import UsageError
    from dnsflow.policies.egress_target import TargetError, parse_since, parse_target
    from dnsflow.policies.explain import explain
    from dnsflow.policies.tenant_map import TenantMapError, load_tenant_map
    from dnsflow.policies.types import ClientInfo

    ns_map: dict[str, str] = {}
    try:
        target = parse_target(args.connect) if args.connect else None
        since_s = parse_since(args.since)
    except TargetError as exc:
        raise UsageError(f"dnsflow policy explain: {exc}") from None
    if target is not None and not args.client:
        raise UsageError("dnsflow policy explain: --connect needs --client IP (the node "
                         "allows addresses per client address) and --tenant-map FILE")
    try:
        tmap = load_tenant_map(args.tenant_map) if args.tenant_map else None
        if args.client:
            if tmap is None:
                raise UsageError("dnsflow policy explain: --client needs --tenant-map FILE")
            client = tmap.client(args.client)
        else:
            labels = {}
            for item in args.label:
                k, sep, v = item.partition("=")
                if not sep:
                    raise UsageError(f"dnsflow policy explain: --label {item!r}: use KEY=VALUE")
                labels[k] = v
            client = ClientInfo("", args.tenant, args.namespace or args.tenant, "",
                                args.service_account, MappingProxyType(labels))
    except TenantMapError as exc:
        raise UsageError(f"dnsflow policy explain: {exc}") from None
    if tmap is not None:
        ns_map = tmap.namespace_tenants()
    loaded = _policy_store(args)
    if isinstance(loaded, int):
        return loaded
    store, source, _ = loaded
    if ns_map:
        store.set_namespace_tenants(ns_map)
    if target is not None:
        return _explain_connect(args, store, source, client, target, since_s)
    return _print_verdict(args, source, explain(store, client, args.name, args.type))


def _policy_store(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any]] | int:
    """The policies of PATHs or of the topic, compiled, with where they came from and the
    records themselves; or the exit code when they cannot be had (1: invalid files, said
    already; 3: Kafka unreachable)."""
    import orjson

    from dnsflow.bus.base import BusError
    from dnsflow.policies import records
    from dnsflow.policies.store import PolicyStore

    store = PolicyStore()
    if args.paths:
        built, _ = _load(args.paths)
        if built is None:
            return 1
        current = {k: orjson.loads(records.encode(built[k], 0, 0, "files", "cli")[1])
                   for k in built}
        source = f"files {', '.join(args.paths)}"
    else:
        try:
            current = _published(args)
        except BusError as exc:
            return _kafka_down(args, exc)
        source = "the published policies topic"
    for key in sorted(current, key=lambda k: (k != records.GLOBAL, k)):
        store.apply_record(key.encode(), orjson.dumps(current[key]))
    return store, source, current


def _reader(args: argparse.Namespace) -> Any:
    """SQL -> rows from the configured ClickHouse, the way ``dnsflow query`` reaches it."""
    from dnsflow.cli import settings_from_args
    from dnsflow.sinks.api import read_rows

    settings = settings_from_args(args)
    return lambda sql: read_rows(settings.clickhouse_dsn, settings.home, sql)


def _clickhouse_down(args: argparse.Namespace, exc: Exception) -> int:
    print(f"dnsflow policy {args.action}: {exc}", file=sys.stderr)
    return 3


def _explain_connect(args: argparse.Namespace, store: Any, source: str, client: Any,
                     target: Any, since_s: int) -> int:

    from dnsflow.policies.egress_explain import explain_connect
    from dnsflow.schema import now_us
    from dnsflow.sinks.api import ReadError

    try:
        result = explain_connect(store, client, target, _reader(args), since_s, now_us())
    except ReadError as exc:
        return _clickhouse_down(args, exc)
    return _print_verdict(args, source, result)


def _print_verdict(args: argparse.Namespace, source: str, result: Any) -> int:
    """An explain answer as JSON (``--json``) or as lines, after where the policy came from."""
    import orjson

    if args.json:
        print(orjson.dumps({"policy": source, **result.as_dict()}).decode())
        return 0
    print(f"policy:   {source}")
    for line in result.lines():
        print(line)
    return 0


def _egress_export(args: argparse.Namespace) -> int:
    import yaml

    from dnsflow.cli import UsageError
    from dnsflow.policies import egress_export as ex
    from dnsflow.policies.egress_observed import allowed_addresses
    from dnsflow.policies.egress_target import TargetError, parse_since
    from dnsflow.policies.records import GLOBAL
    from dnsflow.policies.tenant_map import TenantMapError, load_tenant_map
    from dnsflow.sinks.api import ReadError

    try:
        since_s = parse_since(args.since)
    except TargetError as exc:
        raise UsageError(f"dnsflow policy egress-export: {exc}") from None
    labels = {}
    for item in args.dns_label:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise UsageError(f"dnsflow policy egress-export: --dns-label {item!r}: use "
                             "KEY=VALUE")
        labels[k] = v
    dns = ex.DnsTarget(args.dns_namespace, labels or {"k8s-app": "kube-dns"})
    try:
        extra_ns = load_tenant_map(args.tenant_map).namespace_tenants() if args.tenant_map \
            else {}
    except TenantMapError as exc:
        raise UsageError(f"dnsflow policy egress-export: {exc}") from None
    loaded = _policy_store(args)
    if isinstance(loaded, int):
        return loaded
    store, _, current = loaded
    namespaces: dict[str, set[str]] = {}
    for key, rec in current.items():
        if key == GLOBAL or rec.get("kind") == "AutoDeny":
            continue
        namespaces[key] = {p["metadata"]["namespace"] for p in rec.get("policies", [])}
    for ns, tenant in extra_ns.items():
        namespaces.setdefault(tenant, set()).add(ns)
    if args.tenant:
        unknown = sorted(set(args.tenant) - set(namespaces))
        if unknown:
            raise UsageError(f"dnsflow policy egress-export: --tenant {', '.join(unknown)}: "
                             f"no policy for it (tenants: {', '.join(sorted(namespaces))})")
        namespaces = {t: namespaces[t] for t in args.tenant}
    node: list[Any] = []
    answers: list[Any] = []
    if args.format == "networkpolicy" and any(store.egress_rules(t) for t in namespaces):
        try:
            node, answers = allowed_addresses(_reader(args), namespaces, since_s)
        except ReadError as exc:
            return _clickhouse_down(args, exc)
        for s in node:  # namespaces seen allowed in the window belong to the tenant too
            if s.namespace and s.tenant in namespaces:
                namespaces[s.tenant].add(s.namespace)
    warn: list[str] = []
    docs = ex.export(ex.place(store, namespaces, warn), args.format, node, answers, dns, warn)
    for w in warn:
        print(f"dnsflow policy egress-export: {w}", file=sys.stderr)
    text = yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True) if docs else ""
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"dnsflow policy egress-export: -o {args.output}: "
                             f"{exc.strerror}") from None
    else:
        sys.stdout.write(text)
    print(f"# {len(docs)} document(s)", file=sys.stderr)
    return 0
