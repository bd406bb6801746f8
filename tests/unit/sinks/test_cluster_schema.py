"""``dnsflow sink --migrate --cluster NAME --dry-run`` (issue #16): the cluster form of the
schema, every statement checked by ClickHouse's own parser (chDB ``EXPLAIN AST``). No
ClickHouse server or keeper runs here, so replication is not exercised: what is shown is that
each statement parses and has the shape a cluster needs."""

from __future__ import annotations

import re

import pytest

from dnsflow.cli import main
from dnsflow.sinks.dsn import connect
from dnsflow.sinks.migrate import TIME_COLUMNS, Plan


def _statements(capsys, *args: str) -> list[str]:
    assert main(["sink", "--migrate", "--dry-run", *args]) == 0
    out = capsys.readouterr().out
    return [s.strip() for s in out.split(";\n\n") if s.strip()]


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.mktemp('parse') / 'chdb'}")
    yield client
    client.close()


def test_every_cluster_statement_parses(capsys, chdb) -> None:
    stmts = _statements(capsys, "--cluster", "prod")
    assert len(stmts) > 30
    for s in stmts:
        chdb.query(f"EXPLAIN AST {s}")  # raises on a syntax error
        assert " ON CLUSTER prod " in s.replace("\n", " ") + " ", s[:120]


def test_cluster_shape(capsys) -> None:
    text = "\n".join(_statements(capsys, "--cluster", "prod"))
    for table in TIME_COLUMNS:  # every stored table: replicated shards + a Distributed front
        assert re.search(rf"CREATE TABLE IF NOT EXISTS dnsflow\.{table}_local ON CLUSTER prod"
                         rf".*?ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{{shard\}}/"
                         rf"dnsflow/{table}_local', '\{{replica\}}'\)", text, re.S), table
        assert (f"CREATE TABLE IF NOT EXISTS dnsflow.{table} ON CLUSTER prod AS "
                f"dnsflow.{table}_local ENGINE = Distributed(prod, dnsflow, {table}_local"
                in text), table
        assert f"ALTER TABLE dnsflow.{table}_local ON CLUSTER prod MODIFY TTL" in text, table
    # rows with Kafka coordinates go to the shard of their coordinates (replays dedupe there)
    assert "Distributed(prod, dnsflow, dns_events_local, cityHash64(kafka_partition, " in text
    # rollups run on each shard; the sink's ingest view writes through the Distributed table
    assert "TO dnsflow.dns_minute_local AS" in text and "FROM dnsflow.dns_events_local" in text
    assert "dns_events_ingest_mv ON CLUSTER prod TO dnsflow.dns_events AS" in text
    assert "non_replicated_deduplication_window" not in text
    # a new column reaches the Distributed table too, without the local table's codec
    assert ("ALTER TABLE dnsflow.dns_events ON CLUSTER prod ADD COLUMN IF NOT EXISTS "
            "kafka_source LowCardinality(String)\n" in text + "\n")


def test_single_node_plan_is_the_migration_files(capsys, chdb) -> None:
    stmts = _statements(capsys)
    assert not any("ON CLUSTER" in s for s in stmts)
    plan = Plan()
    assert stmts == [s.strip() for s in plan.all_statements()]
    assert "ENGINE = ReplacingMergeTree" in "\n".join(stmts)
    for s in stmts:
        chdb.query(f"EXPLAIN AST {s}")


@pytest.mark.parametrize("args", [["--cluster", "prod;drop"], ["--cluster", "9x"]])
def test_bad_cluster_name_is_refused(capsys, args) -> None:
    assert main(["sink", "--migrate", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert "cluster" in err and "letters, digits and _" in err and "Traceback" not in err


def test_dry_run_needs_migrate(capsys) -> None:
    assert main(["sink", "--dry-run"]) == 2
    assert "--dry-run goes with --migrate" in capsys.readouterr().err
