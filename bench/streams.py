"""Stream logic throughput: events/s on one core via replay, and sustained through faust.

* ``logic_events_per_s``: JSON lines -> decode -> check -> telemetry + all six detectors +
  incidents + alert rules + auto-response (``streams.replay.replay_lines``), pinned to one
  core, on the labeled 30-minute traffic of ``tests/data/labeled_traffic.py`` (benign
  clients, DGA-infected clients, tunnels: ~40 % of names are unique), clients spread over
  8 tenants.
* peers in the same run: ``parse_only_events_per_s`` (orjson decode + per-tenant count, the
  floor of any Python consumer) and ``pydantic_events_per_s`` (the same records validated
  with the schema's pydantic model, the naive path).
* peer for faust: ``faust_floor_events_per_s``, a faust agent that only counts the same
  records (what the framework itself costs).
* ``inprocess_kafka_events_per_s``: the same logic through ``streams.service`` on aiokafka
  batches (what ``dnsflow up --kafka`` runs), for comparison with the faust driver.
* ``faust_events_per_s``: the events pre-loaded on a fresh events topic, then
  ``dnsflow streams --kafka`` (the faust worker) catches up; the rate is measured from its
  committed offsets, from the first commit to the last. A local Kafka is started under a
  temporary ``KAFKA_LOCAL_DIR`` with ``scripts/kafka-local`` unless ``--kafka`` is given,
  and stopped afterwards.

    python -m bench.streams [--minutes 30] [--faust-events 100000] [--kafka BOOTSTRAP]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson

from bench.detect_eval import load_traffic

ROOT = Path(__file__).resolve().parent.parent


def pin_one_core() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass


def logic_rate(lines: list[bytes]) -> tuple[float, dict[str, int]]:
    from streams.logic import StreamLogic
    from streams.replay import replay_lines

    logic = StreamLogic()
    st = replay_lines(logic, lines, lambda o: None, lambda n, r: None)
    return st.events / st.seconds, st.outputs


def parse_only_rate(lines: list[bytes]) -> float:
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    for line in lines:
        t = orjson.loads(line)["tenant"]
        counts[t] = counts.get(t, 0) + 1
    return len(lines) / (time.perf_counter() - t0)


def pydantic_rate(lines: list[bytes], limit: int = 30_000) -> float:
    from dnsflow.schema import parse_event

    sample = lines[:limit]
    t0 = time.perf_counter()
    for line in sample:
        parse_event(line)
    return len(sample) / (time.perf_counter() - t0)


class LocalKafka:
    """scripts/kafka-local under a temporary directory (stopped by PID via the script)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-kafka-")
        self.env = {**os.environ, "KAFKA_LOCAL_DIR": self.dir}
        self.script = str(ROOT / "scripts" / "kafka-local")

    def start(self) -> str:
        out = subprocess.run(["bash", self.script, "start"], env=self.env, capture_output=True,
                             text=True, timeout=300, check=True)
        return out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        subprocess.run(["bash", self.script, "stop"], env=self.env, timeout=120, check=False,
                       capture_output=True)


async def produce(bootstrap: str, prefix: str, lines: list[bytes]) -> None:
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.topics import Topics

    bus = KafkaBus(bootstrap, Topics(prefix))
    await bus.start()
    try:
        for i in range(0, len(lines), 5000):
            chunk = lines[i:i + 5000]
            await bus.send_many(bus.topics.events,
                                [(orjson.loads(x)["tenant"].encode(), x) for x in chunk])
    finally:
        await bus.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:
        return 0
    finally:
        await admin.close()
    return sum(max(0, m.offset) for tp, m in offsets.items() if tp.topic == topic)


async def inprocess_kafka_rate(bootstrap: str, prefix: str, total: int,
                               timeout_s: float = 300) -> float:
    """The same logic through ``streams.service`` on aiokafka (what ``dnsflow up --kafka``
    runs): the rate from the first processed batch to the last."""
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.settings import Settings
    from dnsflow.topics import Topics
    from streams.service import build

    bus = KafkaBus(bootstrap, Topics(prefix), create_topics=False)
    await bus.start()
    (svc,) = build(Settings(kafka=bootstrap, topic_prefix=prefix), bus)
    await svc.start()
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            done = svc.status()["events"]
            if done and first is None:
                first = (time.monotonic(), done)
            if done >= total:
                break
        end = (time.monotonic(), svc.status()["events"])
    finally:
        await svc.stop()
        await bus.stop()
    if first is None or end[0] <= first[0]:
        return 0.0
    return (end[1] - first[1]) / (end[0] - first[0])


