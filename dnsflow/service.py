"""What the embedded runner composes: each component exposes long-running services.

A component offers ``build(settings, bus) -> list[Service]`` in its ``service`` module
(``dnsflow.edge.service``, ``dnsflow.streams.service``, ``dnsflow.sinks.service``,
``dnsflow.policies.service``). The runner looks them up by name, so the core never imports
a component's internals.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from dnsflow.bus import Bus
from dnsflow.settings import Settings


@runtime_checkable
class Service(Protocol):
    name: str

    async def start(self) -> None:
        """Begin serving; return once ready."""

    async def stop(self) -> None:
        """Stop gracefully: flush or spool everything in flight."""

    def status(self) -> dict[str, Any]:
        """Counters for summaries and health endpoints."""


COMPONENTS = ("policies", "sinks", "streams", "edge")


class ComponentMissing(RuntimeError):
    pass


def build_component(name: str, settings: Settings, bus: Bus, **kw: Any) -> list[Service]:
    """Import ``dnsflow.<name>.service`` (the installed name of the component's folder) and
    build its services; say plainly if it is not built."""
    package = f"dnsflow.{name}"
    try:
        module = importlib.import_module(f"{package}.service")
    except ModuleNotFoundError as exc:
        if exc.name in (package, f"{package}.service"):
            raise ComponentMissing(f"component {name!r} is not built yet") from None
        raise
    return list(module.build(settings, bus, **kw))
