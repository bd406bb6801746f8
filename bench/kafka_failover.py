"""A 3-broker Kafka cluster loses the leader of the events partitions, twice, under load:
every query answered, every event in ClickHouse exactly once, no policy update lost.

    python -m bench.kafka_failover [--qps 2000] [--seconds 60] [--kills 2] [--no-streams]

Starts its own cluster (``KAFKA_BROKERS=3 scripts/kafka-local``: three combined
broker+controller nodes on loopback), unbound as the edge's upstream (every name under
``fo.test`` answers), ``dnsflow edge`` and ``dnsflow sink`` (into chDB), both with
``--kafka-replication 3 --kafka-min-insync 2``. dnsperf sends ``qps x seconds`` queries, each
for a name of its own (the event has no id: a unique name makes every event identifiable).
During the load the node leading most partitions of the events topic is SIGKILLed, a new
policy version is published with ``dnsflow policy apply`` while it is down, and the node is
restarted; once its replicas are back in sync, the same again. Then it checks:

* every query answered (dnsperf: lost 0),
* the events topic holds one record per answered query, and ``dns_events`` one row per
  record: ``duplicates`` = rows - distinct (edge, ts, client_ip, qname, qtype) plus records
  beyond the answered count, ``lost`` = queries dnsperf lost + answered queries with no row,
* the edge enforces the last policy version published (a rewrite whose address names the
  version) and its last events carry that version,
* the faust worker (``dnsflow streams``, running throughout; ``--no-streams`` leaves it out)
  published one 10 s telemetry window per window of events, each counting exactly the events
  stored for it (compared in ClickHouse; logged, and the exit code is 1 if any differs).

The edge runs with ``kafka_timeout: 30`` (``--kafka-timeout``): a leader's death is noticed by
the controller after ``broker.session.timeout.ms`` (9 s), and a record librdkafka gives up on
before the new leader is elected makes it reset the idempotent producer's epoch, after which
batches the new leader had written but not yet acknowledged are sent again: duplicates (the
edge's default of 10 s did that in one run in two, docs/kafka.md).

Every wait is bounded; the bench stops only what it started. Prints last
``bench kafka_failover: brokers=3 answered=.. events_in_kafka=.. rows_in_clickhouse=..
lost=.. duplicates=.. leader_kills=..``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from dnslib import DNSRecord

from bench.edge_qps import dnsperf
from harness.dnswire import a_query
from harness.peers import (
    KafkaCluster,
    Unbound,
    count_events,
    free_port,
    partition_leaders,
    stop_process,
)
from harness.report import print_summary
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

TENANT_MAP = """
clients:
  - {cidr: 127.0.0.0/8, tenant: bench, namespace: bench-ns, pod: dnsperf-0}
"""
PINNED = "pinned.fo.test"
SUMMARY = ("brokers", "answered", "events_in_kafka", "rows_in_clickhouse", "lost",
           "duplicates", "leader_kills")


def log(msg: str) -> None:
    print(f"[kafka_failover] {msg}", file=sys.stderr, flush=True)


def policy(version_tag: int) -> str:
    """The bench tenant's policy: ``pinned.fo.test`` rewritten to 192.0.2.<version_tag>."""
    return f"""apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {{name: failover, namespace: bench-ns}}
spec:
  tenant: bench
  rules:
    - id: pin
      match: {{names: [{PINNED}]}}
      action: rewrite
      rewrite: {{records: [{{type: A, value: 192.0.2.{version_tag}}}]}}
"""


def metric(port: int, name: str, labels: str = "") -> float | None:
    """Sum of ``name``'s samples whose labels contain ``labels`` (None: not served)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    total, seen = 0.0, False
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text.decode(), re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
            seen = True
    return total if seen else None


def ask(port: int, name: str, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(a_query(name, 0x4242), ("127.0.0.1", port))
            return s.recv(65535)
        except OSError:
            return None


class Checks:
    """Queries the bench sends itself (readiness, policy): counted into ``answered``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0

    def wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the edge exited with {proc.returncode}")
            if ask(self.port, "ready.fo.test", 3.0) is not None:
                self.answered += 1
                return
        raise RuntimeError(f"the edge did not answer within {timeout:g}s")

    def pinned(self) -> str | None:
        """The address the edge answers for the pinned name (None: no answer)."""
        reply = ask(self.port, PINNED, 3.0)
        if reply is None:
            return None
        self.answered += 1
        try:
            rrs = DNSRecord.parse(reply).rr
        except Exception:
            return ""
        return str(rrs[0].rdata) if rrs else ""


