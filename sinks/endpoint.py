"""A loopback-only HTTP endpoint that answers ``dnsflow query`` for the process owning chDB.

chDB lets one process open a data directory. While ``dnsflow up`` (or ``dnsflow sink`` on a
chDB DSN) holds it, this endpoint runs the SQL in that process and ``dnsflow query`` finds it
through ``<home>/query.endpoint`` (JSON: url, token, pid, path; mode 0600). The token keeps
other local users out; the listener binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from dnsflow.sinks.query import QueryError, run_formatted, run_sql

log = logging.getLogger(__name__)

ENDPOINT_FILE = "query.endpoint"


class QueryEndpoint:
    def __init__(self, client_factory: Any, home: Path, chdb_path: str) -> None:
        self._client_factory = client_factory
        self.file = Path(home) / ENDPOINT_FILE
        self.chdb_path = os.path.realpath(chdb_path)
        self.token = secrets.token_urlsafe(24)
        self.url = ""
        self._runner: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=1 << 20)
        app.router.add_post("/query", self._query)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps({"url": self.url, "token": self.token, "pid": os.getpid(),
                                  "path": self.chdb_path}))
        os.replace(tmp, self.file)
        log.info("query endpoint on %s (%s)", self.url, self.file)

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            info = orjson.loads(self.file.read_bytes())
            if info.get("pid") == os.getpid():
                self.file.unlink()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorised(self, request: Any) -> bool:
        given = request.headers.get("Authorization", "")
        return secrets.compare_digest(given, f"Bearer {self.token}")

    async def _health(self, request: Any) -> Any:
        from aiohttp import web

        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        return web.json_response({"ok": True, "pid": os.getpid(), "path": self.chdb_path})

    async def _query(self, request: Any) -> Any:
        from aiohttp import web

        if not self._authorised(request):
            return web.json_response({"error": "unauthorised"}, status=401)
        try:
            body = orjson.loads(await request.read())
            sql, fmt, write = body["sql"], body.get("format"), body.get("write", False)
            if not (isinstance(sql, str) and isinstance(fmt, str | None)
                    and isinstance(write, bool)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return web.json_response(
                {"error": 'expected JSON {"sql": "...", "format": "...", "write": false}'},
                status=400)
        async with self._lock:
            try:
                client = self._client_factory()
                if fmt is None:  # programs: columns, types and rows as JSON
                    result = await asyncio.to_thread(run_sql, client, sql, write=write)
                    return web.Response(body=result.to_json(), content_type="application/json")
                out = await asyncio.to_thread(run_formatted, client, sql, fmt, write=write)
            except QueryError as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.Response(body=out, content_type="application/octet-stream")
