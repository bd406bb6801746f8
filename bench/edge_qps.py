"""dnsflow edge vs unbound (plain and with dnstap) under dnsperf, same query set, same core.

    python -m bench.edge_qps [--kafka BOOTSTRAP] [--seconds 10] [--names 2000] [--egress]

The edge runs with identity (static map), policy (a tenant DNSPolicy from the policies topic)
and telemetry on: every event is published to Kafka (a private local broker started with
scripts/kafka-local unless --kafka is given) and counted there at the end. Each server is
pinned to the same CPU (taskset), dnsperf to the other; caches are warmed before measuring.
The three servers run side by side and dnsperf asks them in interleaved rounds (order
rotated), so the neighbours' changing load on this shared machine falls on all of them alike;
each figure is the total over its rounds.
The event sinks of both peers (the private Kafka broker for the edge, fstrm_capture for
unbound+dnstap) run on the load CPU, so the server's CPU serves only the server.
Server CPU per answered query comes from /proc/<pid>/stat, also split into user and system
time (``user_us_per_query_*``, ``sys_us_per_query_*``): on loopback a server's sends also pay
the receiver's delivery, so the system share is what no server code can remove.
Cache-miss added latency = edge (forwarding to unbound) minus asking that unbound directly,
for fresh names.
With --egress (root, nftables; bench/edge_egress.py) a fourth server, an edge whose policy
has an egress rule selecting the load's clients, runs in the same rounds (its own topic
prefix); the last line adds its qps, ratio_dnstap_egress, and egress_us_per_query: its CPU
per answered query minus the plain edge's (the cost of programming the allow-sets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from bench import edge_egress
from harness.dnswire import a_query
from harness.peers import (
    FstrmCapture,
    Unbound,
    count_events,
    cpu_seconds,
    cpu_split,
    free_port,
    kafka_or_private,
    stop_process,
    wait_dns,
)
from harness.report import print_summary
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

POLICY = """
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {name: bench, namespace: bench-ns}
spec:
  tenant: bench
  rules:
    - {id: no-ads, match: {suffixes: [ads.example.com, tracker.example.net]}, action: deny}
    - {id: no-doh, match: {names: [dns.google, cloudflare-dns.com]}, action: deny}
    - id: pin
      match: {names: [pinned.bench.test]}
      action: rewrite
      rewrite: {records: [{type: A, value: 192.0.2.1}]}
"""

TENANT_MAP = """
default: {tenant: guests, namespace: guests}
namespaces: {bench-ns: bench, other-ns: other}
clients:
  - {cidr: 127.0.0.0/8, tenant: bench, namespace: bench-ns, pod: dnsperf-0}
