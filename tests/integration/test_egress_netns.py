"""Egress rules enforced on a node (#17), in network namespaces this test creates:

    client A (10.200.1.2, acme/shop) ──┐
                                       node (the edge on 10.200.1.1 / 10.200.2.1,
    client B (10.200.2.2, acme/other) ─┘  nftables table inet dnsflow on forward) ── server
                                                            (10.200.3.2 DNS, .10-.13 :443)

Shop's policy lets its clients reach api.allowed.test and cdn.allowed.test (a CNAME to
edge.cdn.test) on TCP 443; other's policy only only.other.test. A resolves and connects at
once (succeeds), connects to an address it never resolved (dropped), to a resolved address on
another port (dropped), again after the TTL and the grace (dropped); B connects to what A may
reach (dropped). Asking the same name again and again (answers from the edge's fast path)
and connecting at once after each answer never fails, across TTLs and allowance expiries.
In audit mode nothing is dropped and every attempt is recorded. Removal:
with the edge following a policy directory, a connection that succeeded is dropped as soon as
the policy loses its rule, and again as soon as the tenant map gives the client's address to
another namespace; an address leaving the map leaves the client sets. Only
addresses inside these namespaces are used; every namespace and process is removed by name
and PID at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dnsflow.policies.api import PolicyStore, policy_records
from harness.peers import stop_process
from tests.integration.test_edge_nodelocal import sh

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TTL = 2
GRACE = 1

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None,
    reason="needs root, ip and nft (Debian iproute2, nftables)")

SERVER = """
import asyncio, sys
from harness.fake_upstream import FakeUpstream
ZONE = [
    "api.allowed.test. %(ttl)d IN A 10.200.3.10",
    "cdn.allowed.test. %(ttl)d IN CNAME edge.cdn.test.",
    "edge.cdn.test. %(ttl)d IN A 10.200.3.11",
    "only.other.test. %(ttl)d IN A 10.200.3.13",
    "long.allowed.test. 300 IN A 10.200.3.14",
    "stay.allowed.test. 300 IN A 10.200.3.15",
]
async def accept(reader, writer):
    writer.close()
async def main():
    up = FakeUpstream(ZONE, soa_zone="test", host="10.200.3.2")
    await up.start()
    for port in (443, 8080):
        await asyncio.start_server(accept, "0.0.0.0", port)
    print(up.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""".replace("%(ttl)d", str(TTL))

# resolve NAME through the edge, then connect to each address at once (or to --to addresses)
PROBE = """
import json, socket, sys, time
import dns.message, dns.query, dns.rdatatype
server, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"ips": [], "connect": {}}
targets = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
if name != "-":
    r = dns.query.udp(dns.message.make_query(name, "A"), server, timeout=3)
    out["rcode"] = r.rcode()
    out["ips"] = [rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A
                  for rd in rrset]
    targets = targets or out["ips"]
for ip in targets:
    t0 = time.perf_counter()
    try:
        socket.create_connection((ip, port), timeout=1.0).close()
        out["connect"][ip] = "ok"
    except OSError as exc:
        out["connect"][ip] = type(exc).__name__
    out.setdefault("ms", {})[ip] = round((time.perf_counter() - t0) * 1000, 1)
print(json.dumps(out))
"""

# resolve NAME and connect to its addresses at once, again and again for SECONDS (one
# process: the same query each time, so the edge answers repeats from its UDP fast path)
PROBE_LOOP = """
import json, socket, sys, time
import dns.message, dns.query, dns.rdatatype
server, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
q = dns.message.make_query(name, "A")
out = {"rounds": 0, "failed": []}
end = time.monotonic() + seconds
while time.monotonic() < end:
    r = dns.query.udp(q, server, timeout=3)
    ips = [rd.address for rrset in r.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]
    ttl = min((rrset.ttl for rrset in r.answer), default=-1)
    for ip in ips or ["none"]:
        try:
            socket.create_connection((ip, 443), timeout=1.0).close()
        except OSError as exc:
            out["failed"].append([round(end - time.monotonic(), 2), ip, ttl, type(exc).__name__])
    out["rounds"] += 1
    time.sleep(0.02)
