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
* ``faust_events_per_s``: ``--faust-minutes`` of the same traffic pre-loaded on a fresh
  events topic, then ``dnsflow streams --kafka`` (one faust worker, pinned to one core like
  the edge in ``bench.edge_qps``) catches up; the rate is measured from its committed offsets
  (which follow its checkpoints), from the commit passing 10 % of the input to the one
  passing 90 % (steady state); ``faust_cpu_us_per_event``
  is the worker's CPU time over the events (steadier on a shared machine).
* peer for "keeps up with the edge": ``edge_events_per_s``, the edge of ``bench.edge_qps``
  (identity, policy, cache, every event to Kafka) on one core under dnsperf for
  ``--edge-seconds``, in this run: each answered query is one event. Then the faust worker,
  on one core, reads exactly the events that edge published (``faust_edge_events_per_s``):
  ``faust_vs_edge`` is the ratio, one core each. The labeled traffic packs hours of event time
  into seconds (a window closes every ~100 events), so ``faust_labeled_vs_edge`` is the
  harder, window-heavy figure; ``faust_paced_events_per_s`` is the labeled mix with its
  event time re-spaced to the edge's pace.
* ``faust_batch_floor_events_per_s``: a faust worker with the same batch delivery
  (``streams.faust_batch``) whose handler only counts: what faust still costs.

A local Kafka is started under a temporary ``KAFKA_LOCAL_DIR`` with ``scripts/kafka-local``
(on the other core) unless ``--kafka`` is given, and stopped afterwards.

    python -m bench.streams [--minutes 30] [--faust-minutes 180] [--kafka BOOTSTRAP]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from harness.peers import count_events, cpu_seconds, stop_process

ROOT = Path(__file__).resolve().parent.parent


def pin_one_core() -> None:
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
    except (AttributeError, OSError):
        pass


def logic_rate(lines: list[bytes]) -> tuple[float, dict[str, int]]:
    from dnsflow.streams.logic import StreamLogic
    from dnsflow.streams.replay import replay_lines

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
    from dnsflow.streams.service import build
    from dnsflow.topics import Topics

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


def batch_floor_worker(bootstrap: str, prefix: str) -> None:
    """The floor of our faust driver: batch delivery (streams.faust_batch), count only."""
    import faust
    from faust.types import TP

    from dnsflow.streams.faust_batch import BatchApp

    app = BatchApp(f"{prefix}batchfloor", broker=f"kafka://{bootstrap}", store="memory://",
                   web_enabled=False, key_serializer="raw", value_serializer="raw",
                   consumer_auto_offset_reset="earliest", topic_partitions=6,
                   topic_disable_leader=True, broker_max_poll_records=5000,
                   broker_commit_interval=1.0)
    events = app.topic(f"{prefix}events", key_type=bytes, value_type=bytes)

    async def count(topic: str, rows: list[Any]) -> None:
        last: dict[int, int] = {}
        for part, offset, _key, _value in rows:
            last[part] = offset
        for part, offset in last.items():
            app.consumer.mark_committable(TP(topic, part), offset)

    app.batch_topic(events, count)
    sys.argv = [sys.argv[0]]
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


def paced(lines: list[bytes], per_s: float) -> list[bytes]:
    """The same events with event time re-spaced to ``per_s`` events a second (the pace of a
    live edge), so windows hold as many events as they would behind that edge."""
    out = []
    t0 = orjson.loads(lines[0])["ts"]
    for i, line in enumerate(lines):
        e = orjson.loads(line)
        e["ts"] = t0 + int(i * 1_000_000 / per_s)
        out.append(orjson.dumps(e))
    return out


def edge_rate(bootstrap: str, seconds: float) -> tuple[float, float, str, int]:
    """The edge of bench.edge_qps on one core under dnsperf: (events/s, CPU µs per event,
    the topic prefix its events went to, how many there are)."""
    from bench.edge_qps import Peer, cpus, publish_policy, start_edge
    from harness.peers import Unbound, stop_process

    server_cpu, load_cpu = cpus()
    work = Path(tempfile.mkdtemp(prefix="bench-streams-edge-"))
    names = [f"host{i}.bench.test" for i in range(2000)]
    datafile = work / "queries.txt"
    datafile.write_text("".join(f"{n} A\n" for n in names))
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    asyncio.run(publish_policy(bootstrap, prefix))
    upstream = Unbound([f"{n}. 3600 IN A 10.0.{i // 256}.{i % 256}" for i, n in enumerate(names)],
                       zones=("bench.test",), workdir=work / "ub", cpu=int(load_cpu)).start()
    edge = None
    try:
        edge, port = start_edge(work, bootstrap, prefix, upstream.port, server_cpu)
        time.sleep(1.0)  # the policy subscription catches up
        peer = Peer("dnsflow edge", edge.pid, port)
        peer.warm(datafile, load_cpu)
        peer.run(datafile, seconds, load_cpu)
        peer.report()
    finally:
        if edge is not None:
            stop_process(edge, 120)  # graceful: every event reaches Kafka
        upstream.stop()
    events = asyncio.run(count_events(bootstrap, f"{prefix}events"))
    return peer.qps, peer.cpu_us_per_query, prefix, events


