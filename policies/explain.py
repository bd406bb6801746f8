"""``dnsflow policy explain``: which rule decides a query, why, and what the client gets.

The verdict shown is always the one ``PolicyStore.decide`` returns; the trace around it is
rebuilt from the same compiled rules so the two cannot disagree on the decider.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsflow.policies.matcher import CompiledRule
from dnsflow.policies.store import PolicyStore
from dnsflow.policies.types import ClientInfo, Verdict

DENY_EFFECT = {
    "NXDOMAIN": "NXDOMAIN (the name does not exist)",
    "REFUSED": "REFUSED",
    "NODATA": "NOERROR with an empty answer (NODATA)",
    "DROP": "no response at all (the query is dropped; the client times out)",
}


@dataclass
class Explanation:
    client: ClientInfo
    name: str
    qtype: str
    verdict: Verdict
    why: str
    effect: str
    trace: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        v = self.verdict
        return {
            "name": self.name, "type": self.qtype,
            "client": {"ip": self.client.ip, "tenant": self.client.tenant,
                       "namespace": self.client.namespace,
                       "service_account": self.client.service_account,
                       "labels": dict(self.client.labels)},
            "decision": v.action, "deny_mode": v.deny_mode, "rule": v.rule,
            "policy_version": v.policy_version, "isolated": v.isolated, "log": v.log,
            "rate_limit": list(v.rate_limit) if v.rate_limit else None,
            "records": [[r.name, r.ttl, r.rtype, r.rdata] for r in v.records],
            "upstreams": list(v.upstreams), "why": self.why, "effect": self.effect,
            "trace": self.trace,
        }

    def lines(self) -> list[str]:
        c = self.client
        who = f"{c.ip or '-'} (tenant {c.tenant}, namespace {c.namespace}"
        who += f", service account {c.service_account}" if c.service_account else ""
        who += f", labels {dict(c.labels)}" if c.labels else ""
        v = self.verdict
        decision = v.action + (f" {v.deny_mode}" if v.deny_mode else "")
        out = [
            f"query:    {self.name} {self.qtype} from {who})",
            f"decision: {decision}",
            f"rule:     {v.rule or '(none: default allow)'}",
            f"version:  {v.policy_version}",
            f"why:      {self.why}",
            f"client gets: {self.effect}",
        ]
        if v.rate_limit:
            out.append(f"rate limit: {v.rate_limit[0]:g} queries/s, burst {v.rate_limit[1]}")
        if v.log:
            out.append("log:      yes (the rule asks for the query to be logged)")
        out.extend(f"  {t}" for t in self.trace)
        return out


def _skip_reason(r: CompiledRule, client: ClientInfo, qtype: str) -> str | None:
    if r.qtypes is not None and qtype not in r.qtypes:
        return f"type {qtype} not in {sorted(t for t in r.qtypes if t.isupper())}"
    s = r.selector
    if s is not None and not s.matches(client):
        if s.namespaces is not None and client.namespace not in s.namespaces:
            return f"client namespace {client.namespace!r} not in {sorted(s.namespaces)}"
        if s.service_accounts is not None and client.service_account not in s.service_accounts:
            return f"service account {client.service_account!r} not in " \
                   f"{sorted(s.service_accounts)}"
        return f"client labels do not match {dict(s.labels)}"
    return None


def _pattern(r: CompiledRule, name: str) -> str:
    for n in r.names:
        if n == name or (n.startswith("*.") and name.endswith(n[1:])):
            return f"name {n!r}"
    for s in r.suffixes:
        if name == s or name.endswith("." + s):
            return f"suffix {s!r}"
    if r.regexes:
        return f"regex {list(r.regexes)!r}"
    return "every name"


def _tier(r: CompiledRule) -> str:
    if r.rule_id.startswith("cluster:"):
        return "cluster guardrail" if r.guardrail else "cluster baseline"
    return "tenant policy"


def _effect(store: PolicyStore, client: ClientInfo, name: str, qtype: str, v: Verdict) -> str:
    if v.action == "deny":
        return DENY_EFFECT.get(v.deny_mode, v.deny_mode)
    if v.action == "rewrite":
        if not v.records:
            return f"NOERROR with no {qtype} record (the rewrite has none of this type)"
        return "local answer: " + "; ".join(f"{r.name} {r.ttl} {r.rtype} {r.rdata}"
                                           for r in v.records)
    if v.action == "redirect":
        return "the answer of " + ", ".join(v.upstreams)
    view = store.view(client.tenant)
    local = [r for r in view.records
             if (r.name == name or (r.name.startswith("*.") and name.endswith(r.name[1:])))
             and (qtype == "ANY" or r.rtype in (qtype, "CNAME"))]
    if local:
        return "the tenant view's local records: " + "; ".join(
            f"{r.name} {r.ttl} {r.rtype} {r.rdata}" for r in local)
    ups = ", ".join(view.upstreams) if view.upstreams else "the edge's default upstreams"
    return f"the answer of {ups} (answer names of other tenants are still hidden)"


def explain(store: PolicyStore, client: ClientInfo, qname: str, qtype: str) -> Explanation:
    name = qname.lower().rstrip(".")
    qtype = qtype.upper()
    verdict = store.decide(client, name, qtype)
    trace: list[str] = []
    zone = store.cluster_zone(name)
    if zone is not None:
        ns, svc, kind = zone
        info = store.namespace_info(ns)
        if info is None:
            trace.append(f"isolation: namespace {ns!r} belongs to no known tenant: visible")
        else:
            owner, mode, exports = info
            ex = {k: sorted(v) for k, v in exports.items()}
            trace.append(f"isolation: {kind} name in namespace {ns!r} of tenant {owner!r} "
                         f"(isolation {mode}, exports {ex or 'none'})")
    if verdict.isolated:
        ns, svc, kind = zone or ("?", "", "")
        owner = store.namespace_owner(ns)
        what = f"service {svc!r}" if svc else f"{kind} names"
        why = (f"{name} is in namespace {ns!r} of tenant {owner!r}; {what} not exported to "
               f"tenant {client.tenant!r} (isolation step, before any rule)")
        return Explanation(client, name, qtype, verdict, why,
                           _effect(store, client, name, qtype, verdict), trace)
    matcher, _ = store.rules_for(client.tenant)
    decider: CompiledRule | None = None
    for r in matcher.candidates(name):
        reason = _skip_reason(r, client, qtype)
        tag = f"{r.rule_id} [{_tier(r)}, {r.verdict.action}, matches {_pattern(r, name)}]"
        if reason:
            trace.append(f"skip    {tag}: {reason}")
        elif decider is None:
            decider = r
            trace.append(f"match   {tag}")
        else:
            trace.append(f"later   {tag}: not reached (an earlier rule decided)")
    _, response = store.rules_for(client.tenant)
    if response is not None and verdict.action in ("allow", "redirect"):
        for r in response.candidates(name):
            if _skip_reason(r, client, qtype) is None and r.response is not None:
                cond = []
                if r.response.networks:
                    cond.append("an answer IP in " + ", ".join(str(n) for n in
                                                              r.response.networks))
                if r.response.rcodes:
                    cond.append("rcode " + "/".join(sorted(r.response.rcodes)))
                trace.append(f"answer  {r.rule_id} [{_tier(r)}, {r.verdict.action}] applies "
                             f"after the upstream answers if it has {' and '.join(cond)}")
    if verdict.rule.startswith("auto:"):
        why = (f"auto-deny {verdict.rule} from the streams' automatic response (before the "
               f"tenant's own rules)")
        if decider is not None:
            trace.append(f"note    {decider.rule_id} would decide if the auto-deny expired")
    elif decider is not None and decider.rule_id == verdict.rule:
        why = f"first matching rule in precedence order ({_tier(decider)}): " \
              f"{_pattern(decider, name)}"
        if decider.qtypes:
            why += f", types {sorted(t for t in decider.qtypes if t.isupper())}"
    elif not verdict.rule:
        why = "no rule matches: default allow"
    else:  # cannot happen unless decide and the trace diverge
        why = f"decided by {verdict.rule}"
    return Explanation(client, name, qtype, verdict, why,
                       _effect(store, client, name, qtype, verdict), trace)
