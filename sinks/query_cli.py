"""``dnsflow query SQL``: run SQL against the configured ClickHouse and print the result.

Where it runs, in order: an ``http(s)://`` DSN directly; for chDB, the query endpoint of the
process that owns the data directory (``<home>/query.endpoint``) when that process is alive,
else the chDB directory itself; if another process holds it without an endpoint, say so.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnsflow.procs import pid_alive


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", metavar="SQL", help="one SQL statement ('-' reads it from stdin)")
    parser.add_argument("--format", "-f", default="table", metavar="FORMAT",
                        help="table (default), json (one object per row), csv, or any "
                        "ClickHouse output format (Vertical, TSV, Markdown, ...)")
    parser.add_argument("--write", action="store_true",
                        help="allow statements that change data or schema (INSERT, ALTER, "
                        "CREATE, DROP, TRUNCATE, ...); without it only reads run")
    parser.set_defaults(func=run)


class Unavailable(RuntimeError):
    """ClickHouse cannot be reached from here; the message says why and what to do."""


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import UsageError, settings_from_args
    from dnsflow.sinks.dsn import DsnError, parse, quiet_client_logs
    from dnsflow.sinks.query import QueryError

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    if not sql.strip():
        raise UsageError("dnsflow query: empty SQL")
    settings = settings_from_args(args)
    quiet_client_logs(args)
    try:
        dsn = parse(settings.clickhouse_dsn)
    except DsnError as exc:
        raise UsageError(f"dnsflow query: {exc}") from None
    try:
        out = execute(dsn, Path(settings.home), Request(sql, args.format, args.write))
    except QueryError as exc:
        print(f"dnsflow query: {exc}", file=sys.stderr)
        return 1
    except Unavailable as exc:
        print(f"dnsflow query: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0


@dataclass(frozen=True)
class Request:
    sql: str
    format: str = "table"
    write: bool = False


def execute(dsn: Any, home: Path, req: Request) -> bytes:
    if dsn.embedded:
        via = _through_endpoint(home, dsn.path, req)
        if via is not None:
            return via
        return _direct_chdb(dsn, req)
    return _direct(dsn, req)


def _direct(dsn: Any, req: Request) -> bytes:
    from dnsflow.sinks.dsn import ConnectError, connect, one_line
    from dnsflow.sinks.query import run_formatted

    try:
        client = connect(dsn)
    except ConnectError as exc:
        raise Unavailable(f"cannot reach ClickHouse: {exc}") from None
    except Exception as exc:
        raise Unavailable(f"cannot reach ClickHouse at {dsn}: {one_line(exc, dsn.raw)}") from None
    try:
        return run_formatted(client, req.sql, req.format, write=req.write,
                             secret_source=dsn.raw)
    finally:
        client.close()


def _direct_chdb(dsn: Any, req: Request) -> bytes:
    path = Path(dsn.path)
    owner = _owner_pid(path)
    if owner is not None:  # checked first: opening a held directory only prints noise
        raise Unavailable(
            f"chDB data directory {path} is held by process {owner}, which serves no "
            "query endpoint (only one process may open chDB): stop it, or query it "
            "through ClickHouse server with --clickhouse http://..."
        )
    if not (path / "metadata").is_dir():
        raise Unavailable(
            f"no data at {path}: nothing has been stored there yet (run `dnsflow demo`, "
            "`dnsflow up` or `dnsflow sink`, or pass --home/--clickhouse)"
        )
    return _direct(dsn, req)


def _owner_pid(path: Path) -> int | None:
    """The live process that holds a chDB directory, from ClickHouse's ``status`` file."""
    try:
        for line in (path / "status").read_text().splitlines():
            if line.startswith("PID:"):
                pid = int(line.split(":", 1)[1])
                if pid != os.getpid() and pid_alive(pid):
                    return pid
    except (OSError, ValueError):
        return None
    return None


def _through_endpoint(home: Path, chdb_path: str, req: Request) -> bytes | None:
    """Ask the owning process, or None when there is no live endpoint for this directory."""
    import httpx
    import orjson

    from dnsflow.sinks.endpoint import ENDPOINT_FILE
    from dnsflow.sinks.query import QueryError

    candidates = [home / ENDPOINT_FILE, Path(chdb_path).parent / ENDPOINT_FILE]
    for file in dict.fromkeys(candidates):
        try:
            info = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if (info.get("path") != os.path.realpath(chdb_path)
                or not pid_alive(int(info.get("pid", 0)))):
            continue
        try:
            r = httpx.post(
                f"{info['url']}/query",
                content=orjson.dumps({"sql": req.sql, "format": req.format, "write": req.write}),
                headers={"Authorization": f"Bearer {info['token']}"}, timeout=300,
                trust_env=False,
            )
        except httpx.HTTPError:
            continue  # stale file: the process is gone or restarting
        if r.status_code == 200:
            return r.content
        try:
            message = r.json().get("error", r.text)
        except ValueError:
            message = r.text
        raise QueryError(message)
    return None
