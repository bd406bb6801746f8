"""``dnsflow policy explain --connect``: may this client connect to this address and port,
under which egress rule, and which answer allowed it until when.

The rule part is the compiled rules the edge enforces (``PolicyStore.egress_rules`` /
``egress``), so explain and the node cannot disagree on who is selected; the answer part is
what was recorded (``egress_observed``), judged against the time given (``now_us``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dnsflow.policies.egress import CompiledEgress
from dnsflow.policies.egress_observed import Reader, Seen, for_client
from dnsflow.policies.egress_target import Target
from dnsflow.policies.store import PolicyStore
from dnsflow.policies.types import ClientInfo


def when(us: int | None) -> str:
    if us is None:
        return "unknown"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ports_text(ports: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{p}/{proto}" for proto, p in ports) or "every port"


def _port_ok(ports: tuple[tuple[str, int], ...], t: Target) -> bool:
    return not ports or (t.protocol, t.port) in ports


@dataclass
class ConnectExplanation:
    client: ClientInfo
    target: Target
    mode: str | None                        # enforce | audit | None (not enforced)
    rules: list[CompiledEgress]             # the rules judging this client
    port_rules: list[str]                   # of those, the ones allowing the port
    decision: str                           # allow | drop | would_drop | not_enforced
    why: str
    allowed_by: Seen | None = None
    drops: list[Seen] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        a = self.allowed_by
        return {
            "client": {"ip": self.client.ip, "tenant": self.client.tenant,
                       "namespace": self.client.namespace, "pod": self.client.pod},
            "connect": {"ip": self.target.ip, "port": self.target.port,
                        "protocol": self.target.protocol},
            "mode": self.mode, "decision": self.decision, "why": self.why,
            "rules": [r.rule_id for r in self.rules], "port_rules": self.port_rules,
            "allowed_by": None if a is None else {
                "name": a.qname, "rule": a.rule, "source": "egress_events" if a.ttl is not None
                else "dns_events", "at_us": a.ts_us, "expires_us": a.expires_us, "edge": a.edge},
            "dropped_attempts": len(self.drops),
            "last_drop_us": self.drops[0].ts_us if self.drops else None,
        }

    def lines(self) -> list[str]:
        c = self.client
        out = [f"connect:  {c.ip} (tenant {c.tenant}, namespace {c.namespace}"
               + (f", pod {c.pod}" if c.pod else "") + f") -> {self.target}"]
        if self.mode is None:
            out.append("egress:   no egress rule selects this client: not enforced")
        else:
            out.append(f"egress:   {self.mode}")
            out += [f"  rule    {r.rule_id} [{r.mode}, {ports_text(r.ports)}, names "
                    f"{', '.join(r.names + r.patterns)}]" for r in self.rules]
            out.append(f"port:     {self.target.port}/{self.target.protocol} "
                       + (f"allowed by {', '.join(self.port_rules)}" if self.port_rules
                          else "allowed by no rule selecting the client"))
        out.append(f"decision: {self.decision}")
        out.append(f"why:      {self.why}")
        if self.drops:
            out.append(f"dropped:  {len(self.drops)} attempt(s) recorded, last at "
                       f"{when(self.drops[0].ts_us)}")
        return out


def _judging(store: PolicyStore, client: ClientInfo, mode: str) -> list[CompiledEgress]:
    """The rules whose verdict counts: the enforcing ones when any enforces, else audit."""
    return [r for r in store.egress_rules(client.tenant)
            if (r.selector is None or r.selector.matches(client))
            and (mode == "audit" or r.mode == "enforce")]


def explain_connect(store: PolicyStore, client: ClientInfo, target: Target,
                    read: Reader | None, since_s: int, now_us: int) -> ConnectExplanation:
    """The verdict; ``read`` is only called when the rules leave the answer open."""
    mode = store.egress_mode(client)
    if mode is None:
        return ConnectExplanation(client, target, None, [], [], "not_enforced",
                                  "no egress rule selects the client: the node does not "
                                  "filter its connections")
    rules = _judging(store, client, mode)
    port_rules = [r.rule_id for r in rules if _port_ok(r.ports, target)]
    drop = "drop" if mode == "enforce" else "would_drop"
    if not port_rules:
        allowed = "; ".join(f"{r.rule_id}: {ports_text(r.ports)}" for r in rules)
        return ConnectExplanation(client, target, mode, rules, [], drop,
                                  f"port {target.port}/{target.protocol} is allowed by no "
                                  f"rule selecting the client ({allowed})")
    assert read is not None, "the rules leave it open: ClickHouse is needed"
    node, answers = for_client(read, client.tenant, client.ip, target.ip, since_s)
    drops = [s for s in node if s.kind in ("drop", "would_drop")]
    allows = [s for s in node if s.kind == "allow"
              and (s.port == 0 or (s.protocol, s.port) == (target.protocol, target.port))]
    out = ConnectExplanation(client, target, mode, rules, port_rules, drop, "", drops=drops)
    live = [s for s in allows if (s.expires_us or 0) >= now_us]
    if live:
        a = out.allowed_by = live[0]
        out.decision = "allow"
        out.why = (f"{a.qname} was answered with {target.ip} at {when(a.ts_us)} (rule {a.rule}"
                   f", edge {a.edge or '?'}): allowed until {when(a.expires_us)}")
        return out
    if allows:
        a = out.allowed_by = allows[0]
        out.why = (f"{a.qname} answered {target.ip} at {when(a.ts_us)} (rule {a.rule}), but "
                   f"that allowance expired at {when(a.expires_us)} and no answer renewed it")
        return out
    for s in answers:  # no node agent recorded anything: what the edge answered
        grant = store.egress(client, s.qname, mode)
        if grant is not None and _port_ok(grant.ports, target):
            out.allowed_by, out.decision = s, "allow"
            out.why = (f"{s.qname} was answered with {target.ip} at {when(s.ts_us)} (rule "
                       f"{grant.rule}; from dns_events: the node recorded no allowance, so "
                       "the expiry — the answer's TTL plus the node's grace — is unknown)")
            return out
    out.why = ("no allowed name resolved to this address for this client"
               + (" in the window" if since_s else "")
               + (": dropped" if drop == "drop" else ": audit mode, would be dropped"))
    return out