def floor_worker(bootstrap: str, prefix: str) -> None:
    """The peer: a faust agent that only counts the same records (the framework's floor)."""
    import faust

    app = faust.App(f"{prefix}floor", broker=f"kafka://{bootstrap}", store="memory://",
                    web_enabled=False, key_serializer="raw", value_serializer="raw",
                    consumer_auto_offset_reset="earliest", topic_partitions=6,
                    topic_disable_leader=True)
    events = app.topic(f"{prefix}events", key_type=bytes, value_type=bytes)
    seen = [0]

    @app.agent(events)
    async def count(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=0.2):
            seen[0] += len(batch)

    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def faust_rate(bootstrap: str, prefix: str, total: int, floor: bool, workers: int = 1,
               timeout_s: float = 300) -> float:
    home = tempfile.mkdtemp(prefix="bench-streams-")
    cfg = Path(home) / "dnsflow.yaml"
    cfg.write_text("streams: {}\n")
    log = open(Path(home) / "worker.log", "wb")  # noqa: SIM115
    if floor:
        cmd = [sys.executable, "-m", "bench.streams", "--floor-worker", prefix,
               "--kafka", bootstrap]
        group = f"{prefix}floor"
    else:
        cmd = [sys.executable, "-m", "dnsflow", "streams", "--kafka", bootstrap,
               "--topic-prefix", prefix, "--config", str(cfg), "--home", home,
               "--workers", str(workers)]
        group = f"{prefix}dnsflow-streams"
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
    topic = f"{prefix}events"
    first: tuple[float, int] | None = None
    last: tuple[float, int] = (time.monotonic(), 0)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = asyncio.run(committed(bootstrap, group, topic))
            now = time.monotonic()
            if done and first is None:
                first = (now, done)
            if done != last[1]:
                last = (now, done)
            if done >= total:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
    if first is None or last[0] <= first[0]:
        print(f"faust worker made no measurable progress (log: {home}/worker.log)",
              file=sys.stderr)
        return 0.0
    return (last[1] - first[1]) / (last[0] - first[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30, help="minutes of labeled traffic")
    ap.add_argument("--faust-events", type=int, default=100_000)
    ap.add_argument("--kafka", metavar="BOOTSTRAP", help="use this broker instead of a "
                    "temporary local one")
    ap.add_argument("--no-faust", action="store_true")
    ap.add_argument("--faust-workers", type=int, default=2,
                    help="also measure this many faust workers together (1: skip)")
    ap.add_argument("--floor-worker", metavar="PREFIX", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_worker:
        floor_worker(args.kafka, args.floor_worker)
        return 0

    lt = load_traffic()
    events, _ = lt.scenario(minutes=args.minutes)
    for e in events:  # spread the clients over 8 tenants (= partitions for the workers)
        e["tenant"] = e["namespace"] = f"corp{zlib.crc32(e['client_ip'].encode()) % 8}"
    lines = [orjson.dumps(e) for e in events]
    print(f"{len(lines)} events, {sum(map(len, lines)) / len(lines):.0f} bytes each")
    pin_one_core()
    cold, outputs = logic_rate(lines)
    warm, _ = logic_rate(lines)
    print(f"logic (one core): {cold:,.0f} events/s first pass, {warm:,.0f} events/s second "
          f"pass; outputs {outputs}")
    parse = parse_only_rate(lines)
    pyd = pydantic_rate(lines)
    print(f"peers: parse-only {parse:,.0f} events/s, pydantic validation {pyd:,.0f} events/s")
    faust = floor = scaled = inproc = 0.0
    if not args.no_faust:
        os.sched_setaffinity(0, os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
        kafka = None
        bootstrap = args.kafka
        try:
            if not bootstrap:
                kafka = LocalKafka()
                bootstrap = kafka.start()
            prefix = f"bench{uuid.uuid4().hex[:8]}."
            sample = lines[: args.faust_events]
            asyncio.run(produce(bootstrap, prefix, sample))
            faust = faust_rate(bootstrap, prefix, len(sample), floor=False)
            floor = faust_rate(bootstrap, prefix, len(sample), floor=True)
            if args.faust_workers > 1:
                prefix2 = f"bench{uuid.uuid4().hex[:8]}."
                asyncio.run(produce(bootstrap, prefix2, sample))
                scaled = faust_rate(bootstrap, prefix2, len(sample), floor=False,
                                    workers=args.faust_workers)
            # the in-process driver shares the streams' group name: its own topics
            prefix3 = f"bench{uuid.uuid4().hex[:8]}."
            asyncio.run(produce(bootstrap, prefix3, sample))
            inproc = asyncio.run(inprocess_kafka_rate(bootstrap, prefix3, len(sample)))
        finally:
            if kafka is not None:
                kafka.stop()
        print(f"faust worker: {faust:,.0f} events/s sustained (committed offsets); "
              f"peer faust count-only agent: {floor:,.0f} events/s; "
              f"{args.faust_workers} workers: {scaled:,.0f} events/s")
        print(f"in-process driver on aiokafka (dnsflow up --kafka): {inproc:,.0f} events/s")
    print(f"bench streams: logic_events_per_s={cold:.0f} faust_events_per_s={faust:.0f} "
          f"logic_warm_events_per_s={warm:.0f} parse_only_events_per_s={parse:.0f} "
          f"pydantic_events_per_s={pyd:.0f} logic_vs_parse_only={cold / parse:.3f} "
          f"faust_floor_events_per_s={floor:.0f} "
          f"faust_vs_floor={faust / floor if floor else 0:.3f} "
          f"faust_{args.faust_workers}workers_events_per_s={scaled:.0f} "
          f"inprocess_kafka_events_per_s={inproc:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