"""


# the figures of the last line, in order (bench/RESULTS.md quotes it); ratios with two
# decimals, CPU with one, the rest whole
SUMMARY = ("dnsflow_qps", "unbound_qps", "unbound_dnstap_qps", "ratio", "ratio_dnstap",
           "cpu_us_per_query_dnsflow", "cpu_us_per_query_unbound", "events_in_kafka",
           "edge_answered", "miss_p50_added_us", "miss_p99_added_us",
           "isolation_miss_p50_diff_us", "isolation_hit_p50_diff_us", "isolation_not_nxdomain",
           "user_us_per_query_dnsflow", "sys_us_per_query_dnsflow",
           "user_us_per_query_unbound", "sys_us_per_query_unbound")
SUMMARY_DECIMALS = {"ratio": 2, "ratio_dnstap": 2, "cpu_us_per_query_dnsflow": 1,
                    "cpu_us_per_query_unbound": 1, "ratio_dnstap_egress": 2,
                    "user_us_per_query_dnsflow": 2, "sys_us_per_query_dnsflow": 2,
                    "user_us_per_query_unbound": 2, "sys_us_per_query_unbound": 2,
                    "cpu_us_per_query_egress": 1, "egress_us_per_query": 1,
                    "egress_nft_us_per_query": 2}
# with --egress, after SUMMARY
SUMMARY_EGRESS = ("dnsflow_egress_qps", "ratio_dnstap_egress", "cpu_us_per_query_egress",
                  "egress_us_per_query", "egress_allowances", "egress_programmings",
                  "egress_nft_us_per_query")


def log(msg: str) -> None:
    print(f"[edge_qps] {msg}", file=sys.stderr, flush=True)


def cpus() -> tuple[str, str]:
    """(server cpu, load cpu): different cores when there are two or more."""
    n = os.cpu_count() or 1
    return ("1", "0") if n >= 2 else ("0", "0")


# 4 clients on one thread, 256 queries in flight, 2 s timeout: as fast as the server answers
DNSPERF_FLAGS = ("-c", "4", "-T", "1", "-q", "256", "-t", "2")


def dnsperf(port: int, datafile: Path, seconds: float, load_cpu: str,
            flags: Sequence[str] = DNSPERF_FLAGS) -> dict[str, float]:
    """dnsperf from ``load_cpu`` against 127.0.0.1:``port`` for ``seconds``; every bench
    reads the same figures from its report (``flags``: e.g. ``-Q`` for a capped rate)."""
    cmd = ["taskset", "-c", load_cpu, "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
           str(datafile), "-l", str(seconds), *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout

    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0
    return {"qps": grab(r"Queries per second:\s+([\d.]+)"),
            "runtime": grab(r"Run time \(s\):\s+([\d.]+)"),
            "completed": grab(r"Queries completed:\s+(\d+)"),
            "sent": grab(r"Queries sent:\s+(\d+)"),
            "lost": grab(r"Queries lost:\s+(\d+)")}


class Peer:
    """One server under test: dnsperf runs against it in rounds, interleaved with the others,
    so each sees the same mix of the neighbours' load; figures are totals over its rounds."""

    def __init__(self, name: str, pid: int, port: int, sink_pid: int | None = None) -> None:
        self.name, self.pid, self.port = name, pid, port
        self.sink_pid = sink_pid  # the process receiving its telemetry (Kafka, fstrm_capture)
        self.completed = self.runtime = self.lost = self.sink_cpu = 0.0
        self.user = self.sys = 0.0  # the server's CPU: its own code, the kernel
        self.warm_completed = 0.0
        self.round_qps: list[float] = []

    def warm(self, datafile: Path, load_cpu: str) -> None:
        self.warm_completed += dnsperf(self.port, datafile, 2, load_cpu)["completed"]

    def run(self, datafile: Path, seconds: float, load_cpu: str) -> None:
        u0, k0 = cpu_split(self.pid)
        s0 = cpu_seconds(self.sink_pid) if self.sink_pid else 0.0
        r = dnsperf(self.port, datafile, seconds, load_cpu)
        u1, k1 = cpu_split(self.pid)
        self.user += u1 - u0
        self.sys += k1 - k0
        if self.sink_pid:
            self.sink_cpu += cpu_seconds(self.sink_pid) - s0
        self.completed += r["completed"]
        self.runtime += r["runtime"] or seconds
        self.lost += r["lost"]
        self.round_qps.append(r["qps"])

    @property
    def qps(self) -> float:
        return self.completed / self.runtime if self.runtime else 0.0

    @property
    def cpu(self) -> float:
        """The server's CPU seconds over its rounds."""
        return self.user + self.sys

    @property
    def cpu_us_per_query(self) -> float:
        return self.cpu * 1e6 / self.completed if self.completed else 0.0

    def split_us_per_query(self) -> tuple[float, float]:
        """(user, system) CPU microseconds per answered query."""
        if not self.completed:
            return 0.0, 0.0
        return self.user * 1e6 / self.completed, self.sys * 1e6 / self.completed

    def report(self) -> None:
        rounds = " ".join(f"{q:.0f}" for q in self.round_qps)
        sink = (f", its telemetry sink {self.sink_cpu * 1e6 / self.completed:.1f} us/query"
                if self.sink_pid and self.completed else "")
        log(f"{self.name}: {self.qps:.0f} qps (rounds: {rounds}), {self.completed:.0f} "
            f"answered, lost {self.lost:.0f}, cpu {self.cpu_us_per_query:.1f} us/query "
            "(user %.2f, system %.2f)%s" % (*self.split_us_per_query(), sink))


def rcode_of(port: int, name: str, sock: socket.socket) -> tuple[float, int]:
    """One UDP A query: microseconds until the reply, and its RCODE."""
    q = a_query(name, int.from_bytes(os.urandom(2), "big"))
    t0 = time.perf_counter_ns()
    sock.sendto(q, ("127.0.0.1", port))
    while True:
        data = sock.recv(65535)
        if data[:2] == q[:2]:
            return (time.perf_counter_ns() - t0) / 1000, data[3] & 0x0F


def query(port: int, name: str, sock: socket.socket) -> float:
    """One UDP A query; microseconds until the reply."""
    return rcode_of(port, name, sock)[0]


def miss_latency(edge_port: int, up_port: int, n: int) -> tuple[float, float, int]:
    """p50/p99 of (edge miss - direct upstream) over n fresh names each."""
    direct, via = [], []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in range(n):
            direct.append(query(up_port, f"m{i}.bench.test", s))
            via.append(query(edge_port, f"e{i}.bench.test", s))
    direct.sort()
    via.sort()
    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))]
    return (pct(via, 0.5) - pct(direct, 0.5), pct(via, 0.99) - pct(direct, 0.99), 2 * n)


