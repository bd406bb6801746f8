"""``dnsflow streams --kafka BOOTSTRAP``: the faust-streaming worker."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rules", metavar="FILE", help="alert rules YAML (overrides "
                        "streams.alert_rules)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import faust

    from dnsflow.cli import UsageError, settings_from_args
    from streams.faust_app import make_app

    settings = settings_from_args(args)
    if not settings.kafka:
        raise UsageError("dnsflow streams: needs --kafka BOOTSTRAP (or kafka: in the config); "
                         "without Kafka the streams run inside 'dnsflow up'")
    if args.rules:
        settings = settings.model_copy(update={"streams": {**settings.streams,
                                                           "alert_rules": args.rules}})
    app = make_app(settings)
    worker = faust.Worker(app, loglevel=args.log_level.lower(), quiet=True)
    worker.execute_from_commandline()
    return 0
