"""Shared fixtures: the real local Kafka, unique topic prefixes, chDB paths.

``make test`` starts one broker for the session and passes it as ``DNSFLOW_TEST_KAFKA``.
Run outside ``make test``, the fixture starts (and stops) its own broker with
``scripts/kafka-local``. Kafka tests are never skipped when ``DNSFLOW_REQUIRE_KAFKA=1``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker on loopback."""
    given = os.environ.get("DNSFLOW_TEST_KAFKA")
    if given:
        yield given
        return
    from edge.peers import KafkaLocal

    kafka = KafkaLocal(tmp_path_factory.mktemp("kafka-local"))
    try:
        bootstrap = kafka.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("DNSFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"local Kafka did not start: {exc}")
        pytest.skip(f"local Kafka not available: {exc}")
    try:
        yield bootstrap
    finally:
        kafka.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix per test so tests never read each other's records."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def chdb_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"