def faust_rate(bootstrap: str, prefix: str, total: int, floor: str = "", workers: int = 1,
               timeout_s: float = 300, cpu: str | None = None) -> tuple[float, float]:
    """(events/s from the committed offsets, worker CPU µs per event)."""
    home = tempfile.mkdtemp(prefix="bench-streams-")
    cfg = Path(home) / "dnsflow.yaml"
    cfg.write_text("streams: {}\n")
    log = open(Path(home) / "worker.log", "wb")  # noqa: SIM115
    if floor:
        cmd = [sys.executable, "-m", "bench.streams", f"--{floor}-worker", prefix,
               "--kafka", bootstrap]
        group = f"{prefix}{floor.replace('-', '')}"
    else:
        cmd = [sys.executable, "-m", "dnsflow", "streams", "--kafka", bootstrap,
               "--topic-prefix", prefix, "--config", str(cfg), "--home", home,
               "--workers", str(workers)]
        group = f"{prefix}dnsflow-streams"
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=ROOT)
    topic = f"{prefix}events"
    # (time, committed events, worker CPU seconds) whenever the committed offsets move
    seen: list[tuple[float, int, float]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = asyncio.run(committed(bootstrap, group, topic))
            if done and (not seen or done != seen[-1][1]):
                seen.append((time.monotonic(), done, cpu_seconds(proc.pid)))
            if done >= total:
                break
            time.sleep(0.25)
    finally:
        stop_process(proc, 30)
        log.close()
    # steady state: from the commit that passes 10 % of the input to the one that passes
    # 90 % (start-up, group join and the last commits' cadence stay out)
    first = next((x for x in seen if x[1] >= total // 10), None)
    last = next((x for x in seen if x[1] >= total * 9 // 10), seen[-1] if seen else None)
    if first is None or last is None or last[0] <= first[0]:
        print(f"faust worker made no measurable progress (log: {home}/worker.log)",
              file=sys.stderr)
        return 0.0, 0.0
    n = last[1] - first[1]
    # with --workers the CPU is in child processes /proc does not add up while they run
    cpu_us = (last[2] - first[2]) * 1e6 / n if workers == 1 else 0.0
    return n / (last[0] - first[0]), cpu_us


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30, help="minutes of labeled traffic for "
                    "the logic figures")
    ap.add_argument("--faust-minutes", type=int, default=180, help="minutes of the same "
                    "traffic pre-loaded for the faust figures")
    ap.add_argument("--edge-seconds", type=float, default=8.0,
                    help="dnsperf seconds against the edge peer (0: skip)")
    ap.add_argument("--kafka", metavar="BOOTSTRAP", help="use this broker instead of a "
                    "temporary local one")
    ap.add_argument("--no-faust", action="store_true")
    ap.add_argument("--faust-workers", type=int, default=2,
                    help="also measure this many faust workers together (1: skip)")
    ap.add_argument("--floor-worker", metavar="PREFIX", help=argparse.SUPPRESS)
    ap.add_argument("--batch-floor-worker", metavar="PREFIX", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_worker:
        floor_worker(args.kafka, args.floor_worker)
        return 0
    if args.batch_floor_worker:
        batch_floor_worker(args.kafka, args.batch_floor_worker)
        return 0

    lt = load_traffic()

    def traffic(minutes: int) -> list[bytes]:
        events, _ = lt.scenario(minutes=minutes)
        for e in events:  # spread the clients over 8 tenants (= partitions for the workers)
            e["tenant"] = e["namespace"] = f"corp{zlib.crc32(e['client_ip'].encode()) % 8}"
        return [orjson.dumps(e) for e in events]

    lines = traffic(args.minutes)
    print(f"{len(lines)} events, {sum(map(len, lines)) / len(lines):.0f} bytes each")
    everywhere = os.sched_getaffinity(0)
    pin_one_core()
    cold, outputs = logic_rate(lines)
    warm, _ = logic_rate(lines)
    print(f"logic (one core): {cold:,.0f} events/s first pass, {warm:,.0f} events/s second "
          f"pass; outputs {outputs}")
    parse = parse_only_rate(lines)
    pyd = pydantic_rate(lines)
    print(f"peers: parse-only {parse:,.0f} events/s, pydantic validation {pyd:,.0f} events/s")
    os.sched_setaffinity(0, everywhere)
    r: dict[str, float] = {}
    if not args.no_faust:
        from bench.edge_qps import cpus
        from harness.peers import KafkaLocal

        server_cpu, load_cpu = cpus()
        kafka = None
        bootstrap = args.kafka
        try:
            if not bootstrap:
                kafka = KafkaLocal(Path(tempfile.mkdtemp(prefix="bench-kafka-")),
                                   cpu=int(load_cpu))
                bootstrap = kafka.start()
            sample = lines if args.faust_minutes == args.minutes else traffic(args.faust_minutes)
            print(f"faust input: {len(sample)} events ({args.faust_minutes} minutes)")

            def loaded(events: list[bytes] = sample) -> str:
                prefix = f"bench{uuid.uuid4().hex[:8]}."
                asyncio.run(produce(bootstrap, prefix, events))
                return prefix

            n = len(sample)
            prefix = loaded()  # each worker below reads it in its own consumer group
            r["faust"], r["faust_cpu"] = faust_rate(bootstrap, prefix, n, cpu=server_cpu)
            r["batch_floor"], _ = faust_rate(bootstrap, prefix, n, floor="batch-floor",
                                             cpu=server_cpu)
            # faust's own agent does ~10k/s: a part of the input shows its rate well enough
            part = sample[:200_000]
            r["floor"], _ = faust_rate(bootstrap, loaded(part), len(part), floor="floor",
                                       cpu=server_cpu)
            if args.faust_workers > 1:
                r["scaled"], _ = faust_rate(bootstrap, loaded(), n, workers=args.faust_workers)
            # the in-process driver shares the streams' group name: its own topics
            r["inproc"] = asyncio.run(inprocess_kafka_rate(bootstrap, loaded(), n))
            if args.edge_seconds > 0:
                r["edge"], r["edge_cpu"], edge_prefix, produced = edge_rate(
                    bootstrap, args.edge_seconds)
                # the same worker on exactly what the edge published: event time at the
                # edge's pace, as a worker following a live edge sees it
                r["faust_edge"], r["faust_edge_cpu"] = faust_rate(
                    bootstrap, edge_prefix, produced, cpu=server_cpu)
                # the labeled mix again, its event time re-spaced to the edge's pace
                r["faust_paced"], r["faust_paced_cpu"] = faust_rate(
                    bootstrap, loaded(paced(sample, r["edge"])), n, cpu=server_cpu)
        finally:
            if kafka is not None:
                kafka.stop()
        print(f"faust worker (one core): {r['faust']:,.0f} events/s sustained (committed "
              f"offsets), {r['faust_cpu']:.1f} µs CPU per event; peers: faust count-only "
              f"agent {r['floor']:,.0f} events/s, batch delivery count-only "
              f"{r['batch_floor']:,.0f} events/s; {args.faust_workers} workers (unpinned): "
              f"{r.get('scaled', 0):,.0f} events/s")
        print(f"in-process driver on aiokafka (dnsflow up --kafka): {r['inproc']:,.0f} events/s")
        if r.get("edge"):
            print(f"edge (one core, bench.edge_qps set-up): {r['edge']:,.0f} events/s, "
                  f"{r['edge_cpu']:.1f} µs CPU per event; the faust worker on those events: "
                  f"{r['faust_edge']:,.0f} events/s, {r['faust_edge_cpu']:.1f} µs CPU per "
                  f"event; on the labeled mix at the edge's pace: {r['faust_paced']:,.0f} "
                  f"events/s, {r['faust_paced_cpu']:.1f} µs CPU per event")
    faust, edge, on_edge = r.get("faust", 0.0), r.get("edge", 0.0), r.get("faust_edge", 0.0)
    print(f"bench streams: logic_events_per_s={cold:.0f} faust_events_per_s={faust:.0f} "
          f"edge_events_per_s={edge:.0f} faust_edge_events_per_s={on_edge:.0f} "
          f"faust_vs_edge={on_edge / edge if edge else 0:.2f} "
          f"faust_labeled_vs_edge={faust / edge if edge else 0:.2f} "
          f"faust_cpu_us_per_event={r.get('faust_cpu', 0):.1f} "
          f"faust_edge_cpu_us_per_event={r.get('faust_edge_cpu', 0):.1f} "
          f"faust_paced_events_per_s={r.get('faust_paced', 0):.0f} "
          f"faust_paced_cpu_us_per_event={r.get('faust_paced_cpu', 0):.1f} "
          f"edge_cpu_us_per_event={r.get('edge_cpu', 0):.1f} "
          f"logic_warm_events_per_s={warm:.0f} parse_only_events_per_s={parse:.0f} "
          f"pydantic_events_per_s={pyd:.0f} "
          f"faust_floor_events_per_s={r.get('floor', 0):.0f} "
          f"faust_batch_floor_events_per_s={r.get('batch_floor', 0):.0f} "
          f"faust_{args.faust_workers}workers_events_per_s={r.get('scaled', 0):.0f} "
          f"inprocess_kafka_events_per_s={r.get('inproc', 0):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
