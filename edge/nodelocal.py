"""Node-local set-up, as NodeLocal DNSCache does it: a dummy interface holding the local
addresses (169.254.20.10 and optionally the kube-dns ClusterIP) and NOTRACK rules so DNS to
and from them skips conntrack (no conntrack-table races or exhaustion, no kube-proxy DNAT of
the ClusterIP on this node).

``dnsflow edge --setup-interface dnsflow0 --local-ip 169.254.20.10[,CLUSTER_IP] --setup-only``
runs it; the Helm chart runs it in an init container that has CAP_NET_ADMIN and nothing else,
so the edge itself never holds NET_ADMIN. Idempotent: re-running it (a restarted pod) replaces
the addresses' rules and keeps the interface. Uses ``ip`` (iproute2) and ``nft`` (nftables).

A kernel without the dummy driver (some minimal VM kernels) gets a bridge without ports
instead: its addresses are local addresses all the same.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess

from dnsflow.settings import ConfigError

log = logging.getLogger("dnsflow.edge.nodelocal")

TABLE = "dnsflow_nodelocal"


def parse_local_ips(text: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_address(part))
        except ValueError:
            raise ConfigError(f"--local-ip: {part!r} is not an IP address") from None
    if not out:
        raise ConfigError("--local-ip: give at least one address (e.g. 169.254.20.10)")
    return out


def _run(*cmd: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise ConfigError(f"node-local set-up needs `{cmd[0]}` "
                          f"({'iproute2' if cmd[0] == 'ip' else 'nftables'}) on PATH")
    out = subprocess.run(list(cmd), input=input, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise ConfigError(f"node-local set-up: `{' '.join(cmd)}` failed: "
                          f"{out.stderr.strip() or out.stdout.strip()}")
    return out


def nft_rules(ips: list, port: int = 53) -> str:
    """The ruleset: DNS to and from the local addresses is not tracked (both directions, both
    transports, packets from other hosts/pods and from this node's own processes)."""
    v4 = ", ".join(str(a) for a in ips if a.version == 4)
    v6 = ", ".join(str(a) for a in ips if a.version == 6)
    pre, out = [], []
    for fam, addrs in (("ip", v4), ("ip6", v6)):
        if not addrs:
            continue
        for proto in ("udp", "tcp"):
            pre.append(f"{fam} daddr {{ {addrs} }} {proto} dport {port} notrack")
            out.append(f"{fam} daddr {{ {addrs} }} {proto} dport {port} notrack")
            out.append(f"{fam} saddr {{ {addrs} }} {proto} sport {port} notrack")
    body = "\n".join(
        [f"table inet {TABLE} {{}}", f"flush table inet {TABLE}", f"table inet {TABLE} {{",
         "  chain prerouting {", "    type filter hook prerouting priority raw; policy accept;",
         *(f"    {r}" for r in pre), "  }",
         "  chain output {", "    type filter hook output priority raw; policy accept;",
         *(f"    {r}" for r in out), "  }", "}"])
    return body + "\n"


def setup(interface: str, ips: list, port: int = 53, notrack: bool = True) -> dict:
    """Create ``interface`` with ``ips`` (/32, /128) and install the NOTRACK rules."""
    kind = "dummy"
    exists = _run("ip", "link", "show", "dev", interface, check=False).returncode == 0
    if not exists:
        made = _run("ip", "link", "add", interface, "type", "dummy", check=False)
        if made.returncode != 0:
            if "Unknown device type" not in made.stderr:
                raise ConfigError(f"node-local set-up: cannot create {interface}: "
                                  f"{made.stderr.strip()}")
            log.warning("this kernel has no dummy interfaces: %s is a bridge without ports",
                        interface)
            kind = "bridge"
            _run("ip", "link", "add", interface, "type", "bridge")
    for a in ips:
        _run("ip", "addr", "replace", f"{a}/{a.max_prefixlen}", "dev", interface)
    _run("ip", "link", "set", interface, "up")
    if notrack:
        _run("nft", "-f", "-", input=nft_rules(ips, port))
    done = {"interface": interface, "kind": kind if not exists else "existing",
            "addresses": [str(a) for a in ips], "notrack": notrack}
    log.info("node-local set-up done: %s", done)
    return done
