"""Removal (#17): what a policy change or an identity change no longer allows leaves the
allow-sets at once, not at TTL expiry. The edge runs on the memory bus with its real policy
subscription, tenant map watcher and Kubernetes watch code; only nft is faked (conftest.py).

Every allowance in these tests lives 125 s (TTL 120 + grace 5), so a delete seen within the
test's few seconds is the revocation, never the expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import pytest

from dnsflow.edge.identity.k8s import KubernetesIdentity
from dnsflow.edge.service import EdgeService
from dnsflow.policies.api import policy_records
from tests.helpers.policy_yaml import dns_policy
from tests.helpers.waiting import until

EGRESS_ON = {"enabled": True, "grace": 5, "min_ttl": 0, "nflog_group": 0,
             "sync_interval": 60}  # a sync seen within a test was woken by the change

RULE = """
egress:
  - id: web
    toFQDNs: [{matchName: example.com}]
    ports: [{port: 443}]
"""
EGRESS = dns_policy("egress", "shop", "shop", RULE)
ELEMENT = ("allow4", ["127.0.0.1", "93.184.216.34", "tcp", 443])


async def _ask(edge: Any, name: str, source: str = "127.0.0.1") -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=edge.status()["udp_port"],
                                    source=source, timeout=3)


def _revoked(nft: Any) -> list[tuple[str, list[Any]]]:
    return [(name, val) for name, val, _ in nft.elements("delete")]


def _enforced(nft: Any) -> list[Any]:
    """The enforce4 members written by the last client-set transaction."""
    last = [b for b in nft.batches if any("flush" in c for c in b)][-1]
    return [e for c in last for e in c.get("add", {}).get("element", {}).get("elem", [])
            if c["add"]["element"]["name"] == "enforce4"]


async def _publish(bus: Any, edge: Any, text: str, version: int) -> None:
    before = edge.status()["policy"]["applied"]
    await bus.send_many(bus.topics.policies, policy_records(text, version))
    await until(lambda: edge.status()["policy"]["applied"] > before, timeout=3.0,
                what=f"policy v{version} applied")


async def _allowed_edge(start_edge: Any, bus: Any, **kw: Any) -> Any:
    await bus.send_many(bus.topics.policies, policy_records(EGRESS, 1))
    edge = await start_edge(egress=EGRESS_ON, **kw)
    await until(lambda: edge.status()["policy"]["applied"] >= 1, timeout=3.0,
                what="policy v1 applied")
    assert (await _ask(edge, "example.com")).rcode() == 0
    assert (*ELEMENT, 125) in nft_elements(edge)
    return edge


def nft_elements(edge: Any) -> list[Any]:
    return edge.egress.nft.elements()


@pytest.mark.parametrize("change", [
    pytest.param(RULE.replace("matchName: example.com", "matchName: other.test"),
                 id="rule-loses-the-name"),
    pytest.param(RULE.replace("- id: web", "- id: web\n    clients: {labels: {app: api}}"),
                 id="selector-no-longer-matches"),
    pytest.param("rules: []", id="egress-rule-removed"),
])
async def test_a_policy_change_revokes_what_it_no_longer_allows(start_edge, nft, bus,
                                                                change: str) -> None:
    edge = await _allowed_edge(start_edge, bus)
    await _publish(bus, edge, dns_policy("egress", "shop", "shop", change), 2)
    assert _revoked(nft) == [ELEMENT]  # in the subscription's own turn: no waiting
    st = edge.status()["egress"]
    assert st["removed"] == 1 and st["allowances"] == 0
    if "other.test" not in change:  # the client is no longer selected: out of the sets
        await until(lambda: _enforced(nft) == [], timeout=2.0, what="enforce4 emptied")


async def test_a_port_change_revokes_the_old_ports_and_the_next_answer_adds_the_new(
        start_edge, nft, bus) -> None:
    edge = await _allowed_edge(start_edge, bus)
    await _publish(bus, edge, dns_policy("egress", "shop", "shop",
                                         RULE.replace("443", "8443")), 2)
    assert _revoked(nft) == [ELEMENT]
    assert _enforced(nft)  # still selected
    await _ask(edge, "example.com")
    assert ("allow4", ["127.0.0.1", "93.184.216.34", "tcp", 8443], 125) in nft.elements()


async def test_an_unrelated_policy_change_revokes_nothing(start_edge, nft, bus) -> None:
    edge = await _allowed_edge(start_edge, bus)
    await _publish(bus, edge, dns_policy("egress", "shop", "shop", RULE + (
        "rules: [{id: x, match: {names: [ads.test]}, action: deny}]\n")), 2)
    assert _revoked(nft) == []
    assert edge.status()["egress"]["allowances"] == 1


async def test_a_client_leaving_the_tenant_map_loses_its_allowances_and_membership(
        start_edge, nft, bus, write_map, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EdgeService, "map_poll_s", 0.05)
    path: Path = write_map("clients:\n  - {cidr: 127.0.0.0/8, tenant: shop, namespace: shop}\n")
    edge = await _allowed_edge(start_edge, bus, tenant_map=str(path))
    assert _enforced(nft) == [{"prefix": {"addr": "127.0.0.0", "len": 8}}]
    # the address now belongs to no one the rule selects (a namespace without egress rule)
    path.write_text("clients:\n  - {cidr: 127.0.0.0/8, tenant: shop, namespace: blog-new}\n")
    await until(lambda: _revoked(nft) == [ELEMENT], timeout=3.0, what="revoked on map edit")
    await until(lambda: _enforced(nft) == [], timeout=2.0, what="enforce4 emptied")
    assert edge.status()["egress"]["allowances"] == 0


async def test_a_deleted_pod_loses_its_allowances_and_membership(start_edge, nft, bus,
                                                                 write_map) -> None:
    """The Kubernetes watch's own code (a DELETED pod event, debounced rebuild) without its
    threads: the identity table loses the address, the agent revokes what it had."""
    path = write_map("default: {tenant: guests, namespace: guests}\nclients: []\n")
    await bus.send_many(bus.topics.policies, policy_records(EGRESS, 1))
    edge = await start_edge(egress=EGRESS_ON, tenant_map=str(path))
    watch = KubernetesIdentity(edge.identity, api=object(), debounce=0.01)
    watch._loop = asyncio.get_running_loop()
    pod = {"metadata": {"namespace": "shop", "name": "web-1"},
           "status": {"phase": "Running", "podIP": "127.0.0.7"}, "spec": {}}
    watch._apply("namespaces", "RESET", [{"metadata": {"name": "shop"}}])
    watch._apply("pods", "RESET", [pod])
    await until(lambda: edge.identity.lookup("127.0.0.7").pod == "web-1", timeout=2.0,
                what="pod known")
    await until(lambda: _enforced(nft) == ["127.0.0.7"], timeout=2.0, what="pod enforced")
    assert (await _ask(edge, "example.com", source="127.0.0.7")).rcode() == 0
    element = ("allow4", ["127.0.0.7", "93.184.216.34", "tcp", 443])
    assert (*element, 125) in nft.elements()
    watch._apply("pods", "DELETED", [pod])
    await until(lambda: _revoked(nft) == [element], timeout=2.0, what="revoked on delete")
    await until(lambda: _enforced(nft) == [], timeout=2.0, what="pod out of enforce4")
    assert edge.status()["egress"]["allowances"] == 0


async def test_revocation_is_one_transaction_that_survives_kernel_expiry(start_edge, nft,
                                                                         bus) -> None:
    """An element may have expired in the kernel already: each batch adds it (no-op when
    present) before deleting it, so one nft call revokes everything of a client."""
    edge = await _allowed_edge(start_edge, bus)
    n = len(nft.batches)
    await _publish(bus, edge, dns_policy("egress", "shop", "shop", "rules: []"), 2)
    revoking = [b for b in nft.batches[n:] if any("delete" in c for c in b)]
    assert len(revoking) == 1
    ops = [next(iter(c)) for c in revoking[0]]
    assert ops == ["add", "delete"]


async def test_a_revocation_empties_the_fast_path_of_selected_clients(start_edge, nft,
                                                                      bus) -> None:
    """A selected client's hits are memoised while its allowance lasts; a revocation must
    not leave one behind: the policy change drops it (generation) and the agent's revocation
    empties the memo even when no generation moved."""
    edge = await _allowed_edge(start_edge, bus)
    fast = edge.resolver.fast
    await _ask(edge, "example.com")  # a hit: memoised
    n = fast.answered
    await _ask(edge, "example.com")
    assert fast.answered == n + 1 and len(fast) == 1  # answered without the agent
    edge.egress._remove("127.0.0.1", [(ELEMENT[1][1], (("tcp", 443),))])
    assert len(fast) == 0
    await _ask(edge, "example.com")  # the full path: the agent programs it again
    assert fast.answered == n + 1 and nft.elements()[-1] == (*ELEMENT, 125)
    await _ask(edge, "example.com")
    await _ask(edge, "example.com")
    assert fast.answered == n + 3  # memoised again with the new allowance
    await _publish(bus, edge, dns_policy("egress", "shop", "shop", "rules: []"), 2)
    assert _revoked(nft)[-1] == ELEMENT and len(fast) == 0
    await _ask(edge, "example.com")
    await _ask(edge, "example.com")  # memoised again, as an unselected client's hit
    assert edge.status()["egress"]["allowances"] == 0
