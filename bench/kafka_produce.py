"""What one event costs to hand to Kafka: the edge's and the tap's producer, per record.

    python -m bench.kafka_produce [--kafka BOOTSTRAP] [--records 1000000] [--rounds 3]
                                  [--topic NAME]

Both the edge (every answered query) and ``dnsflow tap`` (every paired query) publish one
record per event through :func:`dnsflow.edge.telemetry.rdkafka.producer_config`. This
measures that producer alone, in a child process pinned to the server CPU (the broker, a
private one from scripts/kafka-local unless ``--kafka``, on the other): records shaped like
the edge's events (~400 bytes of JSON, keyed by tenant) go through the publisher's own
``produce_batch`` path in batches of 1,000 (each child first sends one batch to connect), then
a flush, which must leave nothing undelivered; CPU is the child's (every thread,
librdkafka's included) per record. The peer is the same producer with
``enable.idempotence`` off (still ``acks=all``): ``ratio`` = idempotent / plain CPU per
record, the price of exactly-once delivery through a leader failover (issue #16). One
warm-up of each is not counted; then rounds alternate the two so a busy neighbour falls on
both, and each figure is the median of its rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.edge_qps import cpus
from harness.peers import kafka_or_private
from harness.report import print_summary
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

BATCH = 1_000


def log(msg: str) -> None:
    print(f"[kafka_produce] {msg}", file=sys.stderr, flush=True)


def event_records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` records as the edge writes them (the memoised-hit encoding)."""
    return [(b"bench", b'{"ts":%d,"latency_us":12,"v":1,"edge":"bench","tenant":"bench",'
             b'"namespace":"bench-ns","pod":"dnsperf-0","service_account":"",'
             b'"client_ip":"127.0.0.1","transport":"udp","qname":"host%d.bench.test",'
             b'"qtype":"A","rcode":"NOERROR","answers":["10.0.%d.%d"],"cache":"hit",'
             b'"decision":"allow","rule":"","policy_version":1,"upstream":"udp://127.0.0.1"}'
             % (1_764_900_000_000_000 + i, i % 2000, i // 256 % 256, i % 256))
            for i in range(n)]


def child(bootstrap: str, topic: str, records: int, idempotent: bool) -> None:
    """One measurement (run in its own pinned process): prints a JSON line."""
    from confluent_kafka import Producer

    from dnsflow.edge.telemetry.rdkafka import producer_config

    cfg = producer_config(bootstrap, "bench-kafka-produce", 30_000)
    cfg["enable.idempotence"] = idempotent
    producer = Producer(cfg)
    recs = event_records(BATCH)
    producer.produce_batch(topic, [{"key": k, "value": v} for k, v in recs])  # connect
    producer.flush(30)
    batches = records // BATCH  # main() refuses fewer than one batch
    t0, w0 = time.process_time(), time.monotonic()
    for _ in range(batches):
        msgs = [{"key": k, "value": v} for k, v in recs]  # as RdKafkaPublisher._produce
        for _attempt in range(1000):  # bounded: the queue frees as the broker takes batches
            try:
                producer.produce_batch(topic, msgs)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    cpu, wall = time.process_time() - t0, time.monotonic() - w0
    sent = batches * BATCH
    print(json.dumps({"cpu_us_per_record": cpu * 1e6 / sent, "wall_s": wall,
                      "records": sent, "unflushed": left}), flush=True)


def measure(bootstrap: str, topic: str, records: int, idempotent: bool, cpu: str) -> dict:
    cmd = ["taskset", "-c", cpu, sys.executable, "-m", "bench.kafka_produce", "--child",
           "--kafka", bootstrap, "--topic", topic, "--records", str(records)]
    if not idempotent:
        cmd.append("--plain")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["unflushed"]:
        raise RuntimeError(f"{r['unflushed']} records not delivered")
    return r


def create_topic(bootstrap: str, topic: str) -> None:
    """``topic`` with 3 partitions, by the project's own Kafka admin (left as it is when it
    exists)."""
    from dnsflow.bus import open_bus
    from dnsflow.topics import TopicSpec

    asyncio.run(open_bus(bootstrap).create_topics([TopicSpec(topic, 3)]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kafka_produce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", help="use this Kafka instead of starting a private one")
    ap.add_argument("--records", type=int, default=1_000_000, help="records per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="measurements of each producer")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--topic", help="produce to this topic (created with 3 partitions; "
                    "default: a new one per run)")
    add_keep_option(ap)
    args = ap.parse_args(argv)
    if args.records < BATCH or args.rounds < 1:
        ap.error(f"--records must be at least {BATCH} and --rounds at least 1")
    if args.child:
        child(args.kafka, args.topic, args.records, not args.plain)
        return 0
    server_cpu, load_cpu = cpus()
    work: Path = make_work_dir("bench-kafka-produce-")
    kafka = None
    cost: dict[bool, list[float]] = {True: [], False: []}
    counted = 0  # records in the counted rounds (whole batches)
    try:
        bootstrap, kafka = kafka_or_private(args.kafka, work, load_cpu, log)
        topic = args.topic or f"bench{uuid.uuid4().hex[:8]}.events"
        create_topic(bootstrap, topic)
        for idempotent in (True, False):  # warm-up, not counted: the first producer on a
            # new topic pays for its partitions' first segments (seen: 1.6 against 0.9 us)
            r = measure(bootstrap, topic, args.records, idempotent, server_cpu)
            log(f"warm-up {'idempotent' if idempotent else 'plain'}: "
                f"{r['cpu_us_per_record']:.2f} us/record (not counted)")
        for rnd in range(args.rounds):
            for idempotent in ((True, False) if rnd % 2 == 0 else (False, True)):
                r = measure(bootstrap, topic, args.records, idempotent, server_cpu)
                cost[idempotent].append(r["cpu_us_per_record"])
                counted += r["records"]
                log(f"round {rnd + 1} {'idempotent' if idempotent else 'plain'}: "
                    f"{r['cpu_us_per_record']:.2f} us/record, {r['wall_s']:.1f}s")
    finally:
        if kafka is not None:
            kafka.stop()
        finish_work_dir(work, args.keep, log)
    idem = sorted(cost[True])[len(cost[True]) // 2]
    plain = sorted(cost[False])[len(cost[False]) // 2]
    print_summary("kafka_produce", {
        "us_per_record": idem, "us_per_record_not_idempotent": plain,
        "ratio": idem / plain if plain else 0.0, "records": counted},
        {"us_per_record": 2, "us_per_record_not_idempotent": 2, "ratio": 2})
    return 0


if __name__ == "__main__":
    sys.exit(main())
