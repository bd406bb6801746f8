"""``/metrics`` for the tap: counters read from ``status()`` at scrape time, so the hot path
only bumps plain integers and nothing is counted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dnsflow.ops import component_registry

_COUNTERS = (  # (metric name, help, path in status())
    ("frames", "dnstap data frames received", ("frames",)),
    ("decode_errors", "frames that were not a usable dnstap message", ("decode_errors",)),
    ("ignored", "dnstap records that are not DNS queries or responses", ("ignored",)),
    ("upstream_ignored", "resolver-side messages of a sender that logs its clients",
     ("upstream_ignored",)),
    ("paired", "queries paired with their response", ("pairing", "paired")),
    ("adjacent_pairs", "of those, query and response read together from the stream",
     ("adjacent_pairs",)),
    ("unpaired", "queries emitted without a response (timeout or full table)",
     ("pairing", "unpaired")),
    ("orphan_responses", "responses emitted without their query",
     ("pairing", "orphan_responses")),
    ("events_built", "events handed to the publisher", ("events_built",)),
    ("events_published", "events the bus confirmed", ("events", "published")),
    ("events_spooled", "events written to the on-disk spool", ("events", "spooled")),
    ("events_dropped", "events dropped because the spool was full", ("events", "dropped")),
)


def _get(status: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = status
    for key in path:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return float(value or 0)


class TapMetrics:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status
        self.registry = component_registry("tap")  # process_* and dnsflow_build_info too
        self.registry.register(self)  # type: ignore[arg-type]

    def collect(self) -> Iterator[Any]:
        st = self.status()
        for name, text, path in _COUNTERS:
            c = CounterMetricFamily(f"dnsflow_tap_{name}", text)
            c.add_metric([], _get(st, path))
            yield c
        g = GaugeMetricFamily("dnsflow_tap_pending", "queries waiting for their response")
        g.add_metric([], _get(st, ("pairing", "pending")))
        yield g
        conns = GaugeMetricFamily("dnsflow_tap_connections", "connected dnstap senders",
                                  labels=["listen"])
        errs = CounterMetricFamily("dnsflow_tap_protocol_errors",
                                   "connections closed for a Frame Streams error",
                                   labels=["listen"])
        for lst in st.get("listeners", []):
            conns.add_metric([lst["listen"]], lst["connections"])
            errs.add_metric([lst["listen"]], lst["protocol_errors"])
        yield conns
        yield errs

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def render_all(self) -> bytes:
        """What the edge's ``OpsServer`` serves: one tap process, nothing to merge."""
        return self.render()
