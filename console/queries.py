"""The console's questions to ClickHouse, each bound to one tenant by a query parameter.

Every statement filters with ``({tenant:String} = '' OR tenant = {tenant:String})``: the
tenant travels as a bound parameter (ClickHouse substitutes it server-side, for chDB and
for a server alike), never formatted into the SQL text. ``''`` (every tenant) is only ever
bound for an all-tenant token (:meth:`console.auth.Scope.tenant_param`).

clickhouse-connect clients are synchronous and chDB runs one statement at a time per
client, so statements run one after another in a worker thread.
"""

from __future__ import annotations

import asyncio
import difflib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import yaml

SCOPED = "({tenant:String} = '' OR tenant = {tenant:String})"
SINCE = "ts >= now64(6) - INTERVAL {minutes:UInt32} MINUTE"
SINCE_MINUTE = "minute >= toStartOfMinute(now() - INTERVAL {minutes:UInt32} MINUTE)"
SINCE_HOUR = "hour >= toStartOfHour(now() - INTERVAL {minutes:UInt32} MINUTE)"
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
         86400)
POINTS = 60  # buckets per chart: readable on a laptop screen
RAW_SPAN_S = 6 * 3600  # more data than this: charts from the rollups


class ConsoleQueryError(RuntimeError):
    """ClickHouse refused or could not answer; the message is safe to show."""


def step_for(span_s: float) -> int:
    """A round bucket width giving about :data:`POINTS` buckets over ``span_s``."""
    want = max(1.0, span_s / POINTS)
    return next((s for s in STEPS if s >= want), STEPS[-1])


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


