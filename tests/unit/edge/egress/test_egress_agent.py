"""The egress agent against a recording nft (conftest.py, no kernel): what a selected
client's answer programs before it is released, what repeats cost, fail closed/open, and the
edge's hook (no egress rule: no egress work), and the fast path for selected clients: a
memoised answer is released without the agent only while its allowance is not due
(``allow_until``). Removal on policy and identity changes: test_egress_removal.py."""

from __future__ import annotations

import math
import socket
import struct
import time
from typing import Any

import dns.message
import pytest

from dnsflow.edge.egress import ruleset
from dnsflow.edge.egress.nflog import parse_messages
from tests.helpers.dns_client import udp_exchange
from tests.helpers.policy_yaml import dns_policy, store_from_yaml

EGRESS = dns_policy("egress", "shop", "shop", """
egress:
  - id: web
    toFQDNs: [{matchName: example.com}, {matchPattern: "*.example.com"}]
    ports: [{port: 443}]
""")


async def _ask(edge: Any, name: str) -> dns.message.Message:
    raw = await udp_exchange(edge.status()["udp_port"],
                             dns.message.make_query(name, "A").to_wire())
    assert raw is not None, f"no answer for {name}"
    return dns.message.from_wire(raw)


EGRESS_ON = {"enabled": True, "grace": 5, "min_ttl": 0, "nflog_group": 0}


async def test_an_answer_programs_its_addresses_before_it_is_released(start_edge, nft):
    edge = await start_edge(policy_store=store_from_yaml(EGRESS), egress=EGRESS_ON)
    assert "table inet dnsflow" in nft.scripts[-1]
    assert edge.resolver.egress is edge.egress  # an egress rule exists: the hook is set
    sets = [c for b in nft.batches for c in b if "flush" in c]
    assert sets, "client sets written at start"
    enforce = [c["add"]["element"] for b in nft.batches for c in b
               if c.get("add", {}).get("element", {}).get("name") == "enforce4"]
    assert enforce and enforce[-1]["elem"] == [{"prefix": {"addr": "127.0.0.0", "len": 8}}]
    r = await _ask(edge, "www.example.com")  # CNAME to example.com: its A record is allowed
    assert r.rcode() == 0
    got = nft.elements()
    assert ("allow4", ["127.0.0.1", "93.184.216.34", "tcp", 443], 125) in got
    n = len(nft.batches)
    fast = edge.resolver.fast.answered
    for _ in range(5):  # cache hits of a live allowance: no nft call; the first memoises
        await _ask(edge, "www.example.com")
    assert len(nft.batches) == n
    assert len(edge.resolver.fast) == 1
    assert edge.resolver.fast.answered - fast == 4  # released without asking the agent
    status = edge.status()["egress"]
    assert status["programmed"] == 1 and status["repeats"] >= 1
    await edge.egress.events.flush()


async def test_a_memoised_answer_goes_back_to_the_agent_when_its_allowance_is_due(
        start_edge, nft):
    """The memo's deadline is the allowance's expiry less min_ttl + grace - 1 s: past it
    the full path asks the agent, which re-programs, and the answer is memoised again."""
    edge = await start_edge(policy_store=store_from_yaml(EGRESS), egress=EGRESS_ON)
    await _ask(edge, "example.com")
    await _ask(edge, "example.com")  # a hit of a live allowance: memoised with its deadline
    [memo] = edge.resolver.fast.memo.values()
    [a] = edge.egress._allowed["127.0.0.1"].values()
    want = a.expires - 0 - 5 + 1 - time.monotonic() + time.perf_counter()
    assert abs(memo.allowed - want) < 0.05
    assert a.expires >= memo.entry.expires + 1  # whatever second it is released in
    # the allowance nears its end (as if ~120 s went by): due, not yet expired
    a.expires = time.monotonic() + 3
    memo.allowed = memo.check_at = time.perf_counter() - 0.001
    n, fast = len(nft.batches), edge.resolver.fast.answered
    assert (await _ask(edge, "example.com")).rcode() == 0
    assert edge.resolver.fast.answered == fast  # the full path answered
    assert len(nft.batches) == n + 1 and edge.status()["egress"]["refreshed"] == 1
    [memo] = edge.resolver.fast.memo.values()
    assert memo.allowed > time.perf_counter() + 100  # memoised again, with the new expiry
    await _ask(edge, "example.com")
    assert edge.resolver.fast.answered == fast + 1 and len(nft.batches) == n + 1


