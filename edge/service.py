"""``build(settings, bus, **kw) -> [EdgeService]``: what the embedded runner and the CLI run.

Keyword overrides are ``edge:`` config fields (e.g. ``listen="127.0.0.1:0"``,
``upstreams=[...]``); ``policy_store=`` injects a ready PolicyStore (tests, embedded demo).
``status()`` exposes the bound ports so callers can find an edge started on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from dnsflow.bus import Bus
from dnsflow.edge.cache import AnswerCache
from dnsflow.edge.config import EdgeConfig, system_upstreams
from dnsflow.edge.identity import IdentityTable
from dnsflow.edge.identity.feeds import IdentityFeeds
from dnsflow.edge.lifecycle import stop_each
from dnsflow.edge.listeners.budget import ConnectionBudget, Limits
from dnsflow.edge.listeners.sockets import Bind, split_hostport
from dnsflow.edge.listeners.stream import StreamListener
from dnsflow.edge.listeners.udp import UdpListener
from dnsflow.edge.metrics import EdgeMetrics
from dnsflow.edge.policy.subscription import PolicySubscription
from dnsflow.edge.request import PolicyHolder, Shared
from dnsflow.edge.resolver import Options, Resolver
from dnsflow.edge.rrl import ResponseRateLimiter
from dnsflow.edge.telemetry import EventPublisher, Spool
from dnsflow.edge.telemetry.spool import SpoolBusy
from dnsflow.edge.tls import client_context, self_signed, server_context
from dnsflow.edge.upstream.pool import UpstreamPool
from dnsflow.policies.api import PolicyStore
from dnsflow.settings import ConfigError, Settings, section

log = logging.getLogger(__name__)


class EdgeService:
    name = "edge"
    map_poll_s = 2.0  # how often the static tenant map file is checked for changes

    def __init__(self, settings: Settings, bus: Bus | None, cfg: EdgeConfig,
                 policy_store: Any = None) -> None:
        self.settings = settings
        self.bus = bus
        self.cfg = cfg
        self.home = Path(settings.home)
        self.identity = IdentityTable(cfg.default_tenant, cfg.default_namespace)
        self.holder = PolicyHolder(policy_store or PolicyStore(cfg.cluster_domain))
        self._injected_policy = policy_store is not None
        self._ns_seen: dict[str, str] | None = None
        self.identity.listeners.append(self._ns_changed)
        self.metrics = EdgeMetrics(cfg.name)
        self.cache = AnswerCache(cfg.cache_size or 1, serve_stale=cfg.serve_stale,
                                 max_ttl=cfg.max_cache_ttl)
        self.publisher: EventPublisher | None = None
        self.subscription: PolicySubscription | None = None
        self.pool: UpstreamPool | None = None
        self.resolver: Resolver | None = None
        self.listeners: list[Any] = []
        self.ops: Any = None
        self.feeds = IdentityFeeds(self.identity, cfg)
        self.ports: dict[str, int] = {}
        self.supervisor: Any = None  # edge.supervisor.WorkerSupervisor (worker 0)
        self.started = False
        self.egress: Any = None  # edge.egress.agent.EgressAgent with edge.egress.enabled

    def _policy_changed(self, keys: list[bytes]) -> None:
        """A tenant's or the cluster's policy changed: exports and isolation modes may now
        hide (or show) names inside answers cached for *other* tenants, whose policy version
        did not move, so cached answers go. Auto-deny updates are checked per query and keep
        the cache."""
        if any(not k.startswith(b"auto:") for k in keys):
            self.cache.clear()
        if self.egress is not None:
            self._egress_hook()
            self.egress.policy_changed(keys)

    def _egress_hook(self) -> None:
        """The resolver's egress hook is the agent only while an egress rule exists."""
        if self.resolver is not None and self.egress is not None:
            self.resolver.egress = (self.egress if self.egress.active
                                    and self.holder.store.has_egress else None)

    def _ns_changed(self, mapping: Any) -> None:
        """Namespace -> tenant changed: isolation changes without a policy version, so the
        store is told and cached answers (which were checked against the old map) dropped.
        Pod churn that leaves the map as it was costs nothing."""
        current = dict(mapping)
        if current == self._ns_seen:
            return
        self._ns_seen = current
        with contextlib.suppress(Exception):
            self.holder.store.set_namespace_tenants(current)
        self.holder.changed()
        self.cache.clear()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start everything or nothing: a failure part-way stops what was started (so the
        spool lock, sockets and tasks are released) and says what failed."""
        try:
            await self._start()
        except BaseException:
            self.started = True  # let stop() walk every part
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.cfg
        await self.feeds.start(self.map_poll_s, "tenant-map")
        if self.bus is not None and cfg.subscribe_policies and not self._injected_policy:
            snap = Path(cfg.policy_snapshot) if cfg.policy_snapshot else (
                self.home / "edge-policy.snapshot")
            self.subscription = PolicySubscription(
                self.bus, self.holder, snap, cluster_domain=cfg.cluster_domain,
                ns_tenants=lambda: self.identity.namespace_tenants,
                on_change=self._policy_changed)
            await self.subscription.start()
        ssl_up = client_context(cfg.upstream_ca, cfg.upstream_verify)
        self.pool = UpstreamPool.from_urls(cfg.upstreams or system_upstreams(), ssl_up,
                                           timeout=cfg.upstream_timeout,
                                           check_interval=cfg.health_interval)
        self.pool.start()
        if cfg.events and self.bus is not None:
            # one spool per worker process: a spool directory has one writer (SpoolBusy)
            spool_dir = Path(cfg.spool_dir) / f"w{cfg.worker_index}" if cfg.spool_dir else (
                self.home / "spool" / f"{cfg.name}-w{cfg.worker_index}")
            self.publisher = make_publisher(self.bus, spool_dir, cfg)
            await self.publisher.start()
        self.resolver = Resolver(
            Shared(self.identity, self.holder, self.cache, self.publisher, self.metrics),
            self.pool, Options(
                max_udp_size=cfg.max_udp_size, max_cache_ttl=cfg.max_cache_ttl,
                chaos_identity=cfg.chaos_identity, chaos_version=cfg.chaos_version,
                pool_factory=lambda urls: _started(UpstreamPool.from_urls(
                    urls, ssl_up, timeout=cfg.upstream_timeout,
                    check_interval=cfg.health_interval))))
        if cfg.egress.enabled:  # before listening: no answer leaves without its allowance
            await self._start_egress()
        await self._start_listeners()
        self.metrics.add_source(lambda: {
            "cache": self.cache.stats(), "upstreams": self.pool.status() if self.pool else {},
            "events": self.publisher.status() if self.publisher else {},
            "policy": self.subscription.status() if self.subscription else {},
            "identity": self.identity.size(),
            "resolver": self.resolver.counters if self.resolver else {}})
        if cfg.metrics_listen:
            from dnsflow.edge.ops import OpsServer

            host, port = split_hostport(cfg.metrics_listen, 9153)
            self.ops = OpsServer(self.metrics, host, port, self.readiness)
            await self.ops.start()
            self.ports["metrics"] = self.ops.port
            if cfg.worker_index > 0:  # tell worker 0 where to find this worker's metrics
                _write_atomically(self._metrics_url_file(cfg.worker_index),
                                  f"http://127.0.0.1:{self.ops.port}/metrics")
        if cfg.workers > 1 and cfg.worker_index == 0:
            self._spawn_workers()
        self.started = True
        log.info("edge %s serving %s", cfg.name, self.ports)

    async def _start_egress(self) -> None:
        from dnsflow.edge.egress.agent import EgressAgent

        cfg = self.cfg
        ecfg = cfg.egress
        if not ecfg.dns_addresses:  # the edge's own addresses: DNS to it is always allowed
            own = [split_hostport(cfg.listen)[0], *cfg.extra_addresses]
            ecfg = ecfg.model_copy(update={"dns_addresses": [
                a for a in own if a not in ("0.0.0.0", "::", "")]})
        self.egress = EgressAgent(ecfg, self.holder, self.identity, cfg.name, self.bus)
        if self.resolver is not None:  # a revocation empties the fast path (memoised answers)
            self.egress.on_revoke = self.resolver.fast.clear
        await self.egress.start()
        self._egress_hook()

    async def _start_listeners(self) -> None:
        cfg = self.cfg
        if cfg.reuse_port and cfg.worker_index == 0:  # SO_REUSEPORT only among our workers
            from dnsflow.edge.supervisor import ensure_port_free

            port = split_hostport(cfg.listen)[1]
            for addr, kinds in ((cfg.listen, ("udp", "tcp")), (cfg.dot_listen, ("tcp",)),
                                (cfg.doh_listen, ("tcp",)),
                                *((_hostport(a, port), ("udp", "tcp"))
                                  for a in cfg.extra_addresses)):
                if addr and split_hostport(addr)[1]:
                    ensure_port_free(*split_hostport(addr), kinds=kinds)
        try:
            await self._bind_listeners()
        except OSError as exc:
            raise ConfigError(f"edge {self.cfg.name}: cannot listen ({exc.strerror or exc}); "
                              f"check edge.listen / dot_listen / doh_listen") from None

    async def _bind_listeners(self) -> None:
        cfg = self.cfg
        assert self.resolver is not None
        host, port = split_hostport(cfg.listen)
        # one connection budget for TCP, DoT and DoH; UDP response rate limiting if set
        self.budget = ConnectionBudget(cfg.max_connections, cfg.max_connections_per_client)

        def limits(idle: float = cfg.idle_timeout) -> Limits:  # one per stream listener
            return Limits(self.budget, idle_timeout=idle, read_timeout=cfg.tcp_read_timeout,
                          handshake_timeout=cfg.tls_handshake_timeout)

        reuse = cfg.reuse_port
        self.rrl = ResponseRateLimiter(
            cfg.rrl_rate, cfg.rrl_burst, cfg.rrl_slip, cfg.rrl_ipv4_prefix,
            cfg.rrl_ipv6_prefix) if cfg.rrl_rate > 0 else None
        self.metrics.add_source(self._hostile_status)
        # TCP on the same port as UDP; with port 0 retry until a port is free for both
        for attempt in range(20 if port == 0 else 1):
            udp = UdpListener(self.resolver, Bind(host, port, reuse), rrl=self.rrl)
            await udp.start()
            tcp = StreamListener(self.resolver, Bind(host, udp.port, reuse), limits=limits())
            try:
                await tcp.start()
                break
            except OSError:
                await udp.stop()
                if port != 0 or attempt == 19:
                    raise
        self.listeners += [udp, tcp]
        self.ports.update(udp=udp.port, tcp=tcp.port)
        for extra in cfg.extra_addresses:  # same port, same resolver, same budget
            eu = UdpListener(self.resolver, Bind(extra, udp.port, reuse), rrl=self.rrl)
            await eu.start()
            self.listeners.append(eu)
            et = StreamListener(self.resolver, Bind(extra, udp.port, reuse), limits=limits())
            await et.start()
            self.listeners.append(et)
        if cfg.dot_listen or cfg.doh_listen:
            if cfg.tls_cert and cfg.tls_key:
                cert, key = Path(cfg.tls_cert), Path(cfg.tls_key)
            else:
                cert, key = self_signed(self.home / "tls", cfg.name)
            self.tls_cert_path = cert
            if cfg.dot_listen:
                h, p = split_hostport(cfg.dot_listen, 853)
                dot = StreamListener(self.resolver, Bind(h, p, reuse), ssl_context=server_context(
                    cert, key, ["dot"]), limits=limits())
                await dot.start()
                self.listeners.append(dot)
                self.ports["dot"] = dot.port
            if cfg.doh_listen:
                from dnsflow.edge.listeners.doh import DohListener

                h, p = split_hostport(cfg.doh_listen, 443)
                doh = DohListener(self.resolver, Bind(h, p, reuse), ssl_context=server_context(
                    cert, key, ["h2", "http/1.1"]), limits=limits(max(cfg.idle_timeout, 30.0)),
                    path=cfg.doh_path)
                await doh.start()
                self.listeners.append(doh)
                self.ports["doh"] = doh.port

    def _spawn_workers(self) -> None:
        """Extra processes binding the same ports with SO_REUSEPORT (one core each), kept
        running by a supervisor that restarts and reports dead ones (edge/supervisor.py)."""
        cfg = self.cfg.model_dump()
        host, _ = split_hostport(self.cfg.listen)
        cfg["listen"] = _hostport(host, self.ports["udp"])
        for key in ("dot", "doh"):
            if key in self.ports:
                h, _ = split_hostport(cfg[f"{key}_listen"])
                cfg[f"{key}_listen"] = _hostport(h, self.ports[key])
        cfg["metrics_listen"] = "127.0.0.1:0"  # each serves its own; worker 0 adds them up
        settings = self.settings.model_dump(mode="json")
        settings.pop("source", None)
        from dnsflow.edge.supervisor import WorkerSupervisor

        specs = {i: {"settings": settings, "edge": {**cfg, "worker_index": i, "workers": 1}}
                 for i in range(1, self.cfg.workers)}
        for i in specs:
            self._metrics_url_file(i).unlink(missing_ok=True)
        self.supervisor = WorkerSupervisor(self.cfg.name, specs, preexec_fn=_die_with_parent)
        self.supervisor.start()
        self.metrics.registry.register(self.supervisor)  # type: ignore[arg-type]
        self.metrics.siblings = lambda: self._worker_metrics_urls(specs)

    def _metrics_url_file(self, index: int) -> Path:
        return self.home / "run" / f"{self.cfg.name}-w{index}.metrics"

    def _worker_metrics_urls(self, specs: dict[int, Any]) -> list[str]:
        urls = []
        for i in specs:
            try:
                urls.append(self._metrics_url_file(i).read_text().strip())
            except OSError:
                continue  # not started yet, or being restarted
        return urls

    def _addr(self, kind: str) -> str | None:
        port = self.ports.get(kind)
        if port is None:
            return None
        return _hostport(split_hostport(self.cfg.listen)[0], port)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        policy_ok = self.subscription is None or self.subscription.ready
        up_ok = bool(self.pool) and any(h.up for h in self.pool.health.values())
        ident_ok = self.feeds.synced
        ok = self.started and policy_ok and up_ok and ident_ok
        return ok, {"listening": self.started, "policy_ready": policy_ok,
                    "upstream_up": up_ok, "identity_synced": ident_ok}

    async def stop(self) -> None:
        """Stop listening first, then flush (or spool) every event, then the rest; one part
        failing to stop does not keep the others running."""
        if self.feeds.map_task is not None:
            self.feeds.map_task.cancel()
        workers = (asyncio.ensure_future(self.supervisor.stop())
                   if self.supervisor is not None else None)
        parts: list[tuple[str, Any]] = [("listener", lst.stop) for lst in self.listeners]
        parts += [("egress", self.egress.stop if self.egress else None),
                  ("ops", self.ops.stop if self.ops else None),
                  ("publisher", self.publisher.stop if self.publisher else None),
                  ("policy subscription", self.subscription.stop if self.subscription else None),
                  ("kubernetes identity", self.feeds.k8s.stop if self.feeds.k8s else None),
                  ("upstreams", self.pool.close if self.pool else None)]
        if self.resolver is not None:
            parts += [("upstreams", p.close) for p in self.resolver._pools.values()]
        await stop_each(parts, log, f"edge {self.cfg.name}")
        if workers is not None:
            with contextlib.suppress(Exception):
                await workers
        self.started = False

    def status(self) -> dict[str, Any]:
        return {
            "edge": self.cfg.name,
            "ports": dict(self.ports),
            "listen": self._addr("udp"),
            "udp": self._addr("udp"),
            "tcp": self._addr("tcp"),
            "udp_port": self.ports.get("udp"),
            "tcp_port": self.ports.get("tcp"),
            "dot_port": self.ports.get("dot"),
            "doh_port": self.ports.get("doh"),
            "metrics_port": self.ports.get("metrics"),
            "events": self.publisher.status() if self.publisher else {},
            "cache": self.cache.stats(),
            "upstreams": self.pool.status() if self.pool else {},
            "policy": (self.subscription.status() if self.subscription else
                       {"injected": self._injected_policy}),
            "identity": self.feeds.status(),
            "queries": ({**self.resolver.counters, "queries": self.resolver.counters["queries"]
                         + self.resolver.fast.answered} if self.resolver else {}),
            **(self.supervisor.status() if self.supervisor is not None else {
                "workers": [], "workers_alive": 0, "worker_restarts": {}}),
            "udp_listeners": [u.status() for u in self.listeners if isinstance(u, UdpListener)],
            **({"egress": self.egress.status()} if self.egress is not None else {}),
            **self._hostile_status(),
        }

    def _hostile_status(self) -> dict[str, Any]:
        """Connection budget, per-listener guard counters and RRL (status() and /metrics)."""
        budget = getattr(self, "budget", None)
        rrl = getattr(self, "rrl", None)
        return {"connections": {
            **(budget.status() if budget is not None else {}),
            "listeners": [lst.status() for lst in self.listeners
                          if not isinstance(lst, UdpListener)]},
            "rrl": rrl.status() if rrl is not None else {"enabled": False}}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _die_with_parent() -> None:
    """Workers get SIGTERM if the main edge process dies (Linux), never outliving it."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def make_publisher(bus: Bus, spool_dir: Path, cfg: EdgeConfig) -> EventPublisher:
    """librdkafka for a Kafka bus (one event per record at ~2 µs), the bus API otherwise;
    events wait in the spool at ``spool_dir``, which has one writer (else a ConfigError)."""
    try:
        spool = Spool(spool_dir, int(cfg.spool_limit_mb * (1 << 20)))
    except SpoolBusy as exc:
        raise ConfigError(str(exc)) from None
    bootstrap = getattr(bus, "bootstrap", None)
    if bootstrap and cfg.producer == "librdkafka":
        try:
            from dnsflow.edge.telemetry.rdkafka import RdKafkaPublisher
        except ImportError:
            log.warning("confluent-kafka is not installed: publishing events through aiokafka")
        else:
            return RdKafkaPublisher(bus, spool, bootstrap=bootstrap, edge=cfg.name,
                                    max_queue=cfg.event_queue,
                                    message_timeout_ms=int(cfg.kafka_timeout * 1000))
    return EventPublisher(bus, spool, edge=cfg.name, max_queue=cfg.event_queue)


