"""``dnsflow sink``: apply the ClickHouse schema and/or run the Kafka → ClickHouse sink.

* ``dnsflow sink --migrate``          apply the schema, print what changed, exit 0;
* ``dnsflow sink --kafka B``          apply the schema (idempotent) and run until SIGTERM/SIGINT;
* ``dnsflow sink --migrate --run ...`` the same as the previous line, spelled out.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--migrate", action="store_true",
                        help="apply the schema (sinks/schema/*.sql) and exit, unless --run")
    parser.add_argument("--run", action="store_true",
                        help="with --migrate: keep running the sink afterwards")
    parser.add_argument("--cluster", metavar="NAME",
                        help="a ClickHouse cluster: DDL ON CLUSTER, Replicated*MergeTree "
                        "tables and Distributed tables under the usual names (sink.cluster)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --migrate: print the statements a fresh migration runs "
                        "(each ends in ';' and a blank line) and connect to nothing")
    parser.add_argument("--group", help="Kafka consumer group (default dnsflow-sink)")
    parser.add_argument("--batch-rows", type=int, metavar="N",
                        help="insert when N records are gathered (default 50000)")
    parser.add_argument("--batch-ms", type=int, metavar="MS",
                        help="... or when the oldest gathered record is MS old (default 1000)")
    parser.add_argument("--commit-ms", type=int, metavar="MS",
                        help="commit offsets at most every MS (default 2000; 0 = every batch)")
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS",
                        help="exit once nothing new arrived for SECONDS (drain and stop)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve /metrics /healthz /readyz here (default 127.0.0.1:9156; "
                        "PORT alone is loopback; 'off' serves nothing)")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace, settings: Any) -> Any:
    from pydantic import ValidationError

    from dnsflow.settings import ConfigError
    from dnsflow.sinks.config import SinkConfig, sink_config

    base = sink_config(settings).model_dump()
    for flag, key in (("group", "group"), ("batch_rows", "batch_rows"), ("batch_ms", "batch_ms"),
                      ("commit_ms", "commit_ms"), ("cluster", "cluster")):
        value = getattr(args, flag, None)
        if value is not None:
            base[key] = value
    try:
        return SinkConfig.model_validate(base)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import UsageError, settings_from_args
    from dnsflow.sinks.dsn import ConnectError, DsnError, parse, quiet_client_logs

    settings = settings_from_args(args)
    quiet_client_logs(args)
    config = _config(args, settings)
    try:
        dsn = parse(settings.clickhouse_dsn)
    except DsnError as exc:
        raise UsageError(f"dnsflow sink: {exc}") from None
    if args.run and not args.migrate:
        raise UsageError("dnsflow sink: --run only makes sense with --migrate")
    listen = getattr(args, "metrics_listen", None)
    if listen is not None and listen.strip().lower() != "off":
        from dnsflow.ops import parse_listen

        try:
            parse_listen(listen)
        except ValueError as exc:
            raise UsageError(f"dnsflow sink: --metrics-listen {exc}") from None
    if args.dry_run:
        if not args.migrate or args.run:
            raise UsageError("dnsflow sink: --dry-run goes with --migrate (and not --run)")
        from dnsflow.sinks.migrate import Plan

        for stmt in Plan(config.retention_days, config.cluster).all_statements():
            print(stmt + ";\n")
        return 0
    try:
        if args.migrate and not args.run:
            return _migrate_only(dsn, config)
        if not settings.kafka:
            raise UsageError(
                "dnsflow sink: needs --kafka BOOTSTRAP (the in-process bus only exists inside "
                "`dnsflow up` / `dnsflow demo`, which run the sink themselves)"
            )
        return _run_sink(settings, dsn, config, args.idle_exit, listen)
    except ConnectError as exc:
        print(f"dnsflow sink: {exc}", file=sys.stderr)
        return 1


def _migrate_only(dsn: Any, config: Any) -> int:
    from dnsflow.progress import Progress
    from dnsflow.sinks.dsn import connect
    from dnsflow.sinks.migrate import migrate

    client = connect(dsn)
    try:
        progress = Progress("migrate")
        try:
            result = migrate(client, config.retention_days, config.cluster, progress)
        finally:
            progress.done()
    except Exception as exc:
        from dnsflow.sinks.query import clean_error

        print(f"dnsflow sink: migration failed at {dsn}: {clean_error(exc, dsn.raw)}",
              file=sys.stderr)
        return 1
    finally:
        client.close()
    for name in result.applied:
        print(f"applied {name}")
    for name in result.changed:
        print(f"warning: {name} was edited after it was applied (not re-applied)",
              file=sys.stderr)
    for name in result.retention:
        print(f"retention of {name}: {config.retention_days[name]} days")
    print(f"schema up to date at {dsn} ({len(result.applied)} applied, "
          f"{len(result.already)} already present)")
    return 0


def _run_sink(settings: Any, dsn: Any, config: Any, idle_exit: float | None,
              metrics_listen: str | None = None) -> int:
    import asyncio
    import json
    import signal

    from dnsflow.bus import BusError, bus_for
    from dnsflow.gctune import tune_for_batches
    from dnsflow.sinks.service import SinkService

    tune_for_batches()  # this process only moves batches

    async def main() -> int:
        bus = bus_for(settings)
        try:
            await bus.start()
        except BusError as exc:
            print(f"dnsflow sink: {exc}", file=sys.stderr)
            return 1
        service = SinkService(bus, dsn, config, settings.home, metrics=True,
                              metrics_listen=metrics_listen)
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()

        def on_signal() -> None:
            if stopping.is_set():
                service.sink.abandon()  # second signal: stop retrying, leave offsets alone
            stopping.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)  # "where is it stuck?"
        try:
            try:
                await service.start()
            except OSError as exc:  # e.g. --metrics-listen on an address in use
                print(f"dnsflow sink: {exc.strerror or exc}", file=sys.stderr)
                return 1
            print(f"dnsflow sink: {', '.join(service.sink.specs)} -> {dsn} "
                  f"(group {config.group})", file=sys.stderr, flush=True)
            waiter = asyncio.create_task(stopping.wait())
            idle = asyncio.create_task(_idle(service, idle_exit)) if idle_exit else None
            loop_task = asyncio.create_task(service.wait())
            await asyncio.wait(
                [t for t in (waiter, idle, loop_task) if t is not None],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for t in (waiter, idle):
                if t is not None:
                    t.cancel()
        finally:
            await service.stop()
            await bus.stop()
        print(json.dumps(service.status(), sort_keys=True), flush=True)
        return 1 if service.error else 0

    return asyncio.run(main())


def _dump_tasks() -> None:
    """On SIGUSR1: every asyncio task's stack to stderr (diagnosing a stuck sink)."""
    import asyncio

    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}", file=sys.stderr)
        coro: Any = task.get_coro()
        while coro is not None:  # follow the await chain down to where it waits
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                print(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}",
                      file=sys.stderr)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    sys.stderr.flush()


async def _idle(service: Any, seconds: float) -> None:
    import asyncio
    import time

    sink = service.sink
    while True:
        await asyncio.sleep(min(0.2, seconds))
        if not sink.busy and time.monotonic() - sink.last_activity >= seconds:
            return