def isolation_timing(edge_port: int, n: int) -> dict[str, float]:
    """Another tenant's existing names vs names that do not exist, first ask (miss) and
    repeat (hit): p50 difference in microseconds, and whether every answer was NXDOMAIN."""
    out: dict[str, list[float]] = {"hidden_miss": [], "missing_miss": [], "hidden_hit": [],
                                   "missing_hit": []}
    wrong = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for phase in ("miss", "hit"):
            for i in range(n):
                t, rc = rcode_of(edge_port, f"svc{i}.other-ns.svc.cluster.local", s)
                out[f"hidden_{phase}"].append(t)
                wrong += rc != 3
                t, rc = rcode_of(edge_port, f"gone{i}.bench-ns.svc.cluster.local", s)
                out[f"missing_{phase}"].append(t)
                wrong += rc != 3
    p50 = {k: sorted(v)[len(v) // 2] for k, v in out.items()}
    return {"isolation_miss_p50_diff_us": p50["hidden_miss"] - p50["missing_miss"],
            "isolation_hit_p50_diff_us": p50["hidden_hit"] - p50["missing_hit"],
            "isolation_not_nxdomain": wrong, "isolation_queries": 4 * n}


async def publish_policy(bootstrap: str, prefix: str, text: str = POLICY) -> None:
    from dnsflow.bus import open_bus
    from dnsflow.policies import policyset, records

    bus = open_bus(bootstrap, prefix)
    await bus.start()
    try:
        recs = [records.encode(doc, 1, time.time_ns() // 1000, "bench", "bench")
                for doc in policyset.from_text(text, "bench.yaml").values()]
        await bus.send_many(bus.topics.policies, recs)
    finally:
        await bus.stop()


def start_edge(work: Path, bootstrap: str, prefix: str, up_port: int, cpu: str,
               extra: list[str] | None = None, name: str = "edge"
               ) -> tuple[subprocess.Popen, int]:
    port = free_port()
    tmap = work / "tenants.yaml"
    tmap.write_text(TENANT_MAP)
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "dnsflow", "edge", "--kafka", bootstrap,
           "--topic-prefix", prefix, "--home", str(work / f"{name}-home"), "--listen",
           f"127.0.0.1:{port}", "--upstream", f"udp://127.0.0.1:{up_port}", "--tenant-map",
           str(tmap), "--name", f"bench-{name}", "--log-level", "WARNING", *(extra or [])]
    logf = open(work / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT)
    wait_dns(port, 30, proc)
    return proc, port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_qps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", help="use this Kafka instead of starting a private one")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="dnsperf time per server, split over the rounds (default 10)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved dnsperf runs per server (default 5)")
    ap.add_argument("--names", type=int, default=2000, help="distinct names in the query set")
    ap.add_argument("--miss-samples", type=int, default=300)
    ap.add_argument("--egress", action="store_true",
                    help="also an edge with egress rules selecting the load's clients "
                    "(root, nftables): the cost per query of programming the allow-sets")
    add_keep_option(ap)
    args = ap.parse_args(argv)
    if args.egress and edge_egress.usable():
        ap.error(edge_egress.usable())
    server_cpu, load_cpu = cpus()
    work = make_work_dir("bench-edge-qps-")
    names = [f"host{i}.bench.test" for i in range(args.names)]
    local = [f"{n}. 3600 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
             for i, n in enumerate(names)]
    local += [f"m{i}.bench.test. 3600 IN A 10.200.{i // 256}.{i % 256}"
              for i in range(args.miss_samples)]
    local += [f"e{i}.bench.test. 3600 IN A 10.201.{i // 256}.{i % 256}"
              for i in range(args.miss_samples)]
    # another tenant's services: the edge must answer them exactly like missing names
    iso = [f"svc{i}.other-ns.svc.cluster.local. 300 IN A 10.202.{i // 256}.{i % 256}"
           for i in range(args.miss_samples)]
    datafile = work / "queries.txt"
    datafile.write_text("".join(f"{n} A\n" for n in names))
    kafka = None
    procs: list[subprocess.Popen] = []
    result: dict[str, float] = {}
    table = ""  # the egress edge's nft table (removed at the end)
    try:
        bootstrap, kafka = kafka_or_private(args.kafka, work, load_cpu, log)
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        asyncio.run(publish_policy(bootstrap, prefix))
        eprefix = f"bench{uuid.uuid4().hex[:8]}e."  # its own events: events_in_kafka stays
        if args.egress:
            asyncio.run(publish_policy(bootstrap, eprefix, edge_egress.policy(POLICY)))

        # upstream for the edge's misses (not on the measured core's critical path once warm)
        upstream = Unbound(local + iso, zones=("bench.test", "cluster.local"),
                           workdir=work / "ub-upstream", cpu=int(load_cpu)).start()
        cap = FstrmCapture(work, cpu=int(load_cpu)).start()
        # all three servers on the same CPU; only the one dnsperf is asking does any work
        ub = Unbound(local, workdir=work / "ub-plain", cpu=int(server_cpu)).start()
        ubt = Unbound(local, workdir=work / "ub-dnstap", cpu=int(server_cpu),
                      dnstap_socket=cap.socket).start()
        try:
            edge, edge_port = start_edge(work, bootstrap, prefix, upstream.port, server_cpu)
            procs.append(edge)
            time.sleep(1.0)  # policy subscription catches up
            peers = [Peer("dnsflow", edge.pid, edge_port, kafka.pid() if kafka else None),
                     Peer("unbound", ub.pid, ub.port),
                     Peer("unbound+dnstap", ubt.pid, ubt.port,
                          cap.proc.pid if cap.proc else None)]
            if args.egress:
                ecfg, table = edge_egress.config(work)
                eedge, eport = start_edge(work, bootstrap, eprefix, upstream.port, server_cpu,
                                          ["--config", str(ecfg), "--log-level", "INFO"],
                                          name="edge-egress")
                procs.append(eedge)
                time.sleep(1.0)
                peers.append(Peer("dnsflow+egress", eedge.pid, eport,
                                  kafka.pid() if kafka else None))
            for peer in peers:
                peer.warm(datafile, load_cpu)
            for rnd in range(args.rounds):  # rotate the order so no peer is always first
                n = len(peers)
                for peer in peers[rnd % n:] + peers[:rnd % n]:
                    peer.run(datafile, args.seconds / args.rounds, load_cpu)
            for peer in peers:
                peer.report()
            dnsflow, plain, tapped = peers[:3]
            if args.egress:
                egress = peers[3]
                result["dnsflow_egress_qps"] = egress.qps
                result["cpu_us_per_query_egress"] = egress.cpu_us_per_query
                result["egress_us_per_query"] = (egress.cpu_us_per_query
                                                 - dnsflow.cpu_us_per_query)
                result["ratio_dnstap_egress"] = egress.qps / tapped.qps if tapped.qps else 0.0
                result["egress_allowances"] = edge_egress.allowances(table)
                log(f"egress: {result['egress_allowances']} allowances in table inet {table}")
                stop_process(eedge, 60)
                # the time nft took (allow-sets programmed before answers), per answered query
                n_prog, nft_us = edge_egress.nft_cost(work / "edge-egress.log")
                result["egress_programmings"] = n_prog
                answered_e = egress.completed + egress.warm_completed
                result["egress_nft_us_per_query"] = nft_us / answered_e if answered_e else 0.0
                log(f"egress: {n_prog} allowances programmed or refreshed, {nft_us:.0f} us in nft")
            result["dnsflow_qps"] = dnsflow.qps
            result["cpu_us_per_query_dnsflow"] = dnsflow.cpu_us_per_query
            result["unbound_qps"] = plain.qps
            result["cpu_us_per_query_unbound"] = plain.cpu_us_per_query
            (result["user_us_per_query_dnsflow"],
             result["sys_us_per_query_dnsflow"]) = dnsflow.split_us_per_query()
            (result["user_us_per_query_unbound"],
             result["sys_us_per_query_unbound"]) = plain.split_us_per_query()
            result["unbound_dnstap_qps"] = tapped.qps
            answered = dnsflow.completed + dnsflow.warm_completed
            p50, p99, _ = miss_latency(edge_port, upstream.port, args.miss_samples)
            answered += args.miss_samples + 1  # + the readiness probe
            result["miss_p50_added_us"] = p50
            result["miss_p99_added_us"] = p99
            iso_res = isolation_timing(edge_port, args.miss_samples)
            answered += iso_res.pop("isolation_queries")
            result.update(iso_res)
            log(f"isolation: {iso_res}")
            log("stopping the edge (graceful: flushes every event)")
            stop_process(edge, 120)
        finally:
            ubt.stop()
            ub.stop()
            cap.stop()
            upstream.stop()
        log(f"dnstap capture: {cap.size()} bytes")

        events = asyncio.run(count_events(bootstrap, prefix + "events"))
        result["events_in_kafka"] = events
        result["edge_answered"] = answered
        log(f"events in Kafka: {events} for {answered:.0f} answered queries")
    finally:
        for p in procs:
            stop_process(p)
        if table:
            edge_egress.drop_table(table)
        if kafka is not None:
            kafka.stop()
        finish_work_dir(work, args.keep, log)
    result["ratio"] = (result["dnsflow_qps"] / result["unbound_qps"]
                       if result.get("unbound_qps") else 0.0)
    result["ratio_dnstap"] = (result["dnsflow_qps"] / result["unbound_dnstap_qps"]
                              if result.get("unbound_dnstap_qps") else 0.0)
    keys = SUMMARY + (SUMMARY_EGRESS if args.egress else ())
    print_summary("edge_qps", {key: result[key] for key in keys}, SUMMARY_DECIMALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