def _started(pool: UpstreamPool) -> UpstreamPool:
    with contextlib.suppress(RuntimeError):
        pool.start()
    return pool


def config_from(settings: Settings, **kw: Any) -> EdgeConfig:
    base = dict(settings.edge)
    fields = EdgeConfig.model_fields
    for k, v in kw.items():
        if k in fields and v is not None:
            base[k] = v
    tmp = Settings.model_validate({**settings.model_dump(exclude={"source"}), "edge": base})
    tmp.source = settings.source
    return section(tmp, "edge", EdgeConfig)


def build(settings: Settings, bus: Bus | None, **kw: Any) -> list[Any]:
    """The edge, and with a ``tap:`` section that has ``listen`` a dnstap receiver beside it
    (``dnsflow up --tap-listen``), sharing the edge's identity settings."""
    policy_store = kw.pop("policy_store", None)
    unknown = [k for k in kw if k not in EdgeConfig.model_fields]
    if unknown:
        log.warning("edge.build: ignoring unknown options %s", ", ".join(sorted(unknown)))
    cfg = config_from(settings, **kw)
    services: list[Any] = [EdgeService(settings, bus, cfg, policy_store=policy_store)]
    if settings.tap.get("listen") and bus is not None:
        from dnsflow.edge.tap.service import build as build_tap

        tap = {"name": f"{cfg.name}-tap", **settings.tap}  # its own spool, not the edge's
        services.append(build_tap(settings, bus, **tap))
    return services
