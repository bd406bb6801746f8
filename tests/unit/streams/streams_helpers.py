"""Helpers for the streams unit tests (imported via sys.path set in conftest)."""

from __future__ import annotations

from typing import Any

from dnsflow.streams.config import StreamsConfig
from dnsflow.streams.logic import Output, StreamLogic

T0 = 1_699_999_980_000_000  # minute-aligned event time (µs)


def make_logic(**overrides: Any) -> StreamLogic:
    return StreamLogic(StreamsConfig.model_validate(overrides))


def run(logic: StreamLogic, events: list[dict[str, Any]], flush: bool = True) -> list[Output]:
    for e in sorted(events, key=lambda e: e["ts"]):
        logic.process(e)
    if flush:
        logic.flush()
    return logic.drain()


def anomalies(outputs: list[Output], kind: str | None = None) -> list[dict[str, Any]]:
    return [o.value for o in outputs if o.type == "anomaly" and (kind is None or
                                                                 o.value["kind"] == kind)]


async def read_all(bus: Any, topic: str) -> list[Any]:
    """Every record on ``topic`` of an in-process bus, from the start."""
    c = bus.consumer([topic], None)
    await c.start()
    out: list[Any] = []
    for _ in range(50):
        got = await c.getmany(timeout_ms=50, max_records=10_000)
        if not got:
            break
        out.extend(got)
    return out
