"""The edge's answer logic: bytes in, bytes out, for every transport.

``answer()`` is synchronous for everything it can answer from memory (cache hits, denies,
errors) and returns a coroutine only when an upstream must be asked, so listeners pay for a
task only on a miss. Each query is one :class:`edge.request.Request` carried through the
steps below and emits exactly one event (``Request.emit``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import string
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dnsflow.edge import wire
from dnsflow.edge.cache import Entry, cache_key, patch
from dnsflow.edge.fastpath import FastPath
from dnsflow.edge.policy.local import local_answer
from dnsflow.edge.request import PolicyHolder as PolicyHolder  # re-exported: its old home
from dnsflow.edge.request import Request, Shared
from dnsflow.edge.upstream.base import UpstreamError
from dnsflow.edge.upstream.pool import UpstreamPool
from dnsflow.policies.api import CompiledView, LocalRecord

log = logging.getLogger(__name__)

_NAMES_MAX = 200_000
_LETTERS = string.ascii_lowercase


@dataclass(frozen=True, slots=True)
class Options:
    """How the resolver answers, beyond what policy decides (the ``edge:`` config)."""

    max_udp_size: int = wire.MAX_UDP        # cap on UDP answers whatever the client's EDNS
    max_cache_ttl: int = wire.MAX_CACHE_TTL  # cap on every TTL passed on or cached
    chaos_identity: str | None = None       # CH TXT id.server/hostname.bind (None: REFUSED)
    chaos_version: str | None = None        # CH TXT version.bind/version.server
    # pools for a view's or a redirect rule's own upstreams (default: UpstreamPool.from_urls)
    pool_factory: Callable[[list[str]], UpstreamPool] | None = None


class Resolver:
    def __init__(self, shared: Shared, pool: UpstreamPool, options: Options | None = None
                 ) -> None:
        opts = options or Options()
        self.shared = shared
        self.identity = shared.identity
        self.policy = shared.policy
        self.cache = shared.cache
        self.ratelimit = shared.ratelimit
        self.pool = pool
        self.max_udp_size = opts.max_udp_size
        self.max_cache_ttl = opts.max_cache_ttl
        self.chaos = {"id.server": opts.chaos_identity, "hostname.bind": opts.chaos_identity,
                      "version.bind": opts.chaos_version, "version.server": opts.chaos_version}
        self._pool_factory = opts.pool_factory or UpstreamPool.from_urls
        self._pools: dict[tuple[str, ...], UpstreamPool] = {}
        self._names: dict[bytes, str] = {}
        self.fast = FastPath(shared)
        # edge.egress.agent.EgressAgent while an egress rule exists, else None: the answer
        # paths pay one `is None` check without egress rules
        self.egress: Any = None
        self._views: dict[str, tuple[int, CompiledView, dict[str, list[Any]]]] = {}
        self.counters = {"queries": 0, "formerr": 0, "dropped": 0, "servfail": 0,
                         "truncated": 0, "denied": 0, "rate_limited": 0, "isolated": 0}

    # -- helpers ------------------------------------------------------------------------
    def qname_text(self, lname: bytes) -> str:
        """The event's qname for a lower-case question name in wire form (memoised)."""
        names = self._names
        s = names.get(lname)
        if s is None:
            s = wire.wire_to_text(lname)
            if len(names) >= _NAMES_MAX:
                names.clear()
            names[lname] = s
        return s

    def _view(self, tenant: str) -> tuple[CompiledView, dict[str, list[Any]]]:
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
    def answer(self, data: bytes, ip: str, transport: str
               ) -> bytes | Coroutine[Any, Any, bytes | None] | None:
        """Answer from memory (bytes), drop (None), or return a coroutine that asks upstream."""
        req = Request(self.shared, data, ip, transport)
        self.counters["queries"] += 1
        try:
            q = req.q = wire.parse_query(data)
        except wire.WireError as exc:
            return self._bad_packet(req, exc)
        lname = q.qwire.lower()
        qname = req.qname = self.qname_text(lname)
        qtype = req.qtype = wire.qtype_name(q.qtype)
        if q.edns and q.edns_version != 0:
            req.emit("BADVERS")
            return wire.error_response(q, wire.BADVERS)
        if q.qclass == wire.C_CH:
            return self._chaos(req)
        if transport == "udp":
            req.max_size = min(q.udp_size, self.max_udp_size) if q.edns else 512
        client = req.client
        try:
            v = req.verdict = self.policy.store.decide(client, qname, qtype)
        except Exception:
            log.exception("policy decide failed for %s %s; answering SERVFAIL", qname, qtype)
            self.counters["servfail"] += 1
            req.emit("SERVFAIL")
            return wire.error_response(q, wire.SERVFAIL)
        if v.rate_limit is not None and not self.ratelimit.allow(ip, *v.rate_limit):
            self.counters["rate_limited"] += 1
            req.verdict = dataclasses.replace(v, action="deny", rule=v.rule or "ratelimit")
            req.emit("REFUSED")
            return wire.error_response(q, wire.REFUSED)
        action = v.action
        if action == "would_deny":  # audit: answered as allowed; the event keeps would_deny
            action = "allow"
        if action == "allow" and q.qtype == wire.T_PTR and self._ptr_hidden(req):
            action = "isolate"
        if action == "deny":
            if v.isolated or (v.deny_mode == "NXDOMAIN" and v.rule.startswith("isolation")):
                action = "isolate"
            else:
                return self._deny(req)
        if action == "rewrite":
            return self._rewrite(req)
        if v.log:
            _audit(req)
        view, local = self._view(client.tenant)
        if action == "allow" and local and qname in local:
            return self._local(req, local[qname])
        key = req.key = cache_key(client.tenant, q, lname)
        e = self.cache.get(key)
        if (action == "allow" and view.search_domains and "." not in qname and qname
                and q.qtype != wire.T_PTR
                and (e is None or e.policy_version != v.policy_version)):
            return self._search(req, view, local)
        if (e is not None and e.policy_version == v.policy_version
                and (e.decision == "q") == (action == "isolate")):
            return self._hit(req, e, action == "isolate")
        if action == "isolate":
            self.counters["isolated"] += 1
            return self._isolated(req, view, "q")
        pool = self.pool_for(tuple(v.upstreams) if action == "redirect" else view.upstreams)
        return self._miss(req, pool)

    def _hit(self, req: Request, e: Entry, isolated: bool) -> bytes:
        """A cache hit: the stored answer patched for this client; a UDP one is memoised
        (a client an egress rule selects: until its allowance is due, ``allow_until``)."""
        q, v = req.q, req.verdict
        assert v is not None
        now = time.monotonic()
        out = patch(e.at(now), q, e.qlen)
        if len(out) > req.max_size:
            self.counters["truncated"] += 1
            out = wire.truncate(out, q)
        dec = "deny" if isolated or e.decision else None
        answers = [] if isolated else e.answers
        eg = self.egress
        allowed = None  # not selected: the memo needs no egress deadline
        if eg is not None and not isolated and eg.mode(req.client) is not None:
            allowed = eg.allow_until(req.client, req.qname, _answer_ips(e),
                                     max(0.0, e.expires - now))
            if allowed is None:
                return self._egress_failed(req)
        req.emit(e.rcode, answers, "hit", e.upstream, dec)
        if (req.transport == "udp" and len(out) <= req.max_size and not v.log
                and (allowed is None or allowed > now)):
            m = self.fast.remember(req, e, answers, dec or v.action)
            if allowed is not None:
                m.allow(allowed)
        return out

    def _chaos(self, req: Request) -> bytes:
        """CHAOS class is answered here, never forwarded: the upstream's software and
        identity stay hidden. ``version.bind``/``id.server`` (and their aliases) get the
        configured text, REFUSED when none is (like unbound's hide-version/hide-identity);
        every other CH query is REFUSED."""
        q = req.q
        text = self.chaos.get(req.qname) if q.qtype in (wire.T_TXT, 255) else None
        if text is None:
            req.emit("REFUSED", upstream="local")
            return wire.error_response(q, wire.REFUSED)
        req.emit("NOERROR", [f'TXT "{text}"'], upstream="local")
        return wire.chaos_answer(q, text)

    async def _search(self, req: Request, view: CompiledView, local: dict[str, list[Any]]
                      ) -> bytes | None:
        """A single-label name in a view with search domains: the first expansion the client
        may see and that exists is answered as a CNAME to it plus its records."""
        store = self.policy.store
        pool = self.pool_for(view.upstreams)
        q, c, qname, qtype = req.q, req.client, req.qname, req.qtype
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
                req.emit(rcode, answers, upstream="local")
                return out if len(out) <= req.max_size else wire.truncate(out, q)
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
                self._store(req, out, wire.parse_response(out, None, self.max_cache_ttl),
                            upname)
            except wire.WireError:
                pass
            req.emit(rcode, answers, "miss", upname)
            return out if len(out) <= req.max_size else wire.truncate(out, q)
        return await self._miss(req, pool)

    def _store(self, req: Request, reply: bytes, resp: wire.Response, upname: str
               ) -> Entry | None:
        v = req.verdict
        return self.cache.put(req.key, reply, resp, upstream=upname,
                              policy_version=v.policy_version if v is not None else 0)

    def _bad_packet(self, req: Request, exc: wire.WireError) -> bytes | None:
        if exc.rcode is None:
            self.counters["dropped"] += 1
            return None
        data = req.raw
        q = exc.query
        if q is None:
            try:
                q = _partial_query(data)
            except wire.WireError:
                q = None
        self.counters["formerr"] += 1
        rname = wire.rcode_name(exc.rcode)
        if q is not None:
            req.q = q
            req.qname = self.qname_text(q.qwire.lower())
            req.qtype = wire.qtype_name(q.qtype)
            req.emit(rname)
            if not wire.echoable(q):
                return wire.formerr_from_raw(data, exc.rcode)
            return wire.error_response(q, exc.rcode)
        req.emit(rname)  # qname "", qtype TYPE0
        return wire.formerr_from_raw(data, exc.rcode)

    def _ptr_hidden(self, req: Request) -> bool:
        """PTR of another tenant's pod address: hidden like its forward name."""
        ip = wire.ptr_to_ip(req.qname)
        if ip is None:
            return False
        ns = self.identity.namespace_of_ip(ip)
        if ns is None:
            return False
        tenant = self.identity.tenant_of_namespace(ns)
        client = req.client
        if tenant is None or tenant == client.tenant:
            return False
        view, _ = self._view(client.tenant)
        pod_name = f"{ip.replace('.', '-').replace(':', '-')}.{ns}.pod.{view.cluster_domain}"
        try:
            return bool(self.policy.store.hides(client, pod_name))
        except Exception:
            log.exception("policy hides() failed for %s", pod_name)
            return True

    def _deny(self, req: Request) -> bytes | None:
        """A policy deny (``req.verdict``): its deny mode's rcode, or nothing (DROP)."""
        v = req.verdict
        assert v is not None
        self.counters["denied"] += 1
        _audit(req)
        mode = (v.deny_mode or "NXDOMAIN").upper()
        if mode == "DROP":
            req.emit("DROP")
            return None
        rcode = {"NXDOMAIN": wire.NXDOMAIN, "REFUSED": wire.REFUSED,
                 "NODATA": wire.NOERROR}.get(mode, wire.NXDOMAIN)
        req.emit(wire.rcode_name(rcode))
        return wire.error_response(req.q, rcode)

    def _rewrite(self, req: Request) -> bytes | Coroutine[Any, Any, bytes | None]:
        v = req.verdict
        assert v is not None
        _audit(req)
        records = list(v.records)
        cname = [r for r in records if r.rtype.upper() == "CNAME"]
        if cname and req.q.qtype != wire.T_CNAME and not any(
                r.rtype.upper() == req.qtype for r in records):
            return self._rewrite_cname(req, cname[0])
        return self._local(req, records)

    def _local(self, req: Request, records: list[Any]) -> bytes | None:
        out, answers, rcode = local_answer(req.q, records)
        if len(out) > req.max_size:
            out = wire.truncate(out, req.q)
        eg = self.egress
        if eg is not None and answers and not eg.allow(
                req.client, req.qname, _ips_of(answers),
                min((int(r.ttl) for r in records), default=0)):
            return self._egress_failed(req)
        req.emit(rcode, answers, upstream="local")
        return out

    def _egress_failed(self, req: Request) -> bytes:
        """The answer's egress allowance could not be programmed (``egress.fail: closed``):
        the client would be dropped on connect, so the lookup fails visibly instead."""
        self.counters["servfail"] += 1
        req.emit("SERVFAIL", cache="miss")
        return wire.error_response(req.q, wire.SERVFAIL)

    async def _rewrite_cname(self, req: Request, rec: Any) -> bytes | None:
        """A CNAME rewrite: answer the CNAME and what the target resolves to upstream."""
        q = req.q
        target = rec.rdata.rstrip(".").lower()
        pool = self.pool_for(self._view(req.client.tenant)[0].upstreams)
        tail: bytes | None = None
        upname = ""
        try:
            tq = wire.make_query(target, q.qtype)
            tail, upname, _ = await pool.resolve(tq, self.max_cache_ttl)
        except (UpstreamError, wire.WireError):
            tail = None
        out, answers, rcode = local_answer(q, [rec], follow=tail)
        if len(out) > req.max_size:
            out = wire.truncate(out, q)
        req.emit(rcode, answers, "miss", upname)
        return out

    async def _ask(self, q: wire.Query, pool: UpstreamPool, qwire: bytes | None = None
                   ) -> tuple[bytes, str, wire.Response]:
        """A validated NOERROR/NXDOMAIN reply from the first upstream that gives one, with
        the edge's own header bits and clamped TTLs (so the cache stores them as served)."""
        reply, upname, resp = await pool.resolve(wire.upstream_query(q, 0, qwire),
                                                 self.max_cache_ttl)
        return wire.fix_reply(reply, resp, q), upname, resp

    async def _miss(self, req: Request, pool: UpstreamPool) -> bytes | None:
        q, c, qname = req.q, req.client, req.qname
        try:
            reply, upname, resp = await self._ask(q, pool)
        except (UpstreamError, wire.WireError) as exc:
            return self._upstream_failed(req, exc)
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
            return await self._isolated(req, view, "a")
        rcode = wire.rcode_name(resp.rcode)
        try:
            rv = store.check_response(c, qname, req.qtype, rcode, resp.answer_ips)
        except Exception:
            log.exception("policy check_response failed for %s", qname)
            rv = None
        if rv is not None and rv.action == "deny":
            req.verdict = rv
            return self._deny(req)
        if rv is not None and rv.action == "rewrite" and rv.records:
            # a response rule replaced the answer: local records, never cached as upstream's
            req.verdict = rv
            _audit(req)
            return self._local(req, list(rv.records))
        self._store(req, reply, resp, upname)
        out = patch(reply, q, len(q.qwire))
        if len(out) > req.max_size:
            self.counters["truncated"] += 1
            out = wire.truncate(out, q)
        eg = self.egress
        if eg is not None and resp.answer_ips and not eg.allow(
                c, qname, resp.answer_ips, resp.min_ttl or 0):
            return self._egress_failed(req)
        req.emit(rcode, resp.answers, "miss", upname)
        return out

    def _upstream_failed(self, req: Request, exc: Exception, decision: str | None = None
                         ) -> bytes:
        """Every upstream failed (timeout, garbage, SERVFAIL/REFUSED): an expired answer
        within the serve-stale window (RFC 8767), else SERVFAIL."""
        q = req.q
        stale = self.cache.get_stale(req.key)
        if stale is not None:
            out = patch(stale.at(time.monotonic(), stale=True), q, stale.qlen)
            if len(out) > req.max_size:
                out = wire.truncate(out, q)
            req.emit(stale.rcode, [] if decision else stale.answers, "stale", stale.upstream,
                     decision)
            return out
        log.debug("upstream failed for %s %s: %s", req.qname, req.qtype, exc)
        self.counters["servfail"] += 1
        req.emit("SERVFAIL", cache="miss", decision=decision)
        return wire.error_response(q, wire.SERVFAIL)

    async def _isolated(self, req: Request, view: CompiledView, level: str) -> bytes | None:
        """Answer exactly as the upstream answers a name that does not exist.

        We ask the upstream for a sibling name that cannot exist (the first label replaced by
        random letters of the same length), through the same path as any miss (failover,
        validation, SERVFAIL or stale when every upstream fails), and answer whatever that
        gives: NXDOMAIN with its SOA, REFUSED-everywhere SERVFAIL, a wildcard's records —
        in every rcode and class what a missing name would get. The probe name is put back
        to the hidden name (same length, so the layout is unchanged) and the result is cached
        under the hidden name like any answer (``level``: "q" hidden by the question, "a" by
        the answer).
        """
        q = req.q
        lname = req.key[1]
        first = lname[0]
        probe = bytes((first,)) + _random_label(first, lname[1:1 + first]) + lname[1 + first:]
        pool = self.pool_for(view.upstreams)
        dec = "deny"
        try:
            reply, upname, resp = await self._ask(q, pool, probe)
        except (UpstreamError, wire.WireError) as exc:
            return self._upstream_failed(req, exc, decision=dec)
        reply = reply.replace(probe, lname)
        e = self._store(req, reply, resp, upname)
        if e is not None:
            e.decision = level
        out = patch(reply, q, len(q.qwire))
        if len(out) > req.max_size:
            out = wire.truncate(out, q)
        req.emit(wire.rcode_name(resp.rcode), cache="miss", upstream=upname, decision=dec)
        return out


def _audit(req: Request) -> None:
    """Rules marked ``log: true`` leave a structured log line besides the event."""
    v, c = req.verdict, req.client
    if v is not None and v.log:
        log.info("policy %s %s %s %s for %s/%s/%s", v.action, v.rule, req.qname, req.qtype,
                 c.tenant, c.namespace, c.ip,
                 extra={"rule": v.rule, "action": v.action, "qname": req.qname,
                        "qtype": req.qtype, "tenant": c.tenant, "namespace": c.namespace,
                        "client_ip": c.ip, "pod": c.pod})


def _ips_of(answers: list[str]) -> list[str]:
    """The addresses among an event's answers ("A 10.0.0.1", "AAAA ::1", "CNAME x")."""
    return [a.split(" ", 1)[1] for a in answers if a.startswith(("A ", "AAAA "))]


def _answer_ips(e: Entry) -> list[str]:
    """A cached answer's addresses, parsed once per entry."""
    ips = e.meta.get("ips")
    if ips is None:
        ips = e.meta["ips"] = _ips_of(e.answers)
    return ips


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
    qtype, qclass = struct.unpack_from("!HH", data, qend)
    q = wire.Query(data, qid, flags, data[12:qend], qtype, qclass, qend + 4)
    return q
