"""``python -m bench.kafka_produce`` against the real broker: its figure is per delivered
record, so every record it says it produced must be in the topic, exactly once."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from harness.peers import ROOT, count_events

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def test_every_record_is_delivered_and_the_line_names_the_cost(kafka_bootstrap: str,
                                                                topic_prefix: str) -> None:
    topic = topic_prefix + "events"
    out = subprocess.run([sys.executable, "-m", "bench.kafka_produce", "--kafka",
                          kafka_bootstrap, "--topic", topic, "--records", "3000", "--rounds",
                          "1"], cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"bench kafka_produce: us_per_record=([\d.]+) "
                     r"us_per_record_not_idempotent=([\d.]+) ratio=([\d.]+) records=(\d+)", last)
    assert m, last
    assert float(m[1]) > 0 and float(m[2]) > 0
    assert int(m[4]) == 3000 * 2  # the counted rounds: one of each producer
    # 2 warm-ups + 2 counted children, each 1 000 to connect + 3 000 measured
    assert asyncio.run(count_events(kafka_bootstrap, topic)) == 4 * (1000 + 3000)


def test_too_few_records_is_refused() -> None:
    out = subprocess.run([sys.executable, "-m", "bench.kafka_produce", "--records", "10"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "--records must be at least 1000" in out.stderr
