"""The base ruleset the edge installs (once, at start) and the set elements it programs.

``table inet <table>``: a chain on the forward hook sends enforced clients to ``enforce``
and audited clients to ``audit``. Both accept DNS to the configured DNS addresses and what
the allow-sets hold for the client; ``enforce`` then logs (NFLOG) and drops, ``audit`` logs
and accepts. Connections already established keep going (conntrack), as with Cilium: an
allowance gates new connections only.
"""

from __future__ import annotations

import ipaddress
from typing import Any

FAMILY = "inet"
LOG_DROP = "dnsflow-egress drop"
LOG_AUDIT = "dnsflow-egress would_drop"
CLIENT_SETS = ("enforce4", "audit4", "enforce6", "audit6")
ALLOW_SETS = ("allow4", "allow4_any", "allow6", "allow6_any")


def base_ruleset(table: str, dns: list[str], dns_port: int, nflog_group: int) -> str:
    """The nft script of the whole table. Written as one ``table { }`` block (``add``
    semantics): sets that already exist keep their elements, so the installer decides
    what survives a restart by what it deletes first (:func:`teardown`)."""
    dns4 = [a for a in dns if ipaddress.ip_address(a).version == 4]
    dns6 = [a for a in dns if ipaddress.ip_address(a).version == 6]

    def log(prefix: str) -> str:
        return f'log prefix "{prefix} " group {nflog_group} ' if nflog_group else ""

    def accepts() -> str:
        lines = []
        if dns4:
            lines.append(f"ip daddr {{ {', '.join(dns4)} }} meta l4proto {{ tcp, udp }} "
                         f"th dport {dns_port} accept")
        if dns6:
            lines.append(f"ip6 daddr {{ {', '.join(dns6)} }} meta l4proto {{ tcp, udp }} "
                         f"th dport {dns_port} accept")
        lines += [
            "ip saddr . ip daddr @allow4_any accept",
            "ip saddr . ip daddr . meta l4proto . th dport @allow4 accept",
            "ip6 saddr . ip6 daddr @allow6_any accept",
            "ip6 saddr . ip6 daddr . meta l4proto . th dport @allow6 accept",
        ]
        return "\n".join("    " + x for x in lines)

    sets = []
    for name, typ in (("enforce4", "ipv4_addr"), ("audit4", "ipv4_addr"),
                      ("enforce6", "ipv6_addr"), ("audit6", "ipv6_addr")):
        sets.append(f"  set {name} {{ type {typ}; flags interval; }}")
    for name, typ in (("allow4", "ipv4_addr . ipv4_addr . inet_proto . inet_service"),
                      ("allow4_any", "ipv4_addr . ipv4_addr"),
                      ("allow6", "ipv6_addr . ipv6_addr . inet_proto . inet_service"),
                      ("allow6_any", "ipv6_addr . ipv6_addr")):
        sets.append(f"  set {name} {{ type {typ}; flags timeout; }}")
    body = "\n".join([
        f"table {FAMILY} {table} {{",
        *sets,
        "  counter dropped { }",
        "  counter would_drop { }",
        "  chain enforce {",
        accepts(),
        f"    {log(LOG_DROP)}counter name dropped drop",
        "  }",
        "  chain audit {",
        accepts(),
        f"    {log(LOG_AUDIT)}counter name would_drop accept",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 5; policy accept;",
        "    ct state established,related accept",
        "    ip saddr @enforce4 jump enforce",
        "    ip6 saddr @enforce6 jump enforce",
        "    ip saddr @audit4 jump audit",
        "    ip6 saddr @audit6 jump audit",
        "  }",
        "}",
    ])
    return body + "\n"


def delete_table(table: str) -> str:
    """Idempotent: the table goes whether or not it was there."""
    return f"add table {FAMILY} {table}\ndelete table {FAMILY} {table}\n"


