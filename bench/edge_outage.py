"""Kafka stopped for 30 s under load: every query is still answered and every event arrives.

    python -m bench.edge_outage [--qps 3000] [--outage 30]

Starts a private Kafka (scripts/kafka-local; never the shared development broker, since this
benchmark kills it), unbound as the edge's upstream, and the edge with Kafka publishing. Under
a steady dnsperf load it stops the broker for ``--outage`` seconds, restarts it on the same
data, waits for the edge's spool to drain, stops the edge gracefully and counts the records in
the events topic (the claim: events_in_kafka == answered, lost == 0). Prints last
``bench edge_outage: answered=.. events_in_kafka=.. spooled_max=.. lost=..``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from bench.edge_qps import cpus, dnsperf, publish_policy
from harness.peers import KafkaLocal, Unbound, count_events, free_port, stop_process, wait_dns
from harness.report import print_summary
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

TENANT_MAP = """
clients:
  - {cidr: 127.0.0.0/8, tenant: bench, namespace: bench-ns, pod: dnsperf-0}
"""


def log(msg: str) -> None:
    print(f"[edge_outage] {msg}", file=sys.stderr, flush=True)


class Broker:
    """Stop and restart the private broker on the same data (kafka-local only wipes it on
    ``start``/``stop``, so restart re-runs the broker's own command line)."""

    def __init__(self, kafka: KafkaLocal) -> None:
        self.kafka = kafka
        pid = kafka.pid()
        assert pid is not None
        self.cmd = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        self.cwd = os.readlink(f"/proc/{pid}/cwd")

    def stop(self) -> None:
        pid = self.kafka.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        for _ in range(120):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.25)
        os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        logf = open(self.kafka.state / "broker-restart.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([c.decode() for c in self.cmd], cwd=self.cwd, stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)
        (self.kafka.state / "pid").write_text(str(proc.pid))


def metric(port: int, name: str) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return None
    m = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text.decode(), re.M)
    return float(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_outage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qps", type=int, default=3000)
    ap.add_argument("--outage", type=float, default=30.0)
    ap.add_argument("--before", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=15.0)
    add_keep_option(ap)
    args = ap.parse_args(argv)
    server_cpu, load_cpu = cpus()
    work = make_work_dir("bench-edge-outage-")
    names = [f"host{i}.bench.test" for i in range(2000)]
    local = [f"{n}. 3600 IN A 10.0.{i // 256}.{i % 256}" for i, n in enumerate(names)]
    datafile = work / "queries.txt"
    datafile.write_text("".join(f"{n} A\n" for n in names))
    total = args.before + args.outage + args.after
    kafka = KafkaLocal(work / "kafka")
    edge = None
    upstream = None
    result: dict[str, float] = {}
    try:
        log("starting a private Kafka")
        bootstrap = kafka.start()
        broker = Broker(kafka)
        prefix = f"outage{uuid.uuid4().hex[:8]}."
        asyncio.run(publish_policy(bootstrap, prefix))
        upstream = Unbound(local, workdir=work / "ub", cpu=int(load_cpu)).start()
        port, mport = free_port(), free_port()
        (work / "tenants.yaml").write_text(TENANT_MAP)
        cmd = ["taskset", "-c", server_cpu, sys.executable, "-m", "dnsflow", "edge",
               "--kafka", bootstrap, "--topic-prefix", prefix, "--home", str(work / "home"),
               "--listen", f"127.0.0.1:{port}", "--upstream", f"udp://127.0.0.1:{upstream.port}",
               "--tenant-map", str(work / "tenants.yaml"), "--name", "outage-edge",
               "--metrics-listen", f"127.0.0.1:{mport}", "--log-level", "WARNING"]
        edge = subprocess.Popen(cmd, stdout=open(work / "edge.log", "wb"),  # noqa: SIM115
                                stderr=subprocess.STDOUT)
        wait_dns(port, 30, edge)
        spooled_max = 0.0
        sampling = threading.Event()

        def sample() -> None:
            nonlocal spooled_max
            while not sampling.is_set():
                v = metric(mport, "dnsflow_edge_spool_pending")
                if v is not None:
                    spooled_max = max(spooled_max, v)
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        res: dict[str, float] = {}
        load = threading.Thread(target=lambda: res.update(
            dnsperf(port, datafile, total, load_cpu, ("-Q", str(args.qps), "-c", "4", "-t", "3"))))
        load.start()
        time.sleep(args.before)
        log(f"stopping Kafka for {args.outage:.0f}s")
        broker.stop()
        time.sleep(args.outage)
        log("restarting Kafka")
        broker.restart()
        load.join()
        log(f"load done: {res}")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pending = metric(mport, "dnsflow_edge_spool_pending")
            if pending == 0 and time.monotonic() > deadline - 170:
                break
            time.sleep(1)
        sampling.set()
        sampler.join()
        published = metric(mport, "dnsflow_edge_events_published_total")
        dropped = metric(mport, "dnsflow_edge_events_dropped_total")
        log(f"spool drained; edge says published={published} dropped={dropped}")
        stop_process(edge, 120)
        edge = None
        events = asyncio.run(count_events(bootstrap, prefix + "events"))
        result = {"answered": res.get("completed", 0) + 1, "events_in_kafka": events,
                  "spooled_max": spooled_max, "lost": res.get("lost", 0),
                  "dropped": dropped or 0}
    finally:
        stop_process(edge)
        if upstream is not None:
            upstream.stop()
        kafka.stop()
        finish_work_dir(work, args.keep, log)
    print_summary("edge_outage", {**result, "outage_s": args.outage, "qps": args.qps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
