"""One console instance: its ClickHouse client, policy source, live feed and HTTP listener.

Used by ``dnsflow console`` (its own process) and by ``service.py`` (inside ``dnsflow up``
and ``demo``, sharing their bus and their chDB engine). The ClickHouse client is opened
with ``readonly = 2``: the console cannot write, whatever SQL it sends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiohttp import web

from dnsflow.bus import Bus
from dnsflow.console.auth import ALL, Auth
from dnsflow.console.explain import Explainer, FilePolicies, TopicPolicies
from dnsflow.console.queries import Queries
from dnsflow.console.server import Console
from dnsflow.console.tail import EventFeed
from dnsflow.sinks.api import ConnectError, DsnError, connect, parse

READONLY = {"readonly": 2}


def _holder(path: Path) -> int | None:
    """The live process other than us holding a chDB directory (its ``status`` file)."""
    try:
        text = (path / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("PID:"):
            try:
                pid = int(line.split(":", 1)[1])
                if pid != os.getpid():
                    os.kill(pid, 0)
                    return pid
            except (ValueError, ProcessLookupError):
                return None
            except PermissionError:
                return pid
    return None


class Clients:
    """Read-only clients of the configured ClickHouse: one for every tenant, or with
    ``users`` ({tenant or "*": (user, password)}, ``access.py``) the tenant's own server user,
    which the server's row policies confine to that tenant's rows."""

    def __init__(self, dsn: Any, users: dict[str, tuple[str, str]] | None = None) -> None:
        self.dsn = dsn
        self.users = users

    def route(self, tenant: str) -> str:
        """The key of the client a statement bound to ``tenant`` runs on ('' = every one)."""
        if not self.users:
            return ""
        return tenant if tenant and tenant in self.users else ALL

    def __call__(self, key: str = "") -> Any:
        if not self.users:
            return connect(self.dsn, **READONLY)
        if key not in self.users:
            raise PermissionError("no ClickHouse user for every tenant: the token file has "
                                  "no \"*\" token")
        return connect(self.dsn, credentials=self.users[key], **READONLY)


def open_clickhouse(settings: Any, *, shared: bool = False,
                    users: dict[str, tuple[str, str]] | None = None) -> Clients:
    """Clients for the configured ClickHouse, checked now so a problem is one clear line at
    start (``shared``: inside the process owning chDB; ``users``: ``--server-users``)."""
    from dnsflow.cli import CommandError, UsageError

    try:
        dsn = parse(settings.clickhouse_dsn)
    except DsnError as exc:
        raise UsageError(f"dnsflow console: {exc}") from None
    if users and dsn.embedded:
        raise UsageError("dnsflow console: --server-users needs a ClickHouse server "
                         "(http(s):// DSN): chDB has no users or row policies")
    if dsn.embedded and not shared:
        path = Path(dsn.path or "")
        pid = _holder(path)
        if pid is not None:
            raise CommandError(
                f"chDB data directory {path} is held by process {pid} (only one process may "
                "open chDB): use the console that `dnsflow up` serves (it prints its "
                "address), stop that process, or point --clickhouse at a ClickHouse server")
        if not (path / "metadata").is_dir():
            raise CommandError(f"no data at {path}: nothing stored there yet (run `dnsflow "
                               "demo` or `dnsflow up`, or pass --home/--clickhouse)")

    clients = Clients(dsn, users)
    if not shared:
        for key in users or {"": None}:
            try:
                clients(key).close()
            except ConnectError as exc:
                hint = (f" (as {users[key][0]}: have the statements of `dnsflow console "
                        "--tokens FILE --access-sql` been run on the server?)" if users else "")
                raise CommandError(f"{exc}{hint}") from None
    return clients


class ConsoleRuntime:
    def __init__(self, client_factory: Any, *, bus: Bus | None,
                 tokens: dict[str, str] | None, listen: tuple[str, int],
                 policies: list[str], tenant_map: str | None, tail_note: str = "") -> None:
        self.queries = Queries(client_factory, getattr(client_factory, "route", Queries.one))
        self.feed = EventFeed(bus) if bus is not None else None
        source: TopicPolicies | FilePolicies = (
            FilePolicies(policies) if policies or bus is None else TopicPolicies(bus))
        self.explainer = Explainer(source, tenant_map)
        self.console = Console(self.queries, self.explainer, Auth(tokens), self.feed,
                               tail_note=tail_note)
        self.listen = listen
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        await self.explainer.policies.start()
        self._runner = web.AppRunner(self.console.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen[0], self.listen[1])
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            from dnsflow.cli import CommandError

            raise CommandError(f"cannot listen on {self.listen[0]}:{self.listen[1]}: "
                               f"{exc.strerror}") from None
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.explainer.policies.stop()
        self.queries.close()

    @staticmethod
    def clickhouse_label(settings: Any) -> str:
        return str(parse(settings.clickhouse_dsn))
