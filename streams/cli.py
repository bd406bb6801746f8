"""``dnsflow streams --kafka BOOTSTRAP [--workers N]``: the faust-streaming worker(s)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dnsflow.settings import Settings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="FILE", help="alert rules YAML (overrides "
                        "streams.alert_rules)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="run N worker processes in the consumer group (events are "
                             "keyed by tenant, so each tenant stays with one worker)")
    parser.add_argument("--metrics-listen", metavar="HOST:PORT",
                        help="serve /metrics /healthz /readyz here (default 127.0.0.1:9155; "
                        "PORT alone is loopback; 'off' serves nothing; with --workers N, "
                        "worker i uses PORT+i)")
    parser.add_argument("--ready-max-lag", type=int, default=None, metavar="N",
                        help="/readyz fails while more than N events wait (default 100000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import UsageError, settings_from_args

    settings = settings_from_args(args)
    if not settings.kafka:
        raise UsageError("dnsflow streams: needs --kafka BOOTSTRAP (or kafka: in the config); "
                         "without Kafka the streams run inside 'dnsflow up'")
    if not 1 <= args.workers <= 64:
        raise UsageError("dnsflow streams: --workers must be between 1 and 64")
    if args.rules:
        settings = settings.model_copy(update={"streams": {**settings.streams,
                                                           "alert_rules": args.rules}})
    listen = getattr(args, "metrics_listen", None)
    if listen is not None:
        from dnsflow.cli import CommandError
        from dnsflow.ops import check_listen, parse_listen

        try:
            if listen.strip().lower() != "off":
                parse_listen(listen)
            if args.workers == 1:  # with --workers N, worker i checks its own PORT+i
                check_listen(listen)
        except ValueError as exc:
            raise UsageError(f"dnsflow streams: --metrics-listen {exc}") from None
        except OSError as exc:
            raise CommandError(exc.strerror or str(exc)) from None
    if args.workers > 1:
        return supervise(args.workers, listen)
    import asyncio

    import faust

    from dnsflow.gctune import tune_for_batches
    from dnsflow.streams.faust_app import make_app

    # the contract's topics before faust subscribes (a broker would auto-create the events
    # topic with its default partitions, and faust the policies topic uncompacted)
    partitions = asyncio.run(events_partitions(settings))
    kw: dict[str, object] = {"metrics_listen": listen}
    if getattr(args, "ready_max_lag", None) is not None:
        kw["ready_max_lag"] = args.ready_max_lag
    app = make_app(settings, partitions=partitions, **kw)
    tune_for_batches()  # the worker holds a large state and allocates per batch
    worker = faust.Worker(app, loglevel=args.log_level.lower(), quiet=True)
    # faust's terminal spinner sets the root logger to DEBUG so it can spin on every record:
    # then every debug call in aiokafka builds a LogRecord (~3 % of the worker's CPU)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


async def events_partitions(settings: Settings) -> int:
    """Create the contract's topics that are missing (with the settings' replication), then
    the events topic's partition count: the state table must be co-partitioned with it."""
    from dnsflow.bus.kafka import KafkaBus
    from dnsflow.topics import Topics

    assert settings.kafka, "the faust worker needs a Kafka bootstrap"
    bus = KafkaBus(settings.kafka, Topics(settings.topic_prefix),
                   replication=settings.kafka_replication, min_insync=settings.kafka_min_insync)
    await bus.ensure_topics()
    return await bus.partition_count(bus.topics.events) or 1


def without_workers(argv: list[str], drop: tuple[str, ...] = ("--workers",)) -> list[str]:
    """The command line of one worker: the same arguments minus ``--workers`` (and any
    other option in ``drop``, with its value)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in drop:
            skip = True
        elif not any(a.startswith(d + "=") for d in drop):
            out.append(a)
    return out


def worker_listen(listen: str | None, index: int) -> str:
    """Worker ``index``'s metrics address: the given (or default) port plus ``index``."""
    from dnsflow.ops import DEFAULT_PORTS, parse_listen

    if listen is not None and listen.strip().lower() == "off":
        return "off"
    host, port = parse_listen(listen if listen is not None else str(DEFAULT_PORTS["streams"]))
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port + index if port else 0}"


def supervise(n: int, listen: str | None = None) -> int:
    """Start ``n`` single workers with the same arguments (each its own metrics port);
    forward stop signals to them."""
    import signal
    import subprocess
    import sys

    argv = without_workers(sys.argv[1:], ("--workers", "--metrics-listen"))
    procs = [subprocess.Popen([sys.executable, "-m", "dnsflow", *argv, "--metrics-listen",
                               worker_listen(listen, i)]) for i in range(n)]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes) if codes else 0
