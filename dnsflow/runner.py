"""The embedded runner: every component in one process around one bus.

``dnsflow up`` with no flags uses the in-process bus and chDB under the data directory;
``--kafka``/``--clickhouse`` point the same composition at real infrastructure. Components
are looked up by name (``<component>.service.build``) so the core imports none of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
from typing import Any

from dnsflow.bus import Bus, bus_for
from dnsflow.service import COMPONENTS, ComponentMissing, Service, build_component
from dnsflow.settings import Settings

log = logging.getLogger(__name__)


class Pipeline:
    """Starts components in dependency order (policies, sinks, streams, edge), stops in reverse."""

    def __init__(
        self,
        settings: Settings,
        *,
        components: tuple[str, ...] = COMPONENTS,
        overrides: dict[str, dict[str, Any]] | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings
        self.components = components
        self.overrides = overrides or {}
        self.bus = bus or bus_for(settings)
        self.services: dict[str, list[Service]] = {}
        self.missing: list[str] = []

    async def start(self) -> None:
        self.settings.home.mkdir(parents=True, exist_ok=True)
        await self.bus.start()
        try:
            for name in self.components:
                try:
                    built = build_component(
                        name, self.settings, self.bus, **self.overrides.get(name, {})
                    )
                except ComponentMissing as exc:
                    log.warning("%s; running without it", exc)
                    self.missing.append(name)
                    continue
                self.services[name] = []
                for svc in built:
                    await svc.start()
                    self.services[name].append(svc)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for name in reversed(list(self.services)):
            for svc in reversed(self.services[name]):
                try:
                    await svc.stop()
                except Exception:  # keep stopping the others; nothing else to do here
                    log.exception("stopping %s failed", svc.name)
        self.services.clear()
        await self.bus.stop()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"missing": list(self.missing)}
        for name, services in self.services.items():
            out[name] = {svc.name: svc.status() for svc in services}
        return out

    def service(self, component: str, name: str | None = None) -> Service | None:
        for svc in self.services.get(component, []):
            if name is None or svc.name == name:
                return svc
        return None

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve_console(settings: Settings, bus: Bus) -> Any:
    """The web console on loopback, looked up by name like the components; None when it is
    not installed or cannot start (the pipeline runs without it)."""
    try:
        module = importlib.import_module("dnsflow.console.service")
    except ModuleNotFoundError:
        return None
    svc = module.build(settings, bus)[0]
    try:
        await svc.start()
    except Exception as exc:
        log.warning("web console not served: %s", exc)
        return None
    return svc


def run_async(coro: Any) -> Any:
    """Run with uvloop when available (the edge's hot path benefits most)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


async def _serve(settings: Settings, seconds: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Pipeline(settings) as pipeline:
        console = await serve_console(settings, pipeline.bus)
        mode = "embedded bus" if settings.embedded else f"kafka {settings.kafka}"
        print(f"dnsflow up: running ({mode}); components: "
              f"{', '.join(pipeline.services) or 'none'}", flush=True)
        for name, services in pipeline.services.items():
            for svc in services:
                listen = svc.status().get("listen")
                if listen:
                    print(f"  {name}/{svc.name}: {listen}", flush=True)
        if console is not None:
            print(f"  console: {console.url}", flush=True)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        finally:
            if console is not None:
                await console.stop()
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    parser.add_argument("--tap-listen", action="append", metavar="ENDPOINT",
                        help="also receive dnstap on unix:PATH or tcp:HOST:PORT (repeat for "
                        "more; the tap: section of the config)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dnsflow.cli import settings_from_args

    settings = settings_from_args(args)
    if args.tap_listen:
        settings = settings.model_copy(
            update={"tap": {**settings.tap, "listen": list(args.tap_listen)}})
    return int(run_async(_serve(settings, args.seconds)))
