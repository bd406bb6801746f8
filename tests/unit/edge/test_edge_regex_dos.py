"""One tenant's regex cannot stall the shared edge (issue #11): with Python's backtracking
``re``, `.*.*.*.*.*z` against a 244-character name blocked the event loop for seconds and
another tenant's query timed out meanwhile. Policy regexes now run on RE2 (linear time)."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.message
import dns.rcode

from tests.helpers.policy_yaml import dns_policy, store_from_yaml

TENANT_MAP = """
default: {tenant: guests, namespace: guests}
namespaces: {shop: shop, payments: payments}
clients:
  - {cidr: 127.0.0.1/32, tenant: shop, namespace: shop}
  - {cidr: 127.0.0.2/32, tenant: payments, namespace: payments}
"""

POLICY = dns_policy("greedy", "shop", "shop", """
  rules:
    - {id: slow, match: {regex: ['.*.*.*.*.*z']}, action: deny}
""")

NAME_244 = ".".join(["a" * 61, "b" * 60, "c" * 60, "d" * 60])


async def _ask(port: int, name: str, source: str, timeout: float) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    return await dns.asyncquery.udp(q, "127.0.0.1", port=port, source=source, timeout=timeout)


async def test_pathological_regex_does_not_stall_other_tenants(start_edge, write_map) -> None:
    svc = await start_edge(tenant_map=str(write_map(TENANT_MAP)),
                           policy_store=store_from_yaml(POLICY))
    port = svc.status()["udp_port"]
    t0 = time.perf_counter()
    slow = asyncio.create_task(_ask(port, NAME_244, "127.0.0.1", 5.0))
    await asyncio.sleep(0.01)  # the slow name reaches the edge first
    other = await _ask(port, "example.com", "127.0.0.2", 2.0)
    assert other.rcode() == dns.rcode.NOERROR and other.answer
    answered = await slow
    assert answered.rcode() == dns.rcode.NXDOMAIN  # not in the zone; not denied either
    assert time.perf_counter() - t0 < 1.0
    denied = await _ask(port, NAME_244[:-1] + "z", "127.0.0.1", 2.0)
    assert denied.rcode() == dns.rcode.NXDOMAIN
    assert svc.status()["queries"]["queries"] >= 3
