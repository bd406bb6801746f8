"""The edge's answer logic: bytes in, bytes out, for every transport.

``answer()`` is synchronous for everything it can answer from memory (cache hits, denies,
errors) and returns a coroutine only when an upstream must be asked, so listeners pay for a
task only on a miss. Each query emits exactly one event tuple to the publisher.
"""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Coroutine
from typing import Any

from dnsflow.schema import now_us
from edge import wire
from edge.cache import AnswerCache, patch
from edge.fastpath import FastPath
from edge.identity.table import IdentityTable
from edge.policy.local import local_answer
from edge.policy.ratelimit import RateLimiter
from edge.telemetry.publisher import EventPublisher
from edge.upstream.base import UpstreamError
from edge.upstream.pool import UpstreamPool
from policies.api import ClientInfo, PolicyStore, Verdict, View

log = logging.getLogger(__name__)

_NAMES_MAX = 200_000
_LETTERS = string.ascii_lowercase


class PolicyHolder:
    """The store in force; the subscription swaps or mutates it, the resolver reads it."""

    def __init__(self, store: PolicyStore) -> None:
        self.store = store
        self.generation = 0

    def changed(self) -> None:
        self.generation += 1


class Resolver:
    def __init__(self, *, identity: IdentityTable, policy: PolicyHolder, cache: AnswerCache,
                 pool: UpstreamPool, publisher: EventPublisher | None, edge: str = "edge",
                 pool_factory: Any = None, metrics: Any = None,
                 max_udp_size: int = wire.MAX_UDP, max_cache_ttl: int = wire.MAX_CACHE_TTL,
                 chaos_identity: str | None = None, chaos_version: str | None = None) -> None:
        self.identity = identity
        self.policy = policy
        self.cache = cache
        self.pool = pool
        self.publisher = publisher
        self.edge = edge
        self.metrics = metrics
        self.ratelimit = RateLimiter()
        self.max_udp_size = max_udp_size      # cap on UDP answers whatever the client's EDNS
        self.max_cache_ttl = max_cache_ttl
        # CH TXT id.server/hostname.bind and version.bind/version.server: None = REFUSED
        self.chaos = {"id.server": chaos_identity, "hostname.bind": chaos_identity,
                      "version.bind": chaos_version, "version.server": chaos_version}
        self._pool_factory = pool_factory or (lambda urls: UpstreamPool.from_urls(urls))
        self._pools: dict[tuple[str, ...], UpstreamPool] = {}
        self._names: dict[bytes, str] = {}
        self.fast = FastPath(self)
        self._views: dict[str, tuple[int, View, dict[str, list[Any]]]] = {}
        self.counters = {"queries": 0, "formerr": 0, "dropped": 0, "servfail": 0,
                         "truncated": 0, "denied": 0, "rate_limited": 0, "isolated": 0}

    # -- helpers ------------------------------------------------------------------------
    def _emit(self, ts: int, c: ClientInfo, transport: str, qname: str, qtype: str, rcode: str,
              answers: list[str], t0: float, cache: str, v: Verdict | None, upstream: str,
              decision: str | None = None, rule: str | None = None) -> None:
        lat = int((time.perf_counter() - t0) * 1e6)
        pub = self.publisher
        if pub is not None:
            pub.emit((ts, c.tenant, c.namespace, c.pod, c.service_account, c.ip, transport,
                      qname, qtype, rcode, answers, lat, cache,
                      decision or (v.action if v else "allow"),
                      rule if rule is not None else (v.rule if v else ""),
                      v.policy_version if v else 0, upstream))
        m = self.metrics
        if m is not None:
            m.observe(c.tenant, rcode, decision or (v.action if v else "allow"), cache, lat)

    def qname_text(self, qwire: bytes) -> str:
        names = self._names
        s = names.get(qwire)
        if s is None:
            s = wire.wire_to_text(qwire)
            if len(names) >= _NAMES_MAX:
                names.clear()
            names[qwire] = s
        return s

    def _view(self, tenant: str) -> tuple[View, dict[str, list[Any]]]:
        store = self.policy.store
        gen = self.policy.generation
        got = self._views.get(tenant)
        if got is not None and got[0] == gen:
            return got[1], got[2]
        view = store.view(tenant)
        by_name: dict[str, list[Any]] = {}
        for r in view.records:
            by_name.setdefault(r.name.lower().rstrip("."), []).append(r)
        self._views[tenant] = (gen, view, by_name)
        return view, by_name

    def pool_for(self, urls: tuple[str, ...]) -> UpstreamPool:
        if not urls:
            return self.pool
        p = self._pools.get(urls)
        if p is None:
            p = self._pools[urls] = self._pool_factory(list(urls))
        return p

    # -- the answer path ----------------------------------------------------------------
    def answer(self, data: bytes, ip: str, transport: str, max_size: int = 65535
               ) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        """Answer from memory (bytes), drop (None), or return a coroutine that asks upstream."""
        t0 = time.perf_counter()
        ts = now_us()
        self.counters["queries"] += 1
        try:
            q = wire.parse_query(data)
        except wire.WireError as exc:
            return self._bad_packet(data, exc, ip, transport, t0, ts)
        client = self.identity.lookup(ip)
        qname = self.qname_text(q.qwire.lower())
        qtype = wire.qtype_name(q.qtype)
        if q.edns and q.edns_version != 0:
            self._emit(ts, client, transport, qname, qtype, "BADVERS", [], t0, "none", None, "")
            return wire.error_response(q, wire.BADVERS)
        if q.qclass == wire.C_CH:
            return self._chaos(q, client, transport, qname, qtype, t0, ts)
        if transport == "udp":
            max_size = min(q.udp_size, self.max_udp_size) if q.edns else 512
        store = self.policy.store
        try:
            v = store.decide(client, qname, qtype)
        except Exception:
            log.exception("policy decide failed for %s %s; answering SERVFAIL", qname, qtype)
            self.counters["servfail"] += 1
            self._emit(ts, client, transport, qname, qtype, "SERVFAIL", [], t0, "none", None, "")
            return wire.error_response(q, wire.SERVFAIL)
        if v.rate_limit is not None and not self.ratelimit.allow(ip, *v.rate_limit):
            self.counters["rate_limited"] += 1
            self._emit(ts, client, transport, qname, qtype, "REFUSED", [], t0, "none", v, "",
                       decision="deny", rule=v.rule or "ratelimit")
            return wire.error_response(q, wire.REFUSED)
        action = v.action
        if action == "allow" and q.qtype == wire.T_PTR and self._ptr_hidden(client, qname):
            action = "isolate"
        if action == "deny":
            if v.isolated or (v.deny_mode == "NXDOMAIN" and v.rule.startswith("isolation")):
                action = "isolate"
            else:
                return self._deny(q, v, client, transport, qname, qtype, t0, ts, max_size)
        if action == "rewrite":
            return self._rewrite(q, v, client, transport, qname, qtype, t0, ts, max_size)
        if v.log:
            self._audit(v, client, qname, qtype)
        view, local = self._view(client.tenant)
        if action == "allow" and local and qname in local:
            return self._local(q, v, client, transport, qname, qtype, t0, ts, local[qname],
                               max_size)
        if (action == "allow" and view.search_domains and "." not in qname and qname
                and q.qtype != wire.T_PTR):
            e = self.cache.get(self._key(client.tenant, q))
            if e is None or e.policy_version != v.policy_version:
                return self._search(q, v, client, transport, qname, qtype, t0, ts, view,
                                    local, max_size)
        f = q.flags
        key = (client.tenant, q.qwire.lower(), q.qtype, q.qclass,
               (1 if q.edns else 0) | (2 if q.do else 0) | (f & (wire.CD | wire.AD)))
        e = self.cache.get(key)
        if (e is not None and e.policy_version == v.policy_version
                and (e.decision == "q") == (action == "isolate")):
            out = patch(e.at(time.monotonic()), q, e.qlen)
            if len(out) > max_size:
                self.counters["truncated"] += 1
                out = wire.truncate(out, q)
            dec = "deny" if action == "isolate" or e.decision else None
            answers = [] if action == "isolate" else e.answers
            self._emit(ts, client, transport, qname, qtype, e.rcode, answers, t0, "hit", v,
                       e.upstream, decision=dec)
            if transport == "udp" and len(out) <= max_size and not v.log:
                self.fast.remember(data, ip, q, e, client, v, qname, qtype, answers,
                                   dec or v.action, max_size)
            return out
        if action == "isolate":
            self.counters["isolated"] += 1
            return self._isolated(q, v, client, transport, qname, qtype, t0, ts, key, view,
                                  max_size, "q")
        pool = self.pool_for(tuple(v.upstreams) if action == "redirect" else view.upstreams)
        return self._miss(q, v, client, transport, qname, qtype, t0, ts, key, pool, max_size)

    @staticmethod
    def _key(tenant: str, q: wire.Query) -> tuple:
        return (tenant, q.qwire.lower(), q.qtype, q.qclass,
                (1 if q.edns else 0) | (2 if q.do else 0) | (q.flags & (wire.CD | wire.AD)))

    def _chaos(self, q: wire.Query, c: ClientInfo, transport: str, qname: str, qtype: str,
               t0: float, ts: int) -> bytes:
        """CHAOS class is answered here, never forwarded: the upstream's software and
        identity stay hidden. ``version.bind``/``id.server`` (and their aliases) get the
        configured text, REFUSED when none is (like unbound's hide-version/hide-identity);
        every other CH query is REFUSED."""
        text = self.chaos.get(qname) if q.qtype in (wire.T_TXT, 255) else None
        if text is None:
            self._emit(ts, c, transport, qname, qtype, "REFUSED", [], t0, "none", None,
                       "local")
            return wire.error_response(q, wire.REFUSED)
        self._emit(ts, c, transport, qname, qtype, "NOERROR", [f'TXT "{text}"'], t0, "none",
                   None, "local")
        return wire.chaos_answer(q, text)

    async def _search(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str,
                      qname: str, qtype: str, t0: float, ts: int, view: View,
                      local: dict[str, list[Any]], max_size: int) -> bytes | None:
        """A single-label name in a view with search domains: the first expansion the client
        may see and that exists is answered as a CNAME to it plus its records."""
        from policies.api import LocalRecord

        store = self.policy.store
        pool = self.pool_for(view.upstreams)
        key = self._key(c.tenant, q)
        for dom in view.search_domains:
            full = f"{qname}.{dom.lower().rstrip('.')}"
            try:
                v2 = store.decide(c, full, qtype)
            except Exception:
                log.exception("policy decide failed for %s", full)
                continue
            if v2.action != "allow":
                continue
            if full in local:
                out, answers, rcode = local_answer(q, [LocalRecord(qname, "CNAME", 60, full),
                                                       *local[full]])
                self._emit(ts, c, transport, qname, qtype, rcode, answers, t0, "none", v,
                           "local")
                return out if len(out) <= max_size else wire.truncate(out, q)
            try:
                tail, upname, resp = await pool.resolve(wire.make_query(full, q.qtype),
                                                        self.max_cache_ttl)
            except (UpstreamError, wire.WireError):
                continue
            if resp.rcode != wire.NOERROR or not resp.an_count:
                continue
            try:
                if any(store.hides(c, n) for n in resp.names):
                    continue
            except Exception:
                continue
            ttl = max(0, min(resp.min_ttl or 0, 300))
            out, answers, rcode = local_answer(q, [LocalRecord(qname, "CNAME", ttl, full)],
                                               follow=tail)
            try:
                self.cache.put(key, out, wire.parse_response(out, None, self.max_cache_ttl),
                               upstream=upname,
                               policy_version=v.policy_version, qlen=len(q.qwire),
                               rcode=rcode)
            except wire.WireError:
                pass
            self._emit(ts, c, transport, qname, qtype, rcode, answers, t0, "miss", v, upname)
            return out if len(out) <= max_size else wire.truncate(out, q)
        pool = self.pool_for(view.upstreams)
        return await self._miss(q, v, c, transport, qname, qtype, t0, ts, key, pool, max_size)

    def _bad_packet(self, data: bytes, exc: wire.WireError, ip: str, transport: str,
                    t0: float, ts: int) -> bytes | None:
        client = self.identity.lookup(ip)
        if exc.rcode is None:
            self.counters["dropped"] += 1
            return None
        q = exc.query
        if q is None:
            try:
                q = _partial_query(data)
            except wire.WireError:
                q = None
        self.counters["formerr"] += 1
        rname = wire.rcode_name(exc.rcode)
        if q is not None:
            qname = self.qname_text(q.qwire.lower())
            self._emit(ts, client, transport, qname, wire.qtype_name(q.qtype), rname, [], t0,
                       "none", None, "")
            if not wire.echoable(q):
                return wire.formerr_from_raw(data, exc.rcode)
            return wire.error_response(q, exc.rcode)
        self._emit(ts, client, transport, "", "TYPE0", rname, [], t0, "none", None, "")
        return wire.formerr_from_raw(data, exc.rcode)

    def _ptr_hidden(self, client: ClientInfo, qname: str) -> bool:
        """PTR of another tenant's pod address: hidden like its forward name."""
        ip = wire.ptr_to_ip(qname)
        if ip is None:
            return False
        ns = self.identity.namespace_of_ip(ip)
        if ns is None:
            return False
        tenant = self.identity.tenant_of_namespace(ns)
        if tenant is None or tenant == client.tenant:
            return False
        view, _ = self._view(client.tenant)
        pod_name = f"{ip.replace('.', '-').replace(':', '-')}.{ns}.pod.{view.cluster_domain}"
        try:
            return bool(self.policy.store.hides(client, pod_name))
        except Exception:
            log.exception("policy hides() failed for %s", pod_name)
            return True

    def _deny(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str, qname: str,
              qtype: str, t0: float, ts: int, max_size: int) -> bytes | None:
        self.counters["denied"] += 1
        self._audit(v, c, qname, qtype)
        mode = (v.deny_mode or "NXDOMAIN").upper()
        if mode == "DROP":
            self._emit(ts, c, transport, qname, qtype, "DROP", [], t0, "none", v, "")
            return None
        rcode = {"NXDOMAIN": wire.NXDOMAIN, "REFUSED": wire.REFUSED,
                 "NODATA": wire.NOERROR}.get(mode, wire.NXDOMAIN)
        self._emit(ts, c, transport, qname, qtype, wire.rcode_name(rcode), [], t0, "none", v, "")
        return wire.error_response(q, rcode)

    @staticmethod
    def _audit(v: Verdict, c: ClientInfo, qname: str, qtype: str) -> None:
        """Rules marked ``log: true`` leave a structured log line besides the event."""
        if v.log:
            log.info("policy %s %s %s %s for %s/%s/%s", v.action, v.rule, qname, qtype,
                     c.tenant, c.namespace, c.ip,
                     extra={"rule": v.rule, "action": v.action, "qname": qname,
                            "qtype": qtype, "tenant": c.tenant, "namespace": c.namespace,
                            "client_ip": c.ip, "pod": c.pod})

    def _rewrite(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str, qname: str,
                 qtype: str, t0: float, ts: int, max_size: int
                 ) -> bytes | Coroutine[Any, Any, bytes | None]:
        self._audit(v, c, qname, qtype)
        records = list(v.records)
        cname = [r for r in records if r.rtype.upper() == "CNAME"]
        if cname and q.qtype != wire.T_CNAME and not any(
                r.rtype.upper() == qtype for r in records):
            return self._rewrite_cname(q, v, c, transport, qname, qtype, t0, ts, cname[0],
                                       max_size)
        return self._local(q, v, c, transport, qname, qtype, t0, ts, records, max_size)

    def _local(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str, qname: str,
               qtype: str, t0: float, ts: int, records: list[Any], max_size: int) -> bytes:
        out, answers, rcode = local_answer(q, records)
        if len(out) > max_size:
            out = wire.truncate(out, q)
        self._emit(ts, c, transport, qname, qtype, rcode, answers, t0, "none", v, "local")
        return out

    async def _rewrite_cname(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str,
                             qname: str, qtype: str, t0: float, ts: int, rec: Any,
                             max_size: int) -> bytes | None:
        """A CNAME rewrite: answer the CNAME and what the target resolves to upstream."""
        target = rec.rdata.rstrip(".").lower()
        pool = self.pool_for(self._view(c.tenant)[0].upstreams)
        tail: bytes | None = None
        upname = ""
        try:
            tq = wire.make_query(target, q.qtype)
            tail, upname, _ = await pool.resolve(tq, self.max_cache_ttl)
        except (UpstreamError, wire.WireError):
            tail = None
        out, answers, rcode = local_answer(q, [rec], follow=tail)
        if len(out) > max_size:
            out = wire.truncate(out, q)
        self._emit(ts, c, transport, qname, qtype, rcode, answers, t0, "miss", v, upname)
        return out

    async def _ask(self, q: wire.Query, pool: UpstreamPool, qwire: bytes | None = None
                   ) -> tuple[bytes, str, wire.Response]:
        """A validated NOERROR/NXDOMAIN reply from the first upstream that gives one, with
        the edge's own header bits and clamped TTLs (so the cache stores them as served)."""
        reply, upname, resp = await pool.resolve(wire.upstream_query(q, 0, qwire),
                                                 self.max_cache_ttl)
        return wire.fix_reply(reply, resp, q), upname, resp

    async def _miss(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str, qname: str,
                    qtype: str, t0: float, ts: int, key: tuple, pool: UpstreamPool,
                    max_size: int) -> bytes | None:
        try:
            reply, upname, resp = await self._ask(q, pool)
        except (UpstreamError, wire.WireError) as exc:
            return self._upstream_failed(q, v, c, transport, qname, qtype, t0, ts, key,
                                         max_size, exc)
        store = self.policy.store
        hidden = False
        try:
            hidden = any(store.hides(c, n) for n in resp.names)
        except Exception:
            log.exception("policy hides() failed for the answer to %s", qname)
            hidden = True
        if hidden:
            self.counters["isolated"] += 1
            view, _ = self._view(c.tenant)
            return await self._isolated(q, v, c, transport, qname, qtype, t0, ts, key, view,
                                        max_size, "a")
        rcode = wire.rcode_name(resp.rcode)
        try:
            rv = store.check_response(c, qname, qtype, rcode, resp.answer_ips)
        except Exception:
            log.exception("policy check_response failed for %s", qname)
            rv = None
        if rv is not None and rv.action == "deny":
            return self._deny(q, rv, c, transport, qname, qtype, t0, ts, max_size)
        if rv is not None and rv.action == "rewrite" and rv.records:
            # a response rule replaced the answer: local records, never cached as upstream's
            self._audit(rv, c, qname, qtype)
            return self._local(q, rv, c, transport, qname, qtype, t0, ts, list(rv.records),
                               max_size)
        qlen = len(q.qwire)
        self.cache.put(key, reply, resp, upstream=upname, policy_version=v.policy_version,
                       qlen=qlen, rcode=rcode)
        out = patch(reply, q, qlen)
        if len(out) > max_size:
            self.counters["truncated"] += 1
            out = wire.truncate(out, q)
        self._emit(ts, c, transport, qname, qtype, rcode, resp.answers, t0, "miss", v, upname)
        return out

    def _upstream_failed(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str,
                         qname: str, qtype: str, t0: float, ts: int, key: tuple,
                         max_size: int, exc: Exception, decision: str | None = None) -> bytes:
        """Every upstream failed (timeout, garbage, SERVFAIL/REFUSED): an expired answer
        within the serve-stale window (RFC 8767), else SERVFAIL."""
        stale = self.cache.get_stale(key)
        if stale is not None:
            out = patch(stale.at(time.monotonic(), stale=True), q, stale.qlen)
            if len(out) > max_size:
                out = wire.truncate(out, q)
            self._emit(ts, c, transport, qname, qtype, stale.rcode,
                       [] if decision else stale.answers, t0, "stale", v, stale.upstream,
                       decision=decision)
            return out
        log.debug("upstream failed for %s %s: %s", qname, qtype, exc)
        self.counters["servfail"] += 1
        self._emit(ts, c, transport, qname, qtype, "SERVFAIL", [], t0, "miss", v, "",
                   decision=decision)
        return wire.error_response(q, wire.SERVFAIL)

    async def _isolated(self, q: wire.Query, v: Verdict, c: ClientInfo, transport: str,
                        qname: str, qtype: str, t0: float, ts: int, key: tuple, view: View,
                        max_size: int, level: str) -> bytes | None:
        """Answer exactly as the upstream answers a name that does not exist.

        We ask the upstream for a sibling name that cannot exist (the first label replaced by
        random letters of the same length), through the same path as any miss (failover,
        validation, SERVFAIL or stale when every upstream fails), and answer whatever that
        gives: NXDOMAIN with its SOA, REFUSED-everywhere SERVFAIL, a wildcard's records —
        in every rcode and class what a missing name would get. The probe name is put back
        to the hidden name (same length, so the layout is unchanged) and the result is cached
        under the hidden name like any answer.
        """
        first = q.qwire[0]
        probe_label = _random_label(first, q.qwire[1:1 + first].lower())
        probe = bytes((first,)) + probe_label + q.qwire[1 + first:].lower()
        pool = self.pool_for(view.upstreams)
        dec = "deny"
        try:
            reply, upname, resp = await self._ask(q, pool, probe)
        except (UpstreamError, wire.WireError) as exc:
            return self._upstream_failed(q, v, c, transport, qname, qtype, t0, ts, key,
                                         max_size, exc, decision=dec)
        qlen = len(q.qwire)
        reply = reply.replace(probe, q.qwire.lower())
        rcode = wire.rcode_name(resp.rcode)
        e = self.cache.put(key, reply, resp, upstream=upname,
                           policy_version=v.policy_version, qlen=qlen, rcode=rcode)
        if e is not None:
            e.decision = level
        out = patch(reply, q, qlen)
        if len(out) > max_size:
            out = wire.truncate(out, q)
        self._emit(ts, c, transport, qname, qtype, rcode, [], t0, "miss", v, upname,
                   decision=dec)
        return out


def _random_label(n: int, avoid: bytes) -> bytes:
    for _ in range(8):
        lab = "".join(random.choice(_LETTERS) for _ in range(n)).encode()
        if lab != avoid:
            return lab
    return b"z" * n if avoid != b"z" * n else b"y" * n


def _partial_query(data: bytes) -> wire.Query:
    """Header and question only, to answer FORMERR/NOTIMP/REFUSED with the question echoed."""
    if len(data) < 12:
        raise wire.WireError("short")
    qid, flags, qd = wire.HEADER.unpack_from(data)[:3]
    if qd < 1:
        raise wire.WireError("no question")
    qend = wire.read_qname(data, 12)
    if qend + 4 > len(data):
        raise wire.WireError("question truncated")
    import struct

    qtype, qclass = struct.unpack_from("!HH", data, qend)
    q = wire.Query(data, qid, flags, data[12:qend], qtype, qclass, qend + 4)
    return q