def test_allow_until_mirrors_the_agents_repeat_rule(nft):
    """What the fast path may rely on, in the agent's own terms: programmed now, a repeat,
    an allowance the answer's TTL would outlive, nothing to program, failures."""
    from dnsflow.edge.egress.agent import EgressAgent
    from dnsflow.edge.egress.config import EgressConfig
    from dnsflow.edge.identity.table import IdentityTable
    from dnsflow.edge.request import PolicyHolder
    from dnsflow.policies.api import ClientInfo

    ident = IdentityTable("shop", "shop")  # everyone is shop/shop, selected by EGRESS
    agent = EgressAgent(EgressConfig(enabled=True, grace=5, min_ttl=5, nflog_group=0),
                        PolicyHolder(store_from_yaml(EGRESS)), ident, "e1")
    agent.nft, agent.active = nft, True
    c = ident.lookup("127.0.0.1")
    t0 = time.monotonic()
    until = agent.allow_until(c, "example.com", ["192.0.2.1"], 60)
    assert until is not None and t0 + 60 - 4 <= until <= time.monotonic() + 60 - 4 + 0.01
    assert agent.allow_until(c, "example.com", ["192.0.2.1"], 59) == until  # a repeat
    assert len(nft.batches) == 1
    later = agent.allow_until(c, "example.com", ["192.0.2.1"], 64)  # past the tolerance
    assert len(nft.batches) == 2 and later is not None and later >= until + 3
    # grace < 1: a repeat within the agent's 1 s tolerance may end before the last second
    # of a (slightly longer) answer; released (as before), never memoised on it
    agent.cfg = agent.cfg.model_copy(update={"grace": 0.5, "min_ttl": 0})
    assert agent.allow_until(c, "example.com", ["192.0.2.3"], 60) > time.monotonic() + 59
    assert agent.allow_until(c, "example.com", ["192.0.2.3"], 60.2) == -math.inf
    assert len(nft.batches) == 3
    agent.cfg = agent.cfg.model_copy(update={"grace": 5.0, "min_ttl": 5})
    assert agent.allow_until(c, "nothing.test", ["192.0.2.9"], 60) == math.inf
    assert agent.allow_until(ClientInfo(ip="10.9.9.9", tenant="shop", namespace="blog"),
                             "example.com", ["192.0.2.1"], 60) == math.inf  # not selected
    nft.fail = True
    assert agent.allow_until(c, "example.com", ["192.0.2.2"], 60) is None  # closed
    agent.cfg = agent.cfg.model_copy(update={"fail": "open"})
    assert agent.allow_until(c, "example.com", ["192.0.2.2"], 60) == -math.inf


async def test_names_without_a_rule_and_unselected_clients_program_nothing(start_edge, nft,
                                                                           write_map):
    store = store_from_yaml(EGRESS)
    edge = await start_edge(policy_store=store, egress=EGRESS_ON, tenant_map=str(write_map(
        "clients:\n  - {cidr: 127.0.0.0/8, tenant: shop, namespace: blog}\n")))
    await _ask(edge, "example.com")
    await _ask(edge, "example.com")  # a hit: memoised
    assert nft.elements() == []
    assert len(edge.resolver.fast) == 1  # not selected: the fast path as before


async def test_no_egress_rule_keeps_the_hook_none(start_edge, nft):
    edge = await start_edge(policy_store=store_from_yaml(dns_policy("p", "shop", "shop",
                                                                    "rules: []")),
                            egress=EGRESS_ON)
    assert edge.resolver.egress is None
    await _ask(edge, "example.com")
    assert nft.elements() == []


async def test_fail_closed_answers_servfail_fail_open_answers(start_edge, nft):
    edge = await start_edge(policy_store=store_from_yaml(EGRESS), egress=EGRESS_ON)
    nft.fail = True
    # SERVFAIL: connecting would be dropped anyway
    assert (await _ask(edge, "example.com")).rcode() == 2
    assert edge.status()["egress"]["failures"] == 1
    edge.egress.cfg = edge.egress.cfg.model_copy(update={"fail": "open"})
    assert (await _ask(edge, "example.com")).rcode() == 0


async def test_a_table_that_cannot_be_installed_stops_the_edge_when_closed(start_edge, nft):
    from dnsflow.settings import ConfigError

    nft.fail = True
    with pytest.raises(ConfigError, match=r"egress\.fail: closed"):
        await start_edge(policy_store=store_from_yaml(EGRESS), egress=EGRESS_ON)
    edge = await start_edge(policy_store=store_from_yaml(EGRESS),
                            egress={**EGRESS_ON, "fail": "open"})
    assert edge.resolver.egress is None and not edge.status()["egress"]["active"]


def test_restart_keep_tears_down_all_but_the_allow_sets():
    existing = {"nftables": [{"chain": {"table": "dnsflow", "name": "forward"}},
                             {"set": {"table": "dnsflow", "name": "enforce4"}},
                             {"set": {"table": "dnsflow", "name": "allow4"}},
                             {"counter": {"table": "dnsflow", "name": "dropped"}}]}
    script = ruleset.teardown("dnsflow", existing)
    assert "delete chain inet dnsflow forward" in script
    assert "delete set inet dnsflow enforce4" in script
    assert "allow4" not in script


def test_nflog_packets_become_attempts():
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 60, 0, 0, 64, 6, 0,
                     socket.inet_aton("10.200.1.2"), socket.inet_aton("10.200.3.12"))
    tcp = struct.pack("!HH", 40000, 443) + b"\0" * 16

    def attr(kind: int, data: bytes) -> bytes:
        n = 4 + len(data)
        return struct.pack("=HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)

    body = struct.pack("=BBH", 2, 0, 0) + attr(10, b"dnsflow-egress drop \0") + attr(
        9, ip + tcp)
    msg = struct.pack("=IHHII", 16 + len(body), 4 << 8, 0, 0, 0) + body
    [a] = parse_messages(msg)
    assert (a.prefix, a.src, a.dst, a.protocol, a.port) == (
        "dnsflow-egress drop", "10.200.1.2", "10.200.3.12", "tcp", 443)
