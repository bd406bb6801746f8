"""``dnsflow tap``: receive dnstap from existing resolvers and publish events with identity.

Identity and publishing options are the edge's (``dnsflow.edge.cli.overrides`` reads them),
so ``--tenant-map``/``--kubernetes`` and an ``edge:`` config section mean the same here.
"""

from __future__ import annotations

import argparse
from typing import Any

from dnsflow.edge.cli import add_identity_flags, overrides


def register(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("tap")
    g.add_argument("--listen", action="append", dest="tap_listen", metavar="ENDPOINT",
                   help="unix:PATH or tcp:HOST:PORT a dnstap sender connects to (Frame "
                   "Streams); repeat for several (default: tap.listen of the config)")
    add_identity_flags(g)
    g.add_argument("--name", metavar="NAME", help="this tap's name (spool directory, Kafka "
                   "client id; default hostname); events carry the sender's dnstap identity")
    g.add_argument("--pair-timeout", type=float, metavar="SECONDS",
                   help="how long a query waits for its response (default 2)")
    g.add_argument("--max-pending", type=int, metavar="N",
                   help="queries waiting for a response at once (default 100000)")
    g.add_argument("--spool-dir", metavar="DIR", help="event spool while Kafka is away")
    g.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve /metrics /healthz /readyz here")
    parser.set_defaults(func=run)


def options(args: argparse.Namespace, section: dict[str, Any]) -> dict[str, Any]:
    """The config's ``tap:`` section (listen, pair_timeout, max_pending, name), then flags;
    identity and publishing flags are the edge's (``dnsflow.edge.cli.overrides``)."""
    from dnsflow.cli import UsageError

    kw = {**section, **overrides(args)}
    if args.tap_listen:
        kw["listen"] = args.tap_listen
    if not kw.get("listen"):
        raise UsageError("dnsflow tap: --listen unix:PATH|tcp:HOST:PORT is required (or "
                         "tap.listen in the config file)")
    if args.pair_timeout is not None:
        kw["pair_timeout"] = args.pair_timeout
    if args.max_pending is not None:
        kw["max_pending"] = args.max_pending
    return kw


def run(args: argparse.Namespace) -> int:
    import logging

    from dnsflow.cli import settings_from_args
    from dnsflow.edge.lifecycle import start_bus, until_signalled
    from dnsflow.edge.tap.service import build
    from dnsflow.gctune import tune_for_batches
    from dnsflow.runner import run_async

    settings = settings_from_args(args)
    kw = options(args, dict(getattr(settings, "tap", None) or {}))
    log = logging.getLogger("dnsflow.edge.tap")
    if not settings.kafka:
        log.warning("no --kafka: events stay in this process's in-process bus; pass --kafka "
                    "to publish them to dnsflow.events")

    async def main() -> int:
        bus = await start_bus(settings, log)
        try:
            tap = build(settings, bus, **kw)
            await tap.start()
        except BaseException:
            await bus.stop()
            raise
        # two frames per query allocate short-lived objects by the hundred thousand a second;
        # the pending table is long-lived: no full collections over it (as the edge does)
        tune_for_batches(50_000)
        print(f"dnsflow tap: listening on {' '.join(tap.status()['listen'])}", flush=True)
        await until_signalled()
        await tap.stop()
        st = tap.status()
        print(f"dnsflow tap: frames={st['frames']} events={st['events_built']} "
              f"published={st['events'].get('published', 0)} "
              f"unpaired={st['pairing'].get('unpaired', 0)} "
              f"decode_errors={st['decode_errors']} "
              f"dropped={st['events'].get('dropped', 0)}", flush=True)
        await bus.stop()
        return 0

    return run_async(main())