print(json.dumps(out))
"""

POLICIES = """
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: egress, namespace: shop}
spec:
  tenant: acme
  egress:
    - id: allowed
      toFQDNs: [{matchName: api.allowed.test}, {matchPattern: "cdn.*.test"},
                {matchName: stay.allowed.test}]
      ports: [{port: 443}]
      mode: MODE
    - id: long
      toFQDNs: [{matchName: long.allowed.test}]
      ports: [{port: 443}]
      mode: MODE
---
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: egress, namespace: other}
spec:
  tenant: acme
  egress:
    - id: only
      toFQDNs: [{matchName: only.other.test}]
      ports: [{port: 443}]
      mode: MODE
"""


def snapshot(mode: str) -> bytes:
    store = PolicyStore()
    store.set_namespace_tenants({"shop": "acme", "other": "acme"})
    for k, v in policy_records(POLICIES.replace("MODE", mode)):
        store.apply_record(k, v)
    return store.snapshot()


@pytest.fixture
def lab(tmp_path: Path):
    tag = uuid.uuid4().hex[:6]
    names = {k: f"dfeg-{k}-{tag}" for k in ("a", "b", "node", "srv")}
    procs: list[subprocess.Popen] = []
    made: list[str] = []
    try:
        probe = subprocess.run(["ip", "netns", "add", names["node"]], capture_output=True,
                               text=True, timeout=10)
        if probe.returncode != 0:
            pytest.skip(f"ip netns add is not permitted here: {probe.stderr.strip()}")
        made.append(names["node"])
        for k in ("a", "b", "srv"):
            sh("ip", "netns", "add", names[k])
            made.append(names[k])
        node = names["node"]
        for k, net, extra in (("a", "10.200.1", []), ("b", "10.200.2", []),
                              ("srv", "10.200.3", ["10", "11", "12", "13", "14", "15"])):
            ns = names[k]
            sh("ip", "-n", node, "link", "add", f"v-{k}", "type", "veth", "peer", "name",
               "eth0", "netns", ns)
            sh("ip", "-n", node, "addr", "add", f"{net}.1/24", "dev", f"v-{k}")
            sh("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", "eth0")
            for host in extra:
                sh("ip", "-n", ns, "addr", "add", f"{net}.{host}/24", "dev", "eth0")
            for n, dev in ((node, f"v-{k}"), (ns, "eth0"), (ns, "lo")):
                sh("ip", "-n", n, "link", "set", dev, "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{net}.1")
        sh("ip", "-n", node, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        srv = subprocess.Popen(["ip", "netns", "exec", names["srv"], PY, "-c", SERVER],
                               stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        procs.append(srv)
        assert srv.stdout is not None
        dns_port = int(srv.stdout.readline().strip())
        (tmp_path / "tenants.yaml").write_text(
            "clients:\n  - {cidr: 10.200.1.0/24, tenant: acme, namespace: shop}\n"
            "  - {cidr: 10.200.2.0/24, tenant: acme, namespace: other}\n")
        yield {"names": names, "procs": procs, "tmp": tmp_path, "env": env,
               "upstream": f"udp://10.200.3.2:{dns_port}"}
    finally:
        for p in reversed(procs):
            stop_process(p, 10)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def start_edge(lab: dict, mode: str, on_start: str = "flush") -> subprocess.Popen:
    tmp: Path = lab["tmp"]
    home = tmp / f"home-{mode}"
    home.mkdir(exist_ok=True)
    (home / "edge-policy.snapshot").write_bytes(snapshot(mode))
    events = tmp / f"egress-{mode}.jsonl"
    (tmp / f"edge-{mode}.yaml").write_text(json.dumps({"edge": {
        "listen": "10.200.1.1:53", "extra_addresses": ["10.200.2.1"],
        "upstreams": [lab["upstream"]], "tenant_map": str(tmp / "tenants.yaml"),
        "name": "node-1", "events": False,
        "egress": {"enabled": True, "grace": GRACE, "min_ttl": 0, "on_start": on_start,
                   "events_file": str(events)}}}))
    log = (tmp / f"edge-{mode}.log").open("w")
    p = subprocess.Popen(["ip", "netns", "exec", lab["names"]["node"], PY, "-m", "dnsflow",
                          "edge", "--config", str(tmp / f"edge-{mode}.yaml"), "--home",
                          str(home)], stdout=subprocess.PIPE, stderr=log, text=True,
                         env=lab["env"], cwd=ROOT)
    lab["procs"].append(p)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert "serving" in line, (tmp / f"edge-{mode}.log").read_text()[-2000:]
    return p


def probe(lab: dict, who: str, name: str, port: int = 443, to: str = "") -> dict:
    server = "10.200.1.1" if who == "a" else "10.200.2.1"
    out = subprocess.run(["ip", "netns", "exec", lab["names"][who], PY, "-c", PROBE, server,
                          name, str(port), to], capture_output=True, text=True, timeout=30,
                         env=lab["env"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def events(lab: dict, mode: str) -> list[dict]:
    path: Path = lab["tmp"] / f"egress-{mode}.jsonl"
    deadline = time.monotonic() + 3  # written every 0.2 s
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if path.exists():
            break
    time.sleep(0.5)
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def counter(lab: dict, name: str) -> int:
    out = sh("ip", "netns", "exec", lab["names"]["node"], "nft", "-j", "list", "counter",
             "inet", "dnsflow", name)
    return next(i["counter"]["packets"] for i in json.loads(out.stdout)["nftables"]
                if "counter" in i)


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.wait(15)


def test_enforce_allows_only_what_was_resolved(lab):
    edge = start_edge(lab, "enforce")
    first = probe(lab, "a", "api.allowed.test")
    assert first["ips"] == ["10.200.3.10"]
    assert first["connect"] == {"10.200.3.10": "ok"}, first  # connects at once: allowed
    chain = probe(lab, "a", "cdn.allowed.test")  # through the CNAME to edge.cdn.test
    assert chain["connect"] == {"10.200.3.11": "ok"}, chain
    never = probe(lab, "a", "-", to="10.200.3.12")
    assert never["connect"] == {"10.200.3.12": "TimeoutError"}, never
    other_port = probe(lab, "a", "-", port=8080, to="10.200.3.10")
    assert other_port["connect"] == {"10.200.3.10": "TimeoutError"}, other_port
    b = probe(lab, "b", "api.allowed.test")  # B may resolve it, not connect to it
    assert b["ips"] == ["10.200.3.10"] and b["connect"] == {"10.200.3.10": "TimeoutError"}
    b_own = probe(lab, "b", "only.other.test")
    assert b_own["connect"] == {"10.200.3.13": "ok"}, b_own
    time.sleep(TTL + GRACE + 1.5)  # the allowance for api.allowed.test expired
    late = probe(lab, "a", "-", to="10.200.3.10")
    assert late["connect"] == {"10.200.3.10": "TimeoutError"}, late
    assert counter(lab, "dropped") >= 4
    assert counter(lab, "would_drop") == 0
    got = events(lab, "enforce")
    allows = {(e["client_ip"], e["dst_ip"], e["qname"]) for e in got if e["kind"] == "allow"}
    assert ("10.200.1.2", "10.200.3.10", "api.allowed.test") in allows
    assert ("10.200.1.2", "10.200.3.11", "cdn.allowed.test") in allows
    assert not any(e["client_ip"] == "10.200.2.2" and e["dst_ip"] == "10.200.3.10"
                   for e in got if e["kind"] == "allow")
    allow = next(e for e in got if e["kind"] == "allow")
    assert allow["rule"] == "shop/egress#allowed" and allow["tenant"] == "acme"
    assert allow["namespace"] == "shop" and allow["port"] == 443 and allow["protocol"] == "tcp"
    drops = {(e["client_ip"], e["dst_ip"], e["port"]) for e in got if e["kind"] == "drop"}
    assert {("10.200.1.2", "10.200.3.12", 443), ("10.200.1.2", "10.200.3.10", 8080),
            ("10.200.2.2", "10.200.3.10", 443)} <= drops, got
    stop(edge)


def test_repeated_answers_connect_at_once_across_expiry(lab):
    """A selected client asking the same name again and again gets most answers from the
    edge's UDP fast path, which releases them without the egress agent while the allowance
    is not due: every connection right after an answer succeeds, through several TTLs
    (2 s) and allowance expiries (TTL + grace 1 s), never dropped."""
    edge = start_edge(lab, "enforce")
    out = subprocess.run(["ip", "netns", "exec", lab["names"]["a"], PY, "-c", PROBE_LOOP,
                          "10.200.1.1", "api.allowed.test", str(3 * (TTL + GRACE))],
                         capture_output=True, text=True, timeout=60, env=lab["env"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["rounds"] >= 20 and got["failed"] == [], got
    assert counter(lab, "dropped") == 0
    stop(edge)


def test_audit_drops_nothing_and_records_everything(lab):
    edge = start_edge(lab, "audit")
    first = probe(lab, "a", "api.allowed.test")
    assert first["connect"] == {"10.200.3.10": "ok"}
    assert probe(lab, "a", "-", to="10.200.3.12")["connect"] == {"10.200.3.12": "ok"}
    assert probe(lab, "b", "api.allowed.test")["connect"] == {"10.200.3.10": "ok"}
    assert counter(lab, "dropped") == 0
    assert counter(lab, "would_drop") >= 2
    got = events(lab, "audit")
    kinds = {(e["kind"], e["client_ip"], e["dst_ip"]) for e in got}
    assert ("allow", "10.200.1.2", "10.200.3.10") in kinds
    assert ("would_drop", "10.200.1.2", "10.200.3.12") in kinds
    assert ("would_drop", "10.200.2.2", "10.200.3.10") in kinds
    assert all(e["mode"] == "audit" for e in got)
    assert not any(e["kind"] == "drop" for e in got)
    stop(edge)


# The policy service (a YAML directory, polled) and the edge in one process around the
# in-process bus, as `dnsflow up` composes them: a policy edit reaches the edge through the
# same subscription a Kafka record would.
NODE = """
import asyncio, signal, sys
from dnsflow.runner import Pipeline
from dnsflow.settings import load_settings
async def main():
    settings = load_settings(sys.argv[1], {"home": sys.argv[2]})
    async with Pipeline(settings, components=("policies", "edge")):
        print("serving", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
asyncio.run(main())
"""


def start_node(lab: dict) -> subprocess.Popen:
    """The edge (enforce) following a policy directory the test edits."""
    tmp: Path = lab["tmp"]
    (tmp / "policies").mkdir()
    (tmp / "policies" / "egress.yaml").write_text(POLICIES.replace("MODE", "enforce"))
    (tmp / "node.yaml").write_text(json.dumps({
        "policies": {"dir": str(tmp / "policies"), "poll_interval_s": 0.2},
        "edge": {"listen": "10.200.1.1:53", "extra_addresses": ["10.200.2.1"],
                 "upstreams": [lab["upstream"]], "tenant_map": str(tmp / "tenants.yaml"),
                 "name": "node-1", "events": False,
                 "egress": {"enabled": True, "grace": GRACE, "min_ttl": 0,
                            "sync_interval": 60}}}))
    log = (tmp / "node.log").open("w")
    p = subprocess.Popen(["ip", "netns", "exec", lab["names"]["node"], PY, "-c", NODE,
                          str(tmp / "node.yaml"), str(tmp / "home-node")],
                         stdout=subprocess.PIPE, stderr=log, text=True, env=lab["env"],
                         cwd=ROOT)
    lab["procs"].append(p)
    assert p.stdout is not None
    assert "serving" in p.stdout.readline(), (tmp / "node.log").read_text()[-2000:]
    return p


def kernel_set(lab: dict, name: str) -> list:
    """The elements of set ``name`` of table inet dnsflow as the kernel holds them."""
    out = sh("ip", "netns", "exec", lab["names"]["node"], "nft", "-j", "list", "set",
             "inet", "dnsflow", name)
    items = next(i["set"] for i in json.loads(out.stdout)["nftables"] if "set" in i)
    elems = []
    for e in items.get("elem", []):
        inner = e.get("elem", e) if isinstance(e, dict) else e
        val = inner.get("val", inner) if isinstance(inner, dict) else inner
        elems.append(val["concat"] if isinstance(val, dict) and "concat" in val else val)
    return elems


def wait_gone(lab: dict, element: list, timeout: float = 10.0) -> float:
    """Seconds until ``element`` left allow4 (AssertionError after ``timeout``)."""
    t0 = time.monotonic()
    while element in kernel_set(lab, "allow4"):
        assert time.monotonic() - t0 < timeout, f"{element} still allowed"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_policy_and_identity_changes_revoke_at_once(lab):
    """Allowances of 300 s: each one dropped within seconds was revoked, not expired."""
    start_node(lab)
    t0 = time.monotonic()
    for name, ip in (("long.allowed.test", "10.200.3.14"), ("stay.allowed.test", "10.200.3.15")):
        got = probe(lab, "a", name)
        assert got["connect"] == {ip: "ok"}, got
    long_el = ["10.200.1.2", "10.200.3.14", "tcp", 443]
    stay_el = ["10.200.1.2", "10.200.3.15", "tcp", 443]
    assert long_el in kernel_set(lab, "allow4") and stay_el in kernel_set(lab, "allow4")
    # the policy loses the rule `long` (the client stays enforced by `allowed`)
    pol = lab["tmp"] / "policies" / "egress.yaml"
    text = pol.read_text()
    cut = text.index("    - id: long")
    pol.write_text(text[:cut] + text[text.index("---", cut):])
    wait_gone(lab, long_el)
    dropped = probe(lab, "a", "-", to="10.200.3.14")
    assert dropped["connect"] == {"10.200.3.14": "TimeoutError"}, dropped
    kept = probe(lab, "a", "-", to="10.200.3.15")  # what the change did not touch stays
    assert kept["connect"] == {"10.200.3.15": "ok"}, kept
    # the address leaves shop: the map gives it to namespace `other` (a new workload took
    # it), whose rule does not allow stay.allowed.test
    tmap = lab["tmp"] / "tenants.yaml"
    tmap.write_text(tmap.read_text().replace("10.200.1.0/24, tenant: acme, namespace: shop",
                                             "10.200.1.0/24, tenant: acme, namespace: other"))
    wait_gone(lab, stay_el)
    dropped = probe(lab, "a", "-", to="10.200.3.15")
    assert dropped["connect"] == {"10.200.3.15": "TimeoutError"}, dropped
    assert time.monotonic() - t0 < 300 - 30
    assert {"prefix": {"addr": "10.200.1.0", "len": 24}} in kernel_set(lab, "enforce4")
    # the address leaves the map: no allowance and no client-set membership remain
    tmap.write_text("clients:\n  - {cidr: 10.200.2.0/24, tenant: acme, namespace: other}\n")
    deadline = time.monotonic() + 10
    while {"prefix": {"addr": "10.200.1.0", "len": 24}} in kernel_set(lab, "enforce4"):
        assert time.monotonic() < deadline, kernel_set(lab, "enforce4")
        time.sleep(0.1)
    assert not [e for e in kernel_set(lab, "allow4") if e[0] == "10.200.1.2"]
