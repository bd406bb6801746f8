"""The operations endpoint every long-running process serves: ``/metrics`` (Prometheus text),
``/healthz`` (the process loop is alive) and ``/readyz`` (doing its job), on
``--metrics-listen HOST:PORT``.

One implementation for the edge, the streams worker, the sink and the policy source, so the
endpoints behave the same everywhere (status codes, JSON detail, content type). A component
hands in how to render its metrics and two checks; :func:`component_registry` gives it the
registry every component starts from (``process_*`` and ``dnsflow_build_info``).
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from dnsflow.buildinfo import BuildInfoCollector

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, dict[str, Any]]]
Render = Callable[[], bytes | Awaitable[bytes]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Default ports of the components' endpoints on loopback (the edge's is CoreDNS's 9153).
DEFAULT_PORTS = {"edge": 9153, "streams": 9155, "sink": 9156, "policies": 9157}


def alive() -> tuple[bool, dict[str, Any]]:
    return True, {}


def parse_listen(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``PORT`` (the last two on ``default_host``,
    loopback: metrics are not exposed beyond the host unless a host is named)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:
        raise ValueError(f"{text!r}: an IPv6 address needs brackets, [ADDR]:PORT")
    else:
        host, port = "", text
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (port 0..65535)")
    return host or default_host, int(port)


def component_registry(component: str) -> CollectorRegistry:
    """A registry with ``process_*`` and ``dnsflow_build_info{component=...}``: register the
    component's own collectors on it."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    registry.register(BuildInfoCollector(component))  # type: ignore[arg-type]
    return registry


def registry_render(registry: CollectorRegistry) -> Render:
    return lambda: generate_latest(registry)


class OpsServer:
    """aiohttp on one TCP socket; ``render`` may be sync (a registry) or async (the edge adds
    up its workers' scrapes). A check that raises counts as failing, with the error."""

    def __init__(self, render: Render, host: str, port: int, readiness: Check,
                 liveness: Check = alive) -> None:
        self.render = render
        self.host = host
        self.port = port
        self.readiness = readiness
        self.liveness = liveness
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.render()
        if inspect.isawaitable(body):
            body = await body
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE})

    @staticmethod
    def _answer(check: Check) -> web.Response:
        try:
            ok, detail = check()
        except Exception as exc:  # a broken check must read as "not ok", not as a 500 page
            ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"}
        return web.Response(status=200 if ok else 503,
                            body=orjson.dumps({"ok": ok, **detail},
                                              option=orjson.OPT_NON_STR_KEYS),
                            content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        return self._answer(self.liveness)

    async def _readyz(self, request: web.Request) -> web.Response:
        return self._answer(self.readiness)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            sock = bind_tcp(self.host, self.port)
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def check_listen(listen: str) -> None:
    """Raise ValueError (not HOST:PORT) or OSError (cannot be bound) for an explicit
    ``--metrics-listen``, before a process that serves it much later (a faust worker) starts
    at all; "off" passes."""
    if listen.strip().lower() in ("off", "none", ""):
        return
    host, port = parse_listen(listen)
    try:
        bind_tcp(host, port).close()
    except OSError as exc:
        raise OSError(exc.errno, f"--metrics-listen {listen}: {exc.strerror}") from None


async def serve_ops(component: str, listen: str | None, render: Render, readiness: Check,
                    liveness: Check = alive) -> OpsServer | None:
    """The component's endpoint on ``listen``, or on loopback at its default port when
    ``listen`` is None. An address given explicitly that cannot be bound is an error; the
    default one being taken (a second process on the host) only costs a warning. ``listen``
    "off" serves nothing."""
    if listen is not None and listen.strip().lower() in ("off", "none", ""):
        return None
    host, port = parse_listen(listen if listen is not None
                              else str(DEFAULT_PORTS[component]))
    server = OpsServer(render, host, port, readiness, liveness)
    try:
        await server.start()
    except OSError as exc:
        if listen is not None:
            raise OSError(exc.errno, f"--metrics-listen {listen}: {exc.strerror}") from None
        log.warning("%s: /metrics not served on the default %s:%d (%s); pass "
                    "--metrics-listen HOST:PORT", component, host, port, exc.strerror)
        return None
    log.info("%s: /metrics /healthz /readyz on %s", component, server.url)
    return server
