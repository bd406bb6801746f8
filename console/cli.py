"""``dnsflow console [--listen ADDR] [--tokens FILE]``: the web console over ClickHouse.

Without ``--tokens`` anyone who reaches the port reads every tenant, so the console then
refuses any address but loopback. chDB can be opened by one process only: while ``dnsflow
up`` holds the data directory, open the console it serves instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8484"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                        help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}; a non-loopback "
                             "address needs --tokens)")
    parser.add_argument("--tokens", metavar="FILE",
                        help="YAML 'tokens: {<token>: <tenant> | \"*\"}': bearer tokens, each "
                             "seeing one tenant (or every one)")
    parser.add_argument("--tenant-map", metavar="FILE",
                        help="the edge's static tenant map, for explaining a client address "
                             "(default: edge.tenant_map, else the demo's map under --home)")
    parser.add_argument("--policies", metavar="PATH", action="append", default=[],
                        help="explain against these policy files (repeatable; default: the "
                             "published topic with --kafka, else the embedded policy folder)")
    parser.add_argument("--access-sql", action="store_true",
                        help="print the statements that give each tenant of --tokens its own "
                             "read-only ClickHouse user with row policies, and exit")
    parser.add_argument("--server-users", action="store_true",
                        help="on a ClickHouse server, read each tenant's rows as its own user "
                             "(made by --access-sql), so the server enforces the tenant too")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    parser.set_defaults(func=run)


def parse_listen(value: str) -> tuple[str, int]:
    from dnsflow.cli import UsageError

    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"dnsflow console: --listen {value!r}: use HOST:PORT "
                         "(e.g. 127.0.0.1:8484)")
    return host, int(port)


def policy_paths(settings: Any, given: list[str]) -> list[str]:
    """The files to explain against when no bus carries the published policies."""
    if given:
        return given
    home = Path(settings.home)
    candidates = [settings.policies.get("dir"), home / "policies", home / "demo" / "policies"]
    return [str(p) for p in candidates if p and Path(p).is_dir()][:1]


def tenant_map_path(settings: Any, given: str | None) -> str | None:
    if given:
        return given
    configured = settings.edge.get("tenant_map")
    if configured:
        return str(configured)
    demo = Path(settings.home) / "demo" / "tenants.yaml"
    return str(demo) if demo.is_file() else None


def _tokens(args: argparse.Namespace, host: str) -> dict[str, str] | None:
    """The ``--tokens`` file's tokens; None (no token needed) only on a loopback address,
    since the console then shows every tenant to whoever connects."""
    from dnsflow.cli import UsageError
    from dnsflow.console.auth import TokenFileError, is_loopback, load_tokens

    if args.tokens:
        try:
            return load_tokens(args.tokens)
        except TokenFileError as exc:
            raise UsageError(f"dnsflow console: {exc}") from None
    if not is_loopback(host):
        raise UsageError(
            f"dnsflow console: --listen {args.listen}: without --tokens FILE the console "
            "shows every tenant to whoever connects, so it listens on loopback only "
            "(127.0.0.1, ::1); give --tokens to serve other addresses")
    return None


def _server_users(tokens: dict[str, str] | None) -> dict[str, tuple[str, str]]:
    """{tenant or "*": (user, password)} of the users ``--access-sql`` creates."""
    from dnsflow.console.access import password_for, user_for

    tenants = set((tokens or {}).values())
    return {t: (user_for(t), password_for(t, tokens or {})) for t in tenants}


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import UsageError, settings_from_args

    settings = settings_from_args(args)
    host, port = parse_listen(args.listen)
    if (args.access_sql or args.server_users) and not args.tokens:
        flag = "--access-sql" if args.access_sql else "--server-users"
        raise UsageError(f"dnsflow console: {flag} needs --tokens FILE (one user per tenant "
                         "of the token file)")
    tokens = _tokens(args, host)
    if args.access_sql:
        from dnsflow.console.access import access_statements

        assert tokens is not None
        print("".join(f"{statement};\n" for statement in access_statements(tokens)), end="")
        return 0
    for path in args.policies:
        if not Path(path).exists():
            raise UsageError(f"dnsflow console: --policies {path}: no such file or directory")
    from dnsflow.console.runtime import open_clickhouse

    client_factory = open_clickhouse(settings, users=_server_users(tokens)
                                     if args.server_users else None)
    return asyncio.run(_serve(args, settings, client_factory, tokens, (host, port)))


async def _serve(args: argparse.Namespace, settings: Any, client_factory: Any,
                 tokens: dict[str, str] | None, listen: tuple[str, int]) -> int:
    from dnsflow.bus import open_bus
    from dnsflow.console.runtime import ConsoleRuntime

    bus = open_bus(settings.kafka, settings.topic_prefix) if settings.kafka else None
    runtime = ConsoleRuntime(
        client_factory, bus=bus, tokens=tokens, listen=listen,
        policies=args.policies or ([] if bus else policy_paths(settings, [])),
        tenant_map=tenant_map_path(settings, args.tenant_map),
        tail_note="no live event bus: the in-process bus lives inside `dnsflow up` and "
                  "`dnsflow demo` (which serve this console themselves); start the console "
                  "with --kafka BOOTSTRAP to tail Kafka")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if bus is not None:
        await bus.start()
    try:
        await runtime.start()
        try:
            print(f"dnsflow console: {runtime.url}", flush=True)
            print(f"  clickhouse: {runtime.clickhouse_label(settings)}; live tail: "
                  f"{'kafka ' + settings.kafka if bus else 'none (no bus)'}; explain: "
                  f"{runtime.explainer.policies.label}", file=sys.stderr, flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
        finally:
            await runtime.stop()
    finally:
        if bus is not None:
            await bus.stop()
    return 0
