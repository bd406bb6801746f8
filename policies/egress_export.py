"""``dnsflow policy egress-export``: the egress rules as Kubernetes documents for clusters
without the node agent.

``networkpolicy``: one ``NetworkPolicy`` per rule and namespace, the rule's clients as its
``podSelector``, egress to the ``ipBlock`` (/32, /128) of every address the rule's clients
were allowed (``egress_events``) or answered for its names (``dns_events``) over the window,
on the rule's ports, plus DNS to kube-dns (selected pods lose every other egress). The
addresses are a snapshot: re-export as they change. ``cilium``: one
``CiliumNetworkPolicy`` with ``toFQDNs`` (Cilium follows the answers itself) and the DNS rule
its proxy needs. Rules Kubernetes cannot express faithfully are skipped with a warning
(audit mode; service accounts in a NetworkPolicy) rather than exported wider or stricter."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dnsflow.policies.egress import CompiledEgress, EgressIndex
from dnsflow.policies.egress_observed import Seen
from dnsflow.policies.store import PolicyStore
from dnsflow.policies.types import ClientInfo

MANAGED = {"app.kubernetes.io/managed-by": "dnsflow"}
SA_LABEL = "io.cilium.k8s.policy.serviceaccount"


@dataclass(frozen=True)
class DnsTarget:
    """Where the selected pods resolve (allowed in every exported document)."""

    namespace: str = "kube-system"
    labels: dict[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})


@dataclass(frozen=True)
class Placed:
    """One egress rule in one namespace: what becomes one document."""

    tenant: str
    namespace: str
    rule: CompiledEgress


def k8s_name(rule_id: str) -> str:
    """``shop/base#stripe`` -> ``dnsflow-egress-shop-base-stripe`` (a DNS-1123 subdomain)."""
    slug = re.sub(r"[^a-z0-9]+", "-", rule_id.lower()).strip("-")
    name = f"dnsflow-egress-{slug}"
    if len(name) > 63:  # label-sized, so it also fits label values and Cilium's names
        name = name[:54].rstrip("-") + "-" + hashlib.sha256(rule_id.encode()).hexdigest()[:8]
    return name


def place(store: PolicyStore, tenant_namespaces: dict[str, set[str]],
          warn: list[str]) -> list[Placed]:
    """Every (rule, namespace) to export; a rule for every namespace of its tenant is placed
    in each namespace known for the tenant (its policies', the tenant map's, observed)."""
    out: list[Placed] = []
    seen: set[tuple[str, str]] = set()
    for tenant in sorted(tenant_namespaces):
        for r in store.egress_rules(tenant):
            s = r.selector
            nss = sorted(s.namespaces) if s is not None and s.namespaces is not None \
                else sorted(tenant_namespaces[tenant])
            if r.mode != "enforce":
                if (r.rule_id, "") not in seen:
                    warn.append(f"{r.rule_id}: mode audit has no Kubernetes equivalent: "
                                "not exported")
                seen.add((r.rule_id, ""))
                continue
            for ns in nss:
                if (r.rule_id, ns) not in seen:
                    seen.add((r.rule_id, ns))
                    out.append(Placed(tenant, ns, r))
    return out


def addresses(p: Placed, node: Iterable[Seen], answers: Iterable[Seen]) -> list[str]:
    """The addresses the rule allowed its clients in this namespace: the node's allows for
    the rule, and answers for names the rule matches."""
    names = EgressIndex([replace(p.rule, selector=None, index=0)])
    anyone = ClientInfo("", p.tenant, p.namespace)
    found = {s.dst_ip for s in node if s.rule == p.rule.rule_id and s.namespace == p.namespace
             and s.tenant == p.tenant}
    found |= {s.dst_ip for s in answers if s.namespace == p.namespace and s.tenant == p.tenant
              and names.match(anyone, s.qname) is not None}
    return sorted(found, key=lambda a: ipaddress.ip_address(a).packed.rjust(16, b"\0"))


def _metadata(p: Placed) -> dict[str, Any]:
    return {"name": k8s_name(p.rule.rule_id), "namespace": p.namespace,
            "labels": dict(MANAGED),
            "annotations": {"dnsflow.io/rule": p.rule.rule_id, "dnsflow.io/tenant": p.tenant,
                            "dnsflow.io/names": ",".join(p.rule.names + p.rule.patterns)}}


def network_policy(p: Placed, ips: list[str], dns: DnsTarget) -> dict[str, Any]:
    s = p.rule.selector
    labels = dict(s.labels) if s is not None else {}
    allow: dict[str, Any] = {"to": [{"ipBlock": {"cidr": f"{ip}/{128 if ':' in ip else 32}"}}
                                    for ip in ips]}
    if p.rule.ports:
        allow["ports"] = [{"protocol": proto.upper(), "port": port}
                          for proto, port in p.rule.ports]
    resolve = {"to": [{"namespaceSelector": {"matchLabels": {
                  "kubernetes.io/metadata.name": dns.namespace}},
                  "podSelector": {"matchLabels": dict(dns.labels)}}],
               "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(p),
            "spec": {"podSelector": {"matchLabels": labels} if labels else {},
                     "policyTypes": ["Egress"],
                     "egress": [resolve, *([allow] if ips else [])]}}


def cilium_policy(p: Placed, dns: DnsTarget) -> dict[str, Any]:
    s = p.rule.selector
    selector: dict[str, Any] = {"matchLabels": dict(s.labels) if s is not None else {}}
    if s is not None and s.service_accounts is not None:
        selector["matchExpressions"] = [{"key": SA_LABEL, "operator": "In",
                                         "values": sorted(s.service_accounts)}]
    to_fqdns = [{"matchName": n} for n in p.rule.names]
    to_fqdns += [{"matchPattern": pat} for pat in p.rule.patterns]
    allow: dict[str, Any] = {"toFQDNs": to_fqdns}
    if p.rule.ports:
        allow["toPorts"] = [{"ports": [{"port": str(port), "protocol": proto.upper()}
                                       for proto, port in p.rule.ports]}]
    kube_dns = {f"k8s:{k}": v for k, v in dns.labels.items()}
    resolve = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace":
                                                dns.namespace, **kube_dns}}],
               "toPorts": [{"ports": [{"port": "53", "protocol": "ANY"}],
                            "rules": {"dns": [{"matchPattern": "*"}]}}]}
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": _metadata(p),
            "spec": {"endpointSelector": selector, "egress": [resolve, allow]}}


def export(placed: list[Placed], fmt: str, node: list[Seen], answers: list[Seen],
           dns: DnsTarget, warn: list[str]) -> list[dict[str, Any]]:
    """The documents, in rule order; what cannot be exported faithfully goes to ``warn``."""
    docs = []
    for p in placed:
        if fmt == "cilium":
            docs.append(cilium_policy(p, dns))
            continue
        if p.rule.selector is not None and p.rule.selector.service_accounts is not None:
            warn.append(f"{p.rule.rule_id}: a NetworkPolicy cannot select service accounts: "
                        f"not exported for namespace {p.namespace} (use --format cilium)")
            continue
        ips = addresses(p, node, answers)
        if not ips:
            warn.append(f"{p.rule.rule_id} in namespace {p.namespace}: no address observed "
                        "in the window: the exported policy allows DNS only")
        docs.append(network_policy(p, ips, dns))
    return docs
