"""What the node and the edge recorded about egress, read from ClickHouse through a
``Reader`` the CLI gives (SQL -> rows as dicts), so policies/ needs no ClickHouse client:
the allowances of one client for one address (``explain --connect``) and the addresses each
rule's clients were allowed over a window (``egress-export``).

``egress_events`` allows are what the node programmed (with their TTL); ``dns_events``
answers are the fallback where no node agent runs (no TTL kept: expiry unknown)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Reader = Callable[[str], list[dict[str, Any]]]
ANSWERED = "('allow', 'would_deny', 'rewrite', 'redirect')"  # decisions that answered


def lit(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _since(seconds: int) -> str:
    return f"ts >= now64(6) - toIntervalSecond({int(seconds)})"


@dataclass(frozen=True, slots=True)
class Seen:
    """One recorded egress event or answer that concerns a client and an address."""

    ts_us: int
    kind: str          # allow | drop | would_drop | answer (dns_events)
    qname: str = ""
    rule: str = ""
    protocol: str = ""
    port: int = 0      # 0 with protocol "": every port
    ttl: int | None = None  # None: not recorded (dns_events)
    edge: str = ""
    namespace: str = ""
    dst_ip: str = ""
    tenant: str = ""

    @property
    def expires_us(self) -> int | None:
        return None if self.ttl is None else self.ts_us + self.ttl * 1_000_000


def answer_ip(answer: str) -> str | None:
    """``A 1.2.3.4`` / ``AAAA 2001:db8::1`` (edge events) or a bare address -> the address."""
    text = answer.split(" ", 1)[1] if answer.startswith(("A ", "AAAA ")) else answer
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def for_client(read: Reader, tenant: str, client_ip: str, dst_ip: str,
               since_s: int) -> tuple[list[Seen], list[Seen]]:
    """The node's events for (client, address), newest first, and the edge's answers that
    held the address (the fallback), newest first."""
    rows = read(
        "SELECT toUnixTimestamp64Micro(ts) AS us, kind, qname, rule, protocol, port, ttl, edge "
        f"FROM dnsflow.egress_events WHERE tenant = {lit(tenant)} AND client_ip = "
        f"{lit(client_ip)} AND dst_ip = {lit(dst_ip)} AND {_since(since_s)} "
        "ORDER BY ts DESC LIMIT 200")
    node = [Seen(int(r["us"]), r["kind"], r["qname"], r["rule"], r["protocol"], int(r["port"]),
                 int(r["ttl"]), r["edge"], dst_ip=dst_ip) for r in rows]
    family = "AAAA" if ":" in dst_ip else "A"
    rows = read(
        "SELECT toUnixTimestamp64Micro(ts) AS us, qname, edge FROM dnsflow.dns_events "
        f"WHERE tenant = {lit(tenant)} AND client_ip = {lit(client_ip)} AND "
        f"hasAny(answers, [{lit(dst_ip)}, {lit(f'{family} {dst_ip}')}]) AND decision IN "
        f"{ANSWERED} AND {_since(since_s)} ORDER BY ts DESC LIMIT 50")
    answers = [Seen(int(r["us"]), "answer", r["qname"], edge=r["edge"], dst_ip=dst_ip)
               for r in rows]
    return node, answers


def allowed_addresses(read: Reader, tenants: Iterable[str], since_s: int
                      ) -> tuple[list[Seen], list[Seen]]:
    """Per tenant: the node's allows (one per rule, namespace, address, port) and the
    edge's A/AAAA answers (one per namespace, name, answer) over the window."""
    ts = ", ".join(lit(t) for t in sorted(set(tenants))) or "''"
    rows = read(
        "SELECT tenant, namespace, rule, qname, dst_ip, protocol, port, "
        "toUnixTimestamp64Micro(max(ts)) AS us FROM dnsflow.egress_events "
        f"WHERE kind = 'allow' AND tenant IN ({ts}) AND {_since(since_s)} "
        "GROUP BY tenant, namespace, rule, qname, dst_ip, protocol, port ORDER BY dst_ip")
    node = [Seen(int(r["us"]), "allow", r["qname"], r["rule"], r["protocol"], int(r["port"]),
                 namespace=r["namespace"], dst_ip=r["dst_ip"], tenant=r["tenant"]) for r in rows]
    rows = read(
        "SELECT tenant, namespace, qname, arrayJoin(answers) AS answer, "
        "toUnixTimestamp64Micro(max(ts)) AS us FROM dnsflow.dns_events "
        f"WHERE tenant IN ({ts}) AND qtype IN ('A', 'AAAA') AND decision IN {ANSWERED} "
        f"AND {_since(since_s)} GROUP BY tenant, namespace, qname, answer ORDER BY answer")
    answers = [Seen(int(r["us"]), "answer", r["qname"], namespace=r["namespace"], dst_ip=ip,
                    tenant=r["tenant"])
               for r in rows if (ip := answer_ip(r["answer"])) is not None]
    return node, answers
