"""The node side of egress rules: answers become nftables allowances before they are sent.

The resolver calls :meth:`EgressAgent.allow` with the answer's addresses just before it
releases an answer to a client an egress rule selects; the agent adds (client, address,
protocol, port) to the allow-set with timeout = TTL + grace in one libnftables transaction
and returns only then, so a client connecting right after its answer finds the element.
What was programmed is remembered (address, ports, name, expiry) so repeats of an answer
within its lifetime cost one dict probe, and so a policy or identity change can remove
exactly what is no longer allowed. :meth:`EgressAgent.allow_until` also says until when a
repeat needs no call at all, so the UDP fast path can release memoised answers of selected
clients without the agent; a revocation empties the fast path (``on_revoke``). The client
sets (who is enforced, who audited) follow the identity table and the policy store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from dnsflow.bus import Bus
from dnsflow.edge.egress import ruleset
from dnsflow.edge.egress.config import EgressConfig
from dnsflow.edge.egress.events import EgressEvents
from dnsflow.edge.egress.nflog import Attempt, NflogReader
from dnsflow.edge.egress.nft import Nft, NftError
from dnsflow.edge.identity.table import IdentityTable
from dnsflow.edge.request import PolicyHolder
from dnsflow.policies.api import ClientInfo
from dnsflow.settings import ConfigError
from dnsflow.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Ports = tuple[tuple[str, int], ...]
_MODES_MAX = 65_536


class _Allowance:
    __slots__ = ("expires", "qname", "rule")

    def __init__(self, expires: float, qname: str, rule: str) -> None:
        self.expires = expires
        self.qname = qname
        self.rule = rule


class EgressAgent:
    nft_factory: Callable[[], Nft] = Nft  # tests put a recorder here

    def __init__(self, cfg: EgressConfig, holder: PolicyHolder, identity: IdentityTable,
                 edge: str, bus: Bus | None = None) -> None:
        """``cfg.dns_addresses``: the service fills in the edge's own addresses when the
        configuration names none. ``nft`` may be replaced before :meth:`start` (tests)."""
        self.cfg = cfg
        self.holder = holder
        self.identity = identity
        self.dns = cfg.dns_addresses
        self.nft: Nft | None = None
        self.events = EgressEvents(edge, bus, cfg.events_file)
        self.nflog: NflogReader | None = None
        self.active = False  # the ruleset is installed
        self._modes: dict[str, str | None] = {}
        self._modes_gen = (-1, -1)
        self._clients: dict[str, ClientInfo] = {}          # who the allowances were for
        self._allowed: dict[str, dict[tuple[str, Ports], _Allowance]] = {}
        self._client_sets: dict[str, list[str]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.counters = {"programmed": 0, "refreshed": 0, "repeats": 0, "failures": 0,
                         "removed": 0, "syncs": 0}
        self.cost_us = 0.0  # total time spent in nft for allowances (µs)
        # called after allowances were revoked: whatever remembered "allowed until" (the
        # resolver's fast path) forgets it, so no memoised answer outlives a revocation
        self.on_revoke: Callable[[], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Install the base ruleset (``on_start``), the client sets and the NFLOG reader.
        A failure is a configuration error with ``fail: closed`` and a warning with
        ``fail: open`` (egress stays off)."""
        try:
            if self.nft is None:
                self.nft = type(self).nft_factory()
            self._install()
            self.sync()
        except (NftError, OSError, ValueError) as exc:
            msg = f"edge.egress: cannot install nftables table inet {self.cfg.table}: {exc}"
            if self.cfg.fail == "closed":
                raise ConfigError(msg + " (egress.fail: closed)") from None
            log.warning("%s; egress enforcement is OFF (egress.fail: open)", msg)
            return
        self.active = True
        if self.cfg.nflog_group:
            reader = NflogReader(self.cfg.nflog_group, self._attempt)
            try:
                reader.start()
                self.nflog = reader
            except OSError as exc:
                log.warning("egress: NFLOG group %d unavailable (%s): dropped attempts are "
                            "counted, not evented", self.cfg.nflog_group, exc)
        self.identity.listeners.append(lambda _m: self._wake.set())
        await self.events.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="egress-sync")
        log.info("egress: table inet %s installed (%s, on_start %s, fail %s)",
                 self.cfg.table, self.nft.backend if self.nft else "?", self.cfg.on_start,
                 self.cfg.fail)

    def _install(self) -> None:
        assert self.nft is not None
        t = self.cfg.table
        if self.cfg.on_start == "flush":
            self.nft.run_text(ruleset.delete_table(t))
        else:
            try:
                existing = self.nft.list_json(
                    {"table": {"family": ruleset.FAMILY, "name": t}})
            except NftError:
                existing = None
            down = ruleset.teardown(t, existing)
            if down:
                self.nft.run_text(down)
        self.nft.run_text(ruleset.base_ruleset(t, self.dns, self.cfg.dns_port,
                                               self.cfg.nflog_group))

    async def stop(self) -> None:
        await cancel_and_wait(self._task, quiet=True)
        if self.nflog is not None:
            self.nflog.stop()
        await self.events.stop()
        if self.active and self.cfg.fail == "open" and self.nft is not None:
            with contextlib.suppress(NftError):  # nobody programs it any more: stop enforcing
                self.nft.run_text(ruleset.delete_table(self.cfg.table))
        if self.active:  # what the allow-sets cost this run (bench.edge_qps --egress reads it)
            c = self.counters
            log.info("egress: stopped: programmed=%d refreshed=%d repeats=%d failures=%d "
                     "removed=%d nft_us_total=%.0f", c["programmed"], c["refreshed"],
                     c["repeats"], c["failures"], c["removed"], self.cost_us)
        self.active = False

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.sync_interval)
            self._wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("egress: sync failed")

    # -- the answer path ----------------------------------------------------------------
    def mode(self, client: ClientInfo) -> str | None:
        """The client's egress mode (enforce | audit) or None; memoised per generation."""
        gen = (self.identity.generation, self.holder.generation)
        if gen != self._modes_gen or len(self._modes) >= _MODES_MAX:
            self._modes = {}
            self._modes_gen = gen
        ip = client.ip
        try:
            return self._modes[ip]
        except KeyError:
            m = self._modes[ip] = self.holder.store.egress_mode(client)
            return m

    def allow(self, client: ClientInfo, qname: str, ips: Iterable[str], ttl: float) -> bool:
        """Program what answering ``qname`` with ``ips`` (TTL ``ttl``) allows ``client``;
        False when it must not be released (programming failed and ``fail: closed``)."""
        return self.allow_until(client, qname, ips, ttl) is not None

    def allow_until(self, client: ClientInfo, qname: str, ips: Iterable[str], ttl: float
                    ) -> float | None:
        """As :meth:`allow` (None: must not be released), else until when (monotonic) the
        same answer may be released again without asking, so the fast path can skip the
        agent safely. ``ttl``: seconds until the answer expires (a cached one: its expiry
        less now, fractional), so a copy released in any later second of it expires before
        now + ttl + 1 s, which every address's allowance must outlive (else ``-inf``); the
        time returned is when each allowance keeps only min_ttl + grace - 1 s, the agent's
        own repeat tolerance: past it this call re-programs. ``inf``: nothing to program;
        ``-inf``: ask every time (also: released unprogrammed under ``fail: open``)."""
        if not self.active:
            return math.inf
        mode = self.mode(client)
        if mode is None:
            return math.inf
        grant = self.holder.store.egress(client, qname, mode)
        if grant is None:
            return math.inf
        timeout = int(max(ttl, self.cfg.min_ttl) + self.cfg.grace + 0.999)
        now = time.monotonic()
        expires = now + timeout
        mine = self._allowed.setdefault(client.ip, {})
        new: list[str] = []
        live: list[str] = []
        held = math.inf  # the earliest expiry among the repeats
        for ip in ips:
            old = mine.get((ip, grant.ports))
            if old is not None and old.expires >= expires - 1.0:
                self.counters["repeats"] += 1
                held = min(held, old.expires)
                continue
            (live if old is not None and old.expires > now else new).append(ip)
        if new or live:
            cmds = ruleset.allow_elements(self.cfg.table, client.ip, new + live, grant.ports,
                                          timeout)
            if live:  # re-added elements keep their old timeout on older kernels: add (so
                # it exists whatever expired meanwhile), delete, add again, in one transaction
                cmds = (ruleset.allow_elements(self.cfg.table, client.ip, live, grant.ports,
                                               timeout)
                        + ruleset.delete_elements(self.cfg.table, client.ip, live,
                                                  grant.ports)
                        + cmds)
            t0 = time.perf_counter()
            try:
                assert self.nft is not None
                self.nft.run(cmds)
            except NftError as exc:
                self.counters["failures"] += 1
                log.error("egress: cannot allow %s -> %s for %s: %s", client.ip,
                          ",".join(new + live), qname, exc)
                return None if self.cfg.fail == "closed" else -math.inf
            finally:
                self.cost_us += (time.perf_counter() - t0) * 1e6
            self._clients[client.ip] = client
            proto, port = (grant.ports[0] if len(grant.ports) == 1 else ("", 0))
            for ip in new + live:
                mine[(ip, grant.ports)] = _Allowance(expires, qname, grant.rule)
                self.events.add("allow", tenant=client.tenant, namespace=client.namespace,
                                pod=client.pod, client_ip=client.ip, dst_ip=ip,
                                protocol=proto, port=port, qname=qname, rule=grant.rule,
                                mode=grant.mode, ttl=timeout, policy_version=grant.version,
                                **({"ports": [f"{p}/{n}" for p, n in grant.ports]}
                                   if len(grant.ports) > 1 else {}))
            self.counters["programmed"] += len(new)
            self.counters["refreshed"] += len(live)
            held = min(held, expires)
        if held < now + ttl + 1.0:  # the answer's TTL would outlive an address's allowance
            return -math.inf
        return held - self.cfg.min_ttl - self.cfg.grace + 1.0

    # -- changes ------------------------------------------------------------------------
    def policy_changed(self, keys: list[bytes]) -> None:
        """A policy record changed: allowances it no longer grants go (now), client sets
        follow (on the next sync, woken now)."""
        if self.active:
            self.revalidate()
        self._wake.set()

    def revalidate(self) -> None:
        """Remove every allowance the policy in force and the identity table no longer
        grant (policy change, pod deleted or relabelled, client gone from the map)."""
        now = time.monotonic()
        store = self.holder.store
        for ip, mine in list(self._allowed.items()):
            client = self.identity.lookup(ip)
            gone: list[tuple[str, Ports]] = []
            for key, a in list(mine.items()):
                if a.expires <= now:
                    del mine[key]
                    continue
                grant = store.egress(client, a.qname) if store.egress_mode(client) else None
                if grant is None or grant.ports != key[1]:
                    gone.append(key)
            if gone:
                self._remove(ip, gone)
            if not mine:
                del self._allowed[ip]
                self._clients.pop(ip, None)

    def _remove(self, client_ip: str, keys: list[tuple[str, Ports]]) -> None:
        """Revoke ``keys`` (dst, ports) of one client in one transaction per port list."""
        mine = self._allowed.get(client_ip, {})
        assert self.nft is not None
        by_ports: dict[Ports, list[str]] = {}
        for dst, ports in keys:
            by_ports.setdefault(ports, []).append(dst)
            mine.pop((dst, ports), None)
        for ports, dsts in by_ports.items():
            try:
                self.nft.run(ruleset.revoke_elements(self.cfg.table, client_ip, dsts, ports))
            except NftError as exc:  # the set itself is gone (table deleted by hand)
                self.counters["failures"] += 1
                log.error("egress: cannot revoke %s -> %s: %s", client_ip, ",".join(dsts),
                          exc)
        self.counters["removed"] += len(keys)
        if self.on_revoke is not None:
            self.on_revoke()
        log.info("egress: revoked %d allowance(s) of %s (policy or identity changed)",
                 len(keys), client_ip)

    def sync(self) -> None:
        """Client sets from the identity table and the policy in force (one transaction,
        only when they changed); expired allowances forgotten; what changed revalidated."""
        if self.nft is None:
            return
        sets: dict[str, list[str]] = {name: [] for name in ruleset.CLIENT_SETS}
        store = self.holder.store
        for net, client in _known_clients(self.identity):
            mode = store.egress_mode(client) if store.has_egress else None
            if mode is not None:
                sets[f"{mode}{net.version}"].append(str(net))
        for name in sets:
            sets[name] = _disjoint(sets[name])
        if sets != self._client_sets:
            self.nft.run(ruleset.replace_clients(self.cfg.table, sets))
            self._client_sets = sets
            self.counters["syncs"] += 1
        if any(self.identity.lookup(ip) != c for ip, c in self._clients.items()) or \
                self._allowed:
            self.revalidate()

    # -- dropped attempts ---------------------------------------------------------------
    def _attempt(self, a: Attempt) -> None:
        kind = "would_drop" if "would_drop" in a.prefix else "drop"
        c = self.identity.lookup(a.src)
        self.events.add(kind, tenant=c.tenant, namespace=c.namespace, pod=c.pod,
                        client_ip=a.src, dst_ip=a.dst, protocol=a.protocol, port=a.port,
                        mode="audit" if kind == "would_drop" else "enforce")

    def counter(self, name: str) -> int:
        """Packets counted by the ruleset's ``dropped`` / ``would_drop`` counter."""
        if self.nft is None or not self.active:
            return 0
        out = self.nft.list_json({"counter": {"family": ruleset.FAMILY,
                                              "table": self.cfg.table, "name": name}})
        for item in (out or {}).get("nftables", []):
            if "counter" in item:
                return int(item["counter"].get("packets", 0))
        return 0

    def status(self) -> dict[str, Any]:
        programmed = self.counters["programmed"] + self.counters["refreshed"]
        return {"active": self.active, "backend": self.nft.backend if self.nft else "",
                "table": self.cfg.table, "clients": {k: len(v) for k, v in
                                                     (self._client_sets or {}).items()},
                "allowances": sum(len(v) for v in self._allowed.values()),
                **self.counters, "events": dict(self.events.counts),
                "nft_us_per_programming": round(self.cost_us / programmed, 1)
                if programmed else 0.0}


def _known_clients(identity: IdentityTable) -> list[tuple[Any, ClientInfo]]:
    """Every client the identity table names: pods (one address each) and map entries
    (networks). Read from the table's own fields: it has no listing API of its own."""
    out: list[tuple[Any, ClientInfo]] = []
    for net, info in getattr(identity, "_cidrs", []):
        out.append((net, info))
    for ip, info in getattr(identity, "_pods", {}).items():
        with contextlib.suppress(ValueError):
            out.append((ipaddress.ip_network(ip), info))
    return out


def _disjoint(nets: list[str]) -> list[str]:
    """Interval sets refuse overlaps: a network inside another one of the set is left out
    (the larger one already covers it)."""
    parsed = sorted({ipaddress.ip_network(n) for n in nets},
                    key=lambda n: (n.prefixlen, n.network_address))
    kept: list[Any] = []
    for n in parsed:
        if not any(n.version == k.version and n.subnet_of(k) for k in kept):
            kept.append(n)
    return [str(n) for n in kept]