class Queries:
    """Statements run on ``client_factory(route(tenant))``, where ``tenant`` is the one the
    statement is bound to ('' = every tenant). By default one client serves every tenant; with
    ``--server-users`` ``route`` names the tenant's own read-only server user (``access.py``),
    so the server filters the rows as well."""

    @staticmethod
    def one(tenant: str) -> str:
        """The default route: one client for every tenant."""
        return ""

    def __init__(self, client_factory: Callable[[str], Any],
                 route: Callable[[str], str] = one) -> None:
        self._factory = client_factory
        self._route = route
        self._clients: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    def _run(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        key = self._route(params.get("tenant", ""))
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = self._factory(key)
        r = client.query(sql, parameters=params)
        names = list(r.column_names)
        return [dict(zip(names, row, strict=True)) for row in r.result_rows]

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._run, sql, params)
            except Exception as exc:
                raise ConsoleQueryError(_one_line(exc)) from None

    def close(self) -> None:
        clients, self._clients = self._clients, {}  # forgotten even if closing fails
        for client in clients.values():
            client.close()

    # -- pages -------------------------------------------------------------------------

    async def tenants(self, tenant: str) -> list[str]:
        rows = await self.rows(
            f"SELECT DISTINCT tenant FROM dnsflow.dns_minute WHERE {SCOPED} ORDER BY tenant",
            tenant=tenant)
        return [r["tenant"] for r in rows]

    async def traffic(self, tenant: str, minutes: int) -> list[dict[str, Any]]:
        """Per tenant: queries per bucket by decision and by rcode, latency quantiles (ms).

        The buckets cover the data found in the window (a 20 s demo gets 1 s buckets, not
        one bar in a day). Up to :data:`RAW_SPAN_S` of data is read from ``dns_events``;
        beyond, from the rollups (``dns_names_hour`` for decisions and rcodes, hour buckets
        at least; ``dns_minute`` for latency), so a month costs what a few hours do."""
        span = await self.rows(
            "SELECT toUnixTimestamp(min(minute)) AS lo, toUnixTimestamp(max(minute)) AS hi, "
            f"sum(queries) AS n FROM dnsflow.dns_minute WHERE {SCOPED} AND {SINCE_MINUTE}",
            tenant=tenant, minutes=minutes)
        if not span or not span[0]["n"]:
            return []
        seconds = span[0]["hi"] - span[0]["lo"] + 60
        if seconds > RAW_SPAN_S:
            return await self._traffic_rollups(tenant, minutes, max(step_for(seconds), 3600))
        return await self._traffic_raw(tenant, minutes)

    async def _traffic_raw(self, tenant: str, minutes: int) -> list[dict[str, Any]]:
        span = await self.rows(
            f"SELECT toUnixTimestamp64Micro(min(ts)) AS lo, toUnixTimestamp64Micro(max(ts)) "
            f"AS hi, count() AS n FROM dnsflow.dns_events WHERE {SCOPED} AND {SINCE}",
            tenant=tenant, minutes=minutes)
        if not span or not span[0]["n"]:
            return []
        step = step_for((span[0]["hi"] - span[0]["lo"]) / 1e6)
        counts = _bucketed("dns_events", "ts", SINCE, "count() AS n", by_outcome=True)
        lat = _bucketed("dns_events", "ts", SINCE,
                        "quantiles(0.5, 0.9, 0.99)(latency_us) AS q")
        return await self._chart(counts, lat, tenant, minutes, step)

    async def _traffic_rollups(self, tenant: str, minutes: int, step: int
                               ) -> list[dict[str, Any]]:
        counts = _bucketed("dns_names_hour", "hour", SINCE_HOUR, "sum(queries) AS n",
                           by_outcome=True)
        lat = _bucketed("dns_minute", "minute", SINCE_MINUTE,
                        "quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_q) AS q")
        return await self._chart(counts, lat, tenant, minutes, step)

    async def _chart(self, counts_sql: str, lat_sql: str, tenant: str, minutes: int,
                     step: int) -> list[dict[str, Any]]:
        """The traffic chart of one tenant (or all) from its two bucketed statements."""
        params = {"tenant": tenant, "minutes": minutes, "step": step}
        counts = await self.rows(counts_sql, **params)
        lat = await self.rows(lat_sql, **params)
        return _series(counts, lat, step)

    async def top(self, tenant: str, minutes: int, limit: int) -> dict[str, list[dict[str, Any]]]:
        """Most asked names, and most denied ones (``deny`` and audit-mode ``would_deny``)."""
        base = (f"SELECT tenant, qname, sum(queries) AS queries, uniqMerge(clients) AS clients "
                f"FROM dnsflow.dns_names_hour WHERE {SCOPED} AND {SINCE_HOUR}")
        tail = " GROUP BY tenant, qname ORDER BY queries DESC, qname LIMIT {limit:UInt32}"
        names = await self.rows(base + tail, tenant=tenant, minutes=minutes, limit=limit)
        denied = await self.rows(base + " AND decision IN ('deny', 'would_deny')" + tail,
                                 tenant=tenant, minutes=minutes, limit=limit)
        return {"names": names, "denied": denied}

    async def anomalies(self, tenant: str, minutes: int, limit: int) -> list[dict[str, Any]]:
        """One entry per incident (a detection plus its updates), newest first."""
        rows = await self.rows(
            "SELECT ts, tenant, kind, client_ip, domain, severity, score, evidence "
            f"FROM dnsflow.anomalies FINAL WHERE {SCOPED} AND {SINCE} ORDER BY ts "
            "LIMIT 20000", tenant=tenant, minutes=minutes)
        return incidents(rows)[:limit]

    async def alerts(self, tenant: str, minutes: int, limit: int) -> list[dict[str, Any]]:
        rows = await self.rows(
            "SELECT ts, rule, tenant, severity, data FROM dnsflow.alerts FINAL "
            f"WHERE {SCOPED} AND {SINCE} ORDER BY ts DESC LIMIT {{limit:UInt32}}",
            tenant=tenant, minutes=minutes, limit=limit)
        out = []
        for r in rows:
            data = _json(r["data"])
            out.append({"ts": _epoch(r["ts"]), "rule": r["rule"], "tenant": r["tenant"],
                        "severity": r["severity"], "summary": data.get("summary", ""),
                        "count": data.get("count"), "incidents": data.get("incidents", []),
                        "data": data})
        return out

    async def policy_log(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        """Each published version, newest first, with the diff from the version before."""
        rows = await self.rows(
            "SELECT ts, tenant, version, hash, previous_hash, source, actor, change, document "
            f"FROM dnsflow.policy_log FINAL WHERE {SCOPED} ORDER BY tenant, version, ts",
            tenant=tenant)
        return policy_entries(rows)[:limit]


def _bucketed(table: str, column: str, since: str, what: str, by_outcome: bool = False) -> str:
    """Per tenant and bucket of ``{step}`` seconds of ``column`` (``b``), ``what`` over the
    window; ``by_outcome``: also per decision and rcode. Raw events and the rollups answer
    the traffic chart with the same statement."""
    group = "tenant, b, decision, rcode" if by_outcome else "tenant, b"
    outcome = "decision, rcode, " if by_outcome else ""
    return (f"SELECT tenant, toUnixTimestamp(toStartOfInterval({column}, "
            f"INTERVAL {{step:UInt32}} SECOND)) AS b, {outcome}{what} FROM dnsflow.{table} "
            f"WHERE {SCOPED} AND {since} GROUP BY {group} ORDER BY tenant, b")


def _series(counts: list[dict[str, Any]], lat: list[dict[str, Any]], step: int
            ) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in counts:
        t = out.setdefault(r["tenant"], {"tenant": r["tenant"], "step_s": step, "buckets": [],
                                         "decision": {}, "rcode": {}, "queries": 0})
        if not t["buckets"] or t["buckets"][-1] != r["b"]:
            t["buckets"].append(r["b"])
        t["queries"] += r["n"]
    for t in out.values():
        index = {b: i for i, b in enumerate(t["buckets"])}
        t["_index"] = index
        t["latency_ms"] = {k: [None] * len(index) for k in ("p50", "p90", "p99")}
    for r in counts:
        t = out[r["tenant"]]
        n = len(t["_index"])
        for kind in ("decision", "rcode"):
            series = t[kind].setdefault(r[kind], [0] * n)
            series[t["_index"][r["b"]]] += r["n"]
    for r in lat:
        t = out.get(r["tenant"])
        if t is None or r["b"] not in t["_index"]:
            continue
        i = t["_index"][r["b"]]
        for k, v in zip(("p50", "p90", "p99"), r["q"], strict=True):
            t["latency_ms"][k][i] = None if math.isnan(v) else round(v / 1000, 3)
    for t in out.values():
        del t["_index"]
    return list(out.values())


def _one_line(exc: BaseException) -> str:
    """ClickHouse's message without the client's echo of the statement or the stack."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(" (version ", 1)[0].split(". Stack trace", 1)[0]
    return text[:300]


def _json(text: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"raw": text}
    return obj if isinstance(obj, dict) else {"value": obj}


SEVERITY = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def incidents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Detections grouped by the incident id the detectors put in the evidence."""
    by_id: dict[tuple[str, str], dict[str, Any]] = {}
    for i, r in enumerate(rows):
        ev = _json(r["evidence"])
        key = (r["tenant"], str(ev.get("incident") or f"#{i}"))
        ts = _epoch(r["ts"])
        inc = by_id.get(key)
        if inc is None:
            inc = by_id[key] = {"incident": key[1], "tenant": r["tenant"], "kind": r["kind"],
                                "first_ts": ts, "updates": 0, "severity": r["severity"],
                                "score": 0.0}
        inc["updates"] += 1
        inc["last_ts"] = ts
        inc["client_ip"] = r["client_ip"]
        inc["domain"] = r["domain"]
        inc["score"] = max(inc["score"], round(float(r["score"]), 3))
        if SEVERITY.get(r["severity"], 0) >= SEVERITY.get(inc["severity"], 0):
            inc["severity"] = r["severity"]
        inc["evidence"] = ev
    return sorted(by_id.values(), key=lambda x: x["last_ts"], reverse=True)


def _readable(document: str) -> list[str]:
    doc = _json(document)
    return yaml.safe_dump(doc.get("policies", doc), sort_keys=False).splitlines(keepends=True)


def policy_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    previous: dict[str, dict[str, Any]] = {}
    for r in rows:
        before = previous.get(r["tenant"])
        old = _readable(before["document"]) if before else []
        new = _readable(r["document"])
        label = f"{r['tenant']} v{before['version']}" if before else f"{r['tenant']} (none)"
        diff = "".join(difflib.unified_diff(old, new, label, f"{r['tenant']} v{r['version']}"))
        out.append({"ts": _epoch(r["ts"]), "tenant": r["tenant"], "version": r["version"],
                    "hash": r["hash"], "previous_hash": r["previous_hash"],
                    "source": r["source"], "actor": r["actor"], "change": r["change"],
                    "diff": diff})
        previous[r["tenant"]] = r
    return sorted(out, key=lambda e: (e["ts"], e["version"]), reverse=True)
