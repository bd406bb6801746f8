"""The sink's librdkafka consumer keeps the core consumer's contract on the real broker:
records in order with their coordinates, and a commit names exactly what was returned."""

from __future__ import annotations

import time

import pytest

from dnsflow.bus.kafka import KafkaBus
from dnsflow.sinks.batch import Records
from dnsflow.sinks.kafka_consumer import FastKafkaConsumer
from dnsflow.topics import Topics

pytestmark = pytest.mark.kafka


async def _take(consumer: FastKafkaConsumer, n: int, timeout: float = 20) -> list:
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got.extend(await consumer.getmany(timeout_ms=300, max_records=n - len(got)))
    return got


async def _ten_records(kafka_bootstrap: str, topic_prefix: str) -> tuple[str, str]:
    """Values b"0".."9" on the events topic; returns (topic, a fresh group id)."""
    bus = KafkaBus(kafka_bootstrap, Topics(topic_prefix))
    await bus.start()
    try:
        await bus.send_many(bus.topics.events, [(b"t", b"%d" % i) for i in range(10)])
    finally:
        await bus.stop()
    return bus.topics.events, f"{topic_prefix}g"


async def test_commit_resumes_the_group_after_the_last_returned_record(kafka_bootstrap,
                                                                       topic_prefix):
    topic, group = await _ten_records(kafka_bootstrap, topic_prefix)

    first = FastKafkaConsumer(kafka_bootstrap, [topic], group)
    await first.start()
    try:
        got = await _take(first, 4)
        await first.commit()
    finally:
        await first.stop()
    assert [m.value for m in got] == [b"0", b"1", b"2", b"3"]
    assert [m.offset for m in got] == [0, 1, 2, 3]
    assert {m.topic for m in got} == {topic} and all(m.timestamp_ms > 0 for m in got)

    second = FastKafkaConsumer(kafka_bootstrap, [topic], group)
    await second.start()
    try:
        rest = await _take(second, 6)
        more = await second.getmany(timeout_ms=300, max_records=10)
    finally:
        await second.stop()
    assert [m.value for m in rest] == [b"%d" % i for i in range(4, 10)]
    assert more == []


async def test_records_come_as_columns_and_a_partial_commit_resumes_there(kafka_bootstrap,
                                                                          topic_prefix):
    """The sink's hot path: columns without a Message per record, the full record on
    demand (DLQ), and committing only what is stored while later records are in flight."""
    topic, group = await _ten_records(kafka_bootstrap, topic_prefix)

    first = FastKafkaConsumer(kafka_bootstrap, [topic], group)
    await first.start()
    try:
        got = Records()
        deadline = time.monotonic() + 20
        while len(got) < 10 and time.monotonic() < deadline:
            got.extend(await first.getmany_records(300, 10 - len(got)))
        assert got.values == [b"%d" % i for i in range(10)] and got.offsets == list(range(10))
        assert set(got.topics) == {topic}
        msg = got.message(3)
        assert (msg.topic, msg.offset, msg.key, msg.value) == (topic, 3, b"t", b"3")
        assert msg.timestamp_ms > 0
        # records 0-5 stored, 6-9 still in flight: commit the position after 5 only
        p = got.partitions[0]
        await first.commit_positions({(topic, p): 6})
    finally:
        await first.stop()

    second = FastKafkaConsumer(kafka_bootstrap, [topic], group)
    await second.start()
    try:
        rest = await _take(second, 4)
    finally:
        await second.stop()
    assert [m.value for m in rest] == [b"6", b"7", b"8", b"9"]
