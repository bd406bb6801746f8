"""A 3-node KRaft cluster (``KAFKA_BROKERS=3 scripts/kafka-local``) loses the leader of the
events partitions (SIGKILL) under load and gets it back (#16): every query answered, every
event once in Kafka and once in ClickHouse (chDB), the policy version published while the
node was down in force at the edge. The short form of ``python -m bench.kafka_failover``
(one kill, 12 000 queries); the test starts and stops its own cluster, so it needs Java and
Maven like every Kafka test (skipped without them unless ``DNSFLOW_REQUIRE_KAFKA=1``), plus
unbound and dnsperf (scripts/install-peers)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from bench.kafka_failover import run

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


def _missing() -> list[str]:
    return [tool for tool in ("java", "mvn", "unbound", "dnsperf") if not shutil.which(tool)]


def test_leader_killed_under_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    missing = _missing()
    if missing:
        if os.environ.get("DNSFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"needed for the Kafka cluster test: {', '.join(missing)}")
        pytest.skip(f"not installed: {', '.join(missing)}")
    args = argparse.Namespace(qps=800, seconds=15.0, kills=1, down=6.0, kafka_timeout=30.0,
                              streams=False, idle_advance=2.0)
    got = run(args, tmp_path)
    assert got["leader_kills"] == 1
    assert got["lost"] == 0, got
    assert got["duplicates"] == 0, got
    # 12 000 dnsperf queries plus the readiness and policy probes the bench sends itself
    assert got["answered"] >= 12_000
    assert got["answered"] == got["events_in_kafka"] == got["rows_in_clickhouse"], got
