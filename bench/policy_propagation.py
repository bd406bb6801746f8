"""Publish -> enforcement time of policy updates through the real Kafka, over 100 updates.

dnsflow: from calling ``Publisher.publish`` (catch up with the topic, hash, version,
compacted topic, policy_log) to the moment an edge-like ``PolicyFollower`` has the new
version in force in its ``PolicyStore`` (checked: the changed name is then denied).
Peer: the bare Kafka floor — one aiokafka record of the same size produced and consumed
through the same broker, same producer settings. Uses ``--kafka`` or DNSFLOW_TEST_KAFKA,
else starts ``scripts/kafka-local`` in a temporary directory and stops it afterwards.

    python -m bench.policy_propagation [--kafka BOOTSTRAP] [--updates 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dnsflow.bus.kafka import KafkaBus
from dnsflow.policies import policyset, records
from dnsflow.policies.api import ClientInfo, PolicyFollower, PolicyStore
from dnsflow.policies.publisher import Publisher
from dnsflow.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ClientInfo("10.0.0.5", "acme", "shop")
TIMEOUT_S = 10.0


def policy(i: int) -> str:
    names = ", ".join(f"u{j}.example.com" for j in range(max(0, i - 20), i + 1))
    return f"""
apiVersion: dnsflow.io/v1
kind: DNSPolicy
metadata: {{name: base, namespace: shop}}
spec:
  tenant: acme
  rules:
    - {{id: updated, match: {{names: [{names}]}}, action: deny}}
"""


@contextmanager
def kafka(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    from harness.peers import KafkaLocal

    state = tempfile.mkdtemp(prefix="dnsflow-bench-kafka-")
    print(f"starting a local Kafka in {state} ...", file=sys.stderr, flush=True)
    broker = KafkaLocal(Path(state))
    try:
        yield broker.start()
    finally:
        broker.stop()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def dnsflow_run(bootstrap: str, updates: int) -> list[float]:
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
    bus = KafkaBus(bootstrap, topics)
    await bus.start()
    store = PolicyStore()
    applied = asyncio.Event()
    applied_at: dict[int, float] = {}  # version -> when the store started enforcing it

    def on_change(key: str, record: dict | None) -> None:
        if key == "acme" and record is not None:
            applied_at[record["version"]] = time.perf_counter()
        applied.set()

    follower = PolicyFollower(bus, store, on_change=on_change, poll_ms=50)
    await follower.start()
    pub = Publisher(bus, source="bench", actor="bench")
    out: list[float] = []
    try:
        await pub.publish(policyset.from_text(policy(0)))  # warm-up: topics, metadata
        while store.version("acme") < 1:
            await asyncio.wait_for(applied.wait(), TIMEOUT_S)
            applied.clear()
        for i in range(1, updates + 1):
            docs = policyset.from_text(policy(i))
            name = f"u{i}.example.com"
            applied.clear()
            t0 = time.perf_counter()
            (change,) = await pub.publish(docs)
            while store.decide(CLIENT, name, "A").action != "deny":
                await asyncio.wait_for(applied.wait(), TIMEOUT_S)
                applied.clear()
            out.append((applied_at[change.version] - t0) * 1000)
    finally:
        await pub.close()
        await follower.stop()
        await bus.stop()
    return out


async def kafka_floor(bootstrap: str, updates: int, size: int) -> list[float]:
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}.")
    bus = KafkaBus(bootstrap, topics)
    await bus.start()
    topic = topics.policies
    consumer = bus.consumer([topic], None, from_beginning=True)
    await consumer.start()
    payload = b"x" * size
    out: list[float] = []
    try:
        await bus.send(topic, payload, key=b"warm")
        while not await consumer.getmany(timeout_ms=100):
            pass
        for i in range(updates):
            t0 = time.perf_counter()
            await bus.send(topic, payload, key=f"k{i}".encode())
            got: list = []
            while not got:
                got = await consumer.getmany(timeout_ms=50)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await consumer.stop()
        await bus.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kafka", default=os.environ.get("DNSFLOW_TEST_KAFKA"))
    ap.add_argument("--updates", type=int, default=100)
    args = ap.parse_args()
    with kafka(args.kafka) as bootstrap:
        ours = asyncio.run(dnsflow_run(bootstrap, args.updates))
        doc = policyset.from_text(policy(args.updates))["acme"]
        size = len(records.encode(doc, 1, 0, "bench", "bench")[1])
        floor = asyncio.run(kafka_floor(bootstrap, args.updates, size))
    p50, p99 = statistics.median(ours), pct(ours, 99)
    f50, f99 = statistics.median(floor), pct(floor, 99)
    print(f"dnsflow publish->enforce over {len(ours)} updates: p50 {p50:.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(ours):.1f} ms")
    print(f"kafka produce->consume floor ({size} B): p50 {f50:.1f} ms, p99 {f99:.1f} ms")
    print(f"bench policy_propagation: p50_ms={p50:.1f} p99_ms={p99:.1f} "
          f"kafka_floor_p50_ms={f50:.1f} kafka_floor_p99_ms={f99:.1f} "
          f"overhead_p50_ms={p50 - f50:.1f} updates={len(ours)}")


if __name__ == "__main__":
    main()