def teardown(table: str, existing: Any) -> str:
    """What ``on_start: keep`` removes before :func:`base_ruleset`: the chains (their rules
    reference the sets), the client sets and counters; the allow-sets stay. ``existing``
    is ``nft -j list table`` output."""
    kinds: dict[str, list[str]] = {"chain": [], "set": [], "counter": []}
    for item in (existing or {}).get("nftables", []):
        for kind, names in kinds.items():
            obj = item.get(kind)
            if obj is not None and obj.get("table") == table:
                names.append(obj["name"])
    lines = [f"flush chain {FAMILY} {table} {c}" for c in kinds["chain"]]
    lines += [f"delete chain {FAMILY} {table} {c}" for c in kinds["chain"]]
    lines += [f"delete set {FAMILY} {table} {s}" for s in kinds["set"]
              if s not in ALLOW_SETS]
    lines += [f"delete counter {FAMILY} {table} {c}" for c in kinds["counter"]]
    return "\n".join(lines) + "\n" if lines else ""


def _set(table: str, name: str, elems: list[Any]) -> dict[str, Any]:
    return {"family": FAMILY, "table": table, "name": name, "elem": elems}


def allow_elements(table: str, client: str, dsts: list[str], ports: tuple[tuple[str, int], ...],
                   timeout: int) -> list[dict[str, Any]]:
    """``add element`` commands allowing ``client`` to reach ``dsts`` on ``ports`` (empty:
    every port) for ``timeout`` seconds; addresses of the other family are skipped."""
    v6 = ":" in client
    by_set: dict[str, list[Any]] = {}
    for dst in dsts:
        if (":" in dst) != v6:
            continue
        fam = "6" if v6 else "4"
        if not ports:
            by_set.setdefault(f"allow{fam}_any", []).append(
                {"elem": {"val": {"concat": [client, dst]}, "timeout": timeout}})
        for proto, port in ports:
            by_set.setdefault(f"allow{fam}", []).append(
                {"elem": {"val": {"concat": [client, dst, proto, port]}, "timeout": timeout}})
    return [{"add": {"element": _set(table, name, elems)}} for name, elems in by_set.items()]


def client_elements(nets: list[str]) -> list[Any]:
    """Interval-set elements for addresses and networks (``10.0.0.0/24``, ``10.0.0.5``)."""
    out: list[Any] = []
    for n in nets:
        net = ipaddress.ip_network(n, strict=False)
        if net.num_addresses == 1:
            out.append(str(net.network_address))
        else:
            out.append({"prefix": {"addr": str(net.network_address), "len": net.prefixlen}})
    return out


def replace_clients(table: str, sets: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One transaction: every client set flushed and refilled (``sets``: name -> nets)."""
    cmds: list[dict[str, Any]] = []
    for name in CLIENT_SETS:
        cmds.append({"flush": {"set": {"family": FAMILY, "table": table, "name": name}}})
        nets = sets.get(name) or []
        if nets:
            cmds.append({"add": {"element": _set(table, name, client_elements(nets))}})
    return cmds


def delete_elements(table: str, client: str, dsts: list[str],
                    ports: tuple[tuple[str, int], ...]) -> list[dict[str, Any]]:
    """``delete element`` commands undoing :func:`allow_elements` (one per set)."""
    fam = "6" if ":" in client else "4"
    by_set: dict[str, list[Any]] = {}
    for dst in dsts:
        if not ports:
            by_set.setdefault(f"allow{fam}_any", []).append({"concat": [client, dst]})
        for proto, port in ports:
            by_set.setdefault(f"allow{fam}", []).append({"concat": [client, dst, proto, port]})
    return [{"delete": {"element": _set(table, name, elems)}} for name, elems in by_set.items()]


def revoke_elements(table: str, client: str, dsts: list[str],
                    ports: tuple[tuple[str, int], ...]) -> list[dict[str, Any]]:
    """One transaction removing allowances that may have expired in the kernel meanwhile:
    ``add`` first (a no-op when present), so the ``delete`` that follows cannot fail on a
    missing element and abort the batch."""
    return (allow_elements(table, client, dsts, ports, 1)
            + delete_elements(table, client, dsts, ports))
