"""``/metrics`` of the console (Prometheus text format): requests, latency, the live tail.

Labels are the route pattern and the status code only: no tenant, token or query value, so
the endpoint needs no sign-in and reveals nothing of any tenant.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dnsflow.console.tail import EventFeed


class ConsoleMetrics:
    def __init__(self, feed: EventFeed | None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dnsflow_console_requests", "HTTP requests answered",
                                ["route", "code"], registry=self.registry)
        self.duration = Histogram("dnsflow_console_request_duration_seconds",
                                  "time to answer (a live tail counts until it closes)",
                                  ["route"], registry=self.registry,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                           5, 10))
        subs = Gauge("dnsflow_console_tail_subscribers", "live tails open now",
                     registry=self.registry)
        received = Gauge("dnsflow_console_tail_events_read",
                         "events read from the bus for live tails since start",
                         registry=self.registry)
        dropped = Gauge("dnsflow_console_tail_events_dropped",
                        "events a slow live tail subscriber missed (its queue was full), open "
                        "tails only", registry=self.registry)
        subs.set_function(lambda: len(feed.subscribers) if feed else 0)
        received.set_function(lambda: feed.received if feed else 0)
        dropped.set_function(lambda: sum(s.dropped for s in feed.subscribers) if feed else 0)

    def observe(self, request: web.Request, status: int, started: float) -> None:
        info: Any = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        self.requests.labels(route, str(status)).inc()
        self.duration.labels(route).observe(time.perf_counter() - started)

    async def handler(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})
