"""`dnsflow sink --migrate` and `dnsflow query` as a user runs them (chDB under --home)."""

from __future__ import annotations

import csv
import io

import orjson
import pytest

from dnsflow.cli import main
from dnsflow.sinks.dsn import connect


@pytest.fixture
def home(tmp_path, events):
    """A data directory with the schema and three stored events."""
    assert main(["sink", "--migrate", "--home", str(tmp_path)]) == 0
    client = connect(f"chdb://{tmp_path / 'chdb'}")
    try:
        client.command(
            "INSERT INTO dnsflow.dns_events (ts, tenant, namespace, edge, client_ip, transport, "
            "qname, qtype, rcode, latency_us, cache, decision, rule, upstream, v, "
            "kafka_partition, kafka_offset) VALUES "
            "(now64(6), 'acme', 'web', 'e', '10.0.0.1', 'udp', 'a.example', 'A', 'NOERROR', 5, "
            "'miss', 'allow', '', '', 1, 0, 0), "
            "(now64(6), 'acme', 'web', 'e', '10.0.0.1', 'udp', 'b.example', 'A', 'NXDOMAIN', 7, "
            "'miss', 'deny', 'isolation:acme', '', 1, 0, 1), "
            "(now64(6), 'zeta', 'db', 'e', '10.0.1.1', 'tcp', 'c.example', 'AAAA', 'NOERROR', 9, "
            "'hit', 'allow', '', '', 1, 1, 0)"
        )
    finally:
        client.close()
    return tmp_path


SQL = "SELECT tenant, count() AS n FROM dnsflow.dns_events GROUP BY tenant ORDER BY tenant"


def test_migrate_twice_applies_nothing_the_second_time(tmp_path, capsys):
    assert main(["sink", "--migrate", "--home", str(tmp_path)]) == 0
    assert "applied 002_dns_events.sql" in capsys.readouterr().out
    assert main(["sink", "--migrate", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "applied" not in out.replace("0 applied", "") and "schema up to date" in out


def test_table_json_and_csv(home, capsys):
    assert main(["query", "--home", str(home), SQL]) == 0
    table = capsys.readouterr().out
    # ClickHouse's own PrettyCompact: a header box, one numbered line per row
    lines = [line.replace("│", " ").split() for line in table.splitlines()]
    assert "tenant" in lines[0][0] and "n" in lines[0][-1]
    assert lines[1] == ["1.", "acme", "2"] and lines[2] == ["2.", "zeta", "1"]
    assert main(["query", "--home", str(home), "--format", "json", SQL]) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"tenant": "acme", "n": 2}, {"tenant": "zeta", "n": 1}]
    assert main(["query", "--home", str(home), "-f", "csv", SQL]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["tenant", "n"], ["acme", "2"], ["zeta", "1"]]


def test_any_clickhouse_format_and_the_statements_own(home, capsys):
    assert main(["query", "--home", str(home), "-f", "TSVWithNames", SQL]) == 0
    assert capsys.readouterr().out == "tenant\tn\nacme\t2\nzeta\t1\n"
    assert main(["query", "--home", str(home), SQL + " FORMAT CSV"]) == 0
    assert capsys.readouterr().out == '"acme",2\n"zeta",1\n'
    assert main(["query", "--home", str(home), "-f", "Nope", SQL]) == 1
    assert "Unknown format Nope" in capsys.readouterr().err


@pytest.mark.parametrize("sql", [
    "DROP TABLE dnsflow.dns_events",
    "TRUNCATE TABLE dnsflow.dns_events",
    "ALTER TABLE dnsflow.dns_events DELETE WHERE 1",
    "INSERT INTO dnsflow.alerts (rule) VALUES ('x')",
    "CREATE TABLE dnsflow.x (a Int8) ENGINE = Memory",
    "/* SELECT */ DROP TABLE dnsflow.dns_events",
    "SELECT 1; DROP TABLE dnsflow.dns_events",
    "SELECT 1 INTO OUTFILE 'x.csv'",
    "SET readonly = 0",
])
def test_read_only_unless_write(home, capsys, sql):
    assert main(["query", "--home", str(home), sql]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--write" in err or "Multi-statements are not allowed" in err
    assert main(["query", "--home", str(home), "-f", "csv", SQL]) == 0  # nothing was changed
    assert capsys.readouterr().out.count("\n") == 3


def test_write_runs_ddl_and_says_ok(home, capsys):
    assert main(["query", "--home", str(home), "--write",
                 "CREATE TABLE dnsflow.scratch (a Int8) ENGINE = Memory"]) == 0
    assert capsys.readouterr().out == "Ok.\n"
    assert main(["query", "--home", str(home), "EXISTS TABLE dnsflow.scratch", "-f", "csv"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1"


def test_piped_to_head_is_quiet(home):
    import subprocess
    import sys

    sql = "SELECT number FROM numbers(2000000)"
    res = subprocess.run(
        f"{sys.executable} -m dnsflow query --home {home} -f TSV '{sql}' | head -n 2",
        shell=True, capture_output=True, text=True, timeout=120)
    assert res.stdout == "0\n1\n"
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


def test_bad_sql_is_one_line_with_clickhouse_reason(home, capsys):
    assert main(["query", "--home", str(home), "SELECT nope FROM dnsflow.dns_events"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("dnsflow query: ") and "Unknown expression identifier" in err
    assert "Traceback" not in err and "FORMAT Native" not in err


def test_no_data_yet_says_so(tmp_path, capsys):
    assert main(["query", "--home", str(tmp_path / "empty"), "SELECT 1"]) == 1
    assert "nothing has been stored there yet" in capsys.readouterr().err


def test_sink_without_kafka_explains(tmp_path, capsys):
    assert main(["sink", "--home", str(tmp_path)]) == 2
    assert "needs --kafka" in capsys.readouterr().err


def test_unreachable_server_is_one_redacted_line(capsys):
    dsn = "http://bob:hunter2@127.0.0.1:1/dnsflow"
    assert main(["query", "--clickhouse", dsn, "SELECT 1"]) == 1
    assert main(["sink", "--migrate", "--clickhouse", dsn]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err and "bob:***@127.0.0.1:1" in err
    assert err.count("connection refused") == 2 and len(err.strip().splitlines()) == 2


def test_directory_held_by_another_process_is_named(tmp_path, capsys):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from dnsflow.sinks.dsn import connect; "
         f"c = connect('chdb://{tmp_path / 'chdb'}'); c.command('SELECT 1'); "
         "print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["query", "--home", str(tmp_path), "SELECT 1"]) == 1
        err = capsys.readouterr().err
        assert f"held by process {holder.pid}" in err and "serves no query endpoint" in err
    finally:
        holder.kill()
        holder.wait(timeout=10)