def apply_policy(work: Path, common: list[str], tag: int) -> str:
    path = work / f"policy-{tag}.yaml"
    path.write_text(policy(tag))
    out = subprocess.run([sys.executable, "-m", "dnsflow", "policy", "apply", *common,
                          "--actor", "bench", str(path)],
                         capture_output=True, text=True, timeout=90)
    if out.returncode != 0:
        raise RuntimeError(f"dnsflow policy apply (tag {tag}) failed: {out.stderr.strip()}")
    return out.stdout.strip()


def leader_to_kill(bootstrap: str, topic: str) -> tuple[int, dict[int, tuple[int, list[int]]]]:
    leaders = asyncio.run(partition_leaders(bootstrap, topic))
    counts = collections.Counter(lead for lead, _ in leaders.values() if lead >= 0)
    return counts.most_common(1)[0][0], leaders


def wait_in_sync(bootstrap: str, topics: list[str], brokers: int, timeout: float) -> float:
    """Seconds until every partition of ``topics`` has all ``brokers`` replicas in sync."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            ok = all(len(isr) == brokers and lead >= 0
                     for t in topics
                     for lead, isr in asyncio.run(partition_leaders(bootstrap, t)).values())
        except Exception:  # a metadata request during an election
            ok = False
        if ok:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"replicas of {topics} not back in sync within {timeout:g}s")


def query_chdb(dsn: str, sql: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "dnsflow", "query", "--clickhouse", dsn,
                          "--format", "json", sql], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"dnsflow query failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


WINDOW_S = 10


def check_windows(dsn: str) -> int:
    """Compare the streams' 10 s telemetry windows with the events stored, window by window;
    returns the number of windows that differ (or are published more than once)."""
    us = WINDOW_S * 1_000_000
    got = query_chdb(dsn, f"""
        SELECT w, tel, ev, copies FROM (
            SELECT toInt64(JSONExtractUInt(data, 'window_start')) AS w,
                   sum(JSONExtractUInt(data, 'queries')) AS tel, count() AS copies,
                   sum(JSONExtractUInt(data, 'late_events')) AS late
            FROM dnsflow.telemetry WHERE window_s = {WINDOW_S} GROUP BY w) AS t
        FULL OUTER JOIN (
            SELECT toInt64(intDiv(toUnixTimestamp64Micro(ts), {us}) * {us}) AS w,
                   count() AS ev
            FROM dnsflow.dns_events GROUP BY w) AS e USING (w)
        ORDER BY w""")
    bad = [r for r in got if int(r["tel"]) != int(r["ev"]) or int(r["copies"]) > 1]
    log(f"streams: {len(got)} windows of {WINDOW_S}s, {len(bad)} differ from the stored "
        f"events: {bad[:5]}")
    return len(bad)


def run(args: argparse.Namespace, work: Path) -> dict[str, float]:
    n = int(args.qps * args.seconds)
    datafile = work / "queries.txt"
    datafile.write_text("".join(f"q{i}.fo.test A\n" for i in range(n)))
    cluster = KafkaCluster(work / "kafka", brokers=3)
    edge = sink = streams = None
    upstream = None
    try:
        log("starting a 3-node KRaft cluster (scripts/kafka-local, KAFKA_BROKERS=3)")
        t = time.monotonic()
        bootstrap = cluster.start()
        log(f"cluster up in {time.monotonic() - t:.0f}s: {bootstrap}")
        prefix = f"failover{uuid.uuid4().hex[:8]}."
        events = prefix + "events"
        repl = ["--kafka-replication", "3", "--kafka-min-insync", "2"]
        common = ["--kafka", bootstrap, "--topic-prefix", prefix, *repl]
        # `dnsflow policy` takes no replication flags: the edge has created every topic
        pcommon = ["--kafka", bootstrap, "--topic-prefix", prefix]
        upstream = Unbound([], zones=(), workdir=work / "ub", extra=[
            'local-zone: "fo.test." redirect', 'local-data: "fo.test. 60 IN A 10.9.9.9"']).start()
        (work / "tenants.yaml").write_text(TENANT_MAP)
        edge_cfg = work / "edge.yaml"
        edge_cfg.write_text(f"edge:\n  kafka_timeout: {args.kafka_timeout}\n"
                            if args.kafka_timeout else "edge: {}\n")
        port, eport, sport = free_port(), free_port(), free_port()
        # the edge creates the topics (replication 3, min.insync 2) before the first policy
        edge = subprocess.Popen(
            [sys.executable, "-m", "dnsflow", "edge", *common, "--config", str(edge_cfg),
             "--home", str(work / "edge-home"), "--listen", f"127.0.0.1:{port}",
             "--upstream", f"udp://127.0.0.1:{upstream.port}",
             "--tenant-map", str(work / "tenants.yaml"), "--name", "failover-edge",
             "--metrics-listen", f"127.0.0.1:{eport}", "--log-level", "WARNING"],
            stdout=open(work / "edge.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        checks = Checks(port)
        checks.wait_ready(edge, 60)
        tag = 1
        log(f"policy tag {tag}: {apply_policy(work, pcommon, tag)}")
        dsn = f"chdb://{work / 'chdb'}"
        sink = subprocess.Popen(
            [sys.executable, "-m", "dnsflow", "sink", *common, "--clickhouse", dsn,
             "--home", str(work / "sink-home"), "--metrics-listen", f"127.0.0.1:{sport}",
             "--log-level", "WARNING"],
            stdout=open(work / "sink.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        if args.streams:
            (work / "streams.yaml").write_text(
                f"streams:\n  windows: [{WINDOW_S}]\n  idle_advance_s: {args.idle_advance}\n")
            streams = subprocess.Popen(
                [sys.executable, "-m", "dnsflow", "streams", *common,
                 "--config", str(work / "streams.yaml"), "--home", str(work / "streams-home"),
                 "--metrics-listen", "off", "--log-level", "WARNING"],
                stdout=open(work / "streams.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while checks.pinned() != "192.0.2.1":
            if time.monotonic() > deadline:
                raise RuntimeError("the edge did not enforce the first policy within 60s")
            time.sleep(0.5)

        res: dict[str, float] = {}
        flags = ("-Q", str(args.qps), "-n", "1", "-c", "4", "-t", "5")
        load = threading.Thread(target=lambda: res.update(
            dnsperf(port, datafile, args.seconds + 30, f"0-{(os.cpu_count() or 1) - 1}", flags)))
        t0 = time.monotonic()
        load.start()
        kills = late = 0
        for k in range(args.kills):
            # the first kill early in the load, the next once the node is back in sync (a
            # restart takes 10-20 s on two busy cores), not before
            time.sleep(max(0.0, t0 + args.seconds * (0.1 + 0.4 * k) - time.monotonic()))
            node, leaders = leader_to_kill(bootstrap, events)
            led = sorted(p for p, (lead, _) in leaders.items() if lead == node)
            log(f"t={time.monotonic() - t0:.1f}s kill -9 node {node} (leader of {events} "
                f"partitions {led})")
            cluster.kill(node)
            kills += 1
            late += time.monotonic() - t0 > args.seconds
            tag += 1
            tp = time.monotonic()
            out = apply_policy(work, pcommon, tag)
            log(f"policy tag {tag} published in {time.monotonic() - tp:.1f}s with node "
                f"{node} down: {out}")
            time.sleep(max(0.0, tp + args.down - time.monotonic()))
            tr = time.monotonic()
            cluster.restart(node)
            log(f"node {node} answering again {time.monotonic() - tr:.1f}s after its start")
            insync = wait_in_sync(bootstrap, [events, prefix + "policies"], 3, 90)
            log(f"t={time.monotonic() - t0:.1f}s node {node} restarted; replicas in sync "
                f"after {insync:.1f}s more")
        if late:
            log(f"WARNING: {late} kill(s) came after the load had ended (a restart took "
                "longer than the load left): use a longer --seconds")
        load.join(args.seconds + 120)
        log(f"dnsperf: {res}")

        deadline = time.monotonic() + 60
        while (got := checks.pinned()) != f"192.0.2.{tag}":
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        policy_ok = got == f"192.0.2.{tag}"
        log(f"edge answers {PINNED} -> {got} (expected 192.0.2.{tag}: "
            f"{'latest policy in force' if policy_ok else 'POLICY UPDATE LOST'})")

        # the edge's events delivered (spool empty, nothing in flight), then a graceful stop
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pending = metric(eport, "dnsflow_edge_spool_pending")
            if pending == 0:
                break
            time.sleep(1)
        stop_process(edge, 120)
        edge_rc = edge.returncode
        edge = None
        answered = int(res.get("completed", 0)) + checks.answered
        in_kafka = asyncio.run(count_events(bootstrap, events))
        log(f"edge stopped (exit {edge_rc}); events in Kafka: {in_kafka} for {answered} "
            "answered queries")

        deadline = time.monotonic() + 180
        stored = 0.0
        while time.monotonic() < deadline:
            stored = metric(sport, "dnsflow_sink_rows_stored_total", 'table="dns_events"') or 0
            if stored >= in_kafka:
                break
            time.sleep(1)
        if args.streams:
            # the last windows close by wall clock (idle_advance_s) once the events stop
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                windows = metric(sport, "dnsflow_sink_rows_stored_total", 'table="telemetry"')
                if windows and time.monotonic() > deadline - 90 + 3 * WINDOW_S:
                    break
                time.sleep(1)
            stop_process(streams, 60)
            streams = None
            time.sleep(3)  # the sink reads what the worker published while stopping
        log(f"sink stored {stored:.0f} dns_events rows; stopping it")
        stop_process(sink, 120)
        sink = None
        (row,) = query_chdb(dsn, "SELECT count() AS n, uniqExact(edge, ts, client_ip, qname, "
                                 "qtype) AS distinct_events, countIf(qname LIKE 'q%.fo.test') "
                                 "AS load_rows, uniqExactIf(qname, qname LIKE 'q%.fo.test') "
                                 "AS load_names, max(policy_version) AS max_version, "
                                 "argMax(policy_version, ts) AS last_version "
                                 "FROM dnsflow.dns_events")
        log(f"dns_events: {row}")
        windows_bad = check_windows(dsn) if args.streams else 0
        rows = int(row["n"])
        distinct = int(row["distinct_events"])
        sent = int(res.get("sent", 0))
        lost_queries = int(res.get("lost", 0)) + max(0, n - sent)
        duplicates = (rows - distinct) + max(0, in_kafka - answered)
        lost = lost_queries + max(0, answered - distinct) + (0 if policy_ok else 1)
        if int(row["load_names"]) != int(res.get("completed", 0)):
            log(f"load names stored {row['load_names']} != dnsperf completed "
                f"{res.get('completed')}")
        return {"brokers": 3, "answered": answered, "events_in_kafka": in_kafka,
                "rows_in_clickhouse": rows, "lost": lost, "duplicates": duplicates,
                "leader_kills": kills - late,  # only kills under load count
                "windows_bad": windows_bad}
    finally:
        stop_process(edge)
        stop_process(streams, 60)
        stop_process(sink, 60)
        if upstream is not None:
            upstream.stop()
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kafka_failover", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qps", type=int, default=2000, help="dnsperf rate (default 2000)")
    ap.add_argument("--seconds", type=float, default=60.0,
                    help="load duration (default 60: a restarted node takes 7-28 s to "
                    "answer on two busy cores, and both kills must come under load)")
    ap.add_argument("--kills", type=int, default=2, help="leader kills (default 2)")
    ap.add_argument("--down", type=float, default=8.0,
                    help="seconds a killed node stays down (default 8)")
    ap.add_argument("--kafka-timeout", type=float, default=30.0,
                    help="the edge's kafka_timeout, seconds (default 30: longer than a "
                    "failover; 0 = the edge's default, 10)")
    ap.add_argument("--no-streams", dest="streams", action="store_false",
                    help="without the faust worker (by default it runs, and its 10 s "
                    "telemetry windows are compared with the stored events)")
    ap.add_argument("--idle-advance", type=float, default=2.0,
                    help="the worker's streams.idle_advance_s (default 2, its own default)")
    add_keep_option(ap)
    args = ap.parse_args(argv)
    work = make_work_dir("bench-kafka-failover-")
    try:
        result = run(args, work)
    finally:
        finish_work_dir(work, args.keep, log)
    print_summary("kafka_failover", {k: result[k] for k in SUMMARY})
    ok = (result["lost"] == 0 and result["duplicates"] == 0 and result["windows_bad"] == 0
          and result["leader_kills"] == args.kills)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
