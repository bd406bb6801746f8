"""The streams worker's ``/metrics``, ``/healthz`` and ``/readyz``, for both drivers (the
faust worker and the in-process service).

Everything is read on scrape from counters the pipeline already keeps (``status()``), so
the stream loop pays nothing for it; lag comes from a :class:`~dnsflow.lag.LagProbe`.
Names are ``dnsflow_streams_*``; the reference is docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsflow.lag import LagProbe, lag_families

READY_MAX_LAG = 100_000  # records behind, summed over the owned partitions
STALL_S = 30.0           # no poll of the events topic for this long: the loop is stuck


@dataclass
class StreamsProbe:
    """What the endpoint needs from a driver: its pipeline's status, how many events
    partitions it owns, when its loop last polled, and (faust) its checkpoints."""

    status: Callable[[], dict[str, Any]]
    assigned: Callable[[], int]
    polled_at: Callable[[], float]       # time.monotonic() of the loop's last poll
    lag: LagProbe | None = None
    checkpoints: Callable[[], tuple[int, float]] | None = None  # (count, time.time() of last)
    started_at: float = field(default_factory=time.time)
    ready_max_lag: int = READY_MAX_LAG

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        idle = time.monotonic() - self.polled_at()
        return idle < STALL_S, {"last_poll_s_ago": round(idle, 1)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        assigned = self.assigned()
        alive, detail = self.liveness()
        detail["assigned_partitions"] = assigned
        ok = alive and assigned > 0
        if self.lag is not None:
            lag = self.lag.total()
            detail.update(lag=lag, max_lag=self.ready_max_lag, lag_fresh=self.lag.fresh())
            if self.lag.error:
                detail["lag_error"] = self.lag.error
            ok = ok and self.lag.fresh() and lag <= self.ready_max_lag
        return ok, detail


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class StreamsCollector:
    """A prometheus_client collector over a :class:`StreamsProbe`."""

    def __init__(self, probe: StreamsProbe) -> None:
        self.probe = probe

    def collect(self) -> Iterator[Metric]:
        p = self.probe
        st = p.status()
        emitted = st.get("emitted", {})
        yield _counter("dnsflow_streams_events_processed", "events through the stream logic",
                       st.get("events", 0))
        yield _counter("dnsflow_streams_events_late_dropped",
                       "events older than their window's grace period, not counted",
                       st.get("late_dropped", 0))
        yield _counter("dnsflow_streams_events_duplicate",
                       "re-delivered events already in the state (restarts, rebalances), "
                       "skipped", st.get("duplicates", 0))
        yield _counter("dnsflow_streams_dlq_records",
                       "malformed event records sent to the DLQ", st.get("dlq", 0))
        yield _counter("dnsflow_streams_windows_closed",
                       "telemetry windows closed and published (one per tenant and window)",
                       emitted.get("telemetry", 0))
        yield _gauge("dnsflow_streams_open_panes", "telemetry panes still open",
                     st.get("open_panes", 0))
        det = CounterMetricFamily("dnsflow_streams_detections",
                                  "anomaly records published (a detection and its updates)",
                                  labels=["kind", "severity"])
        for (kind, severity), n in sorted(st.get("detections", {}).items()):
            det.add_metric([kind, severity], n)
        yield det
        yield _counter("dnsflow_streams_alerts", "alerts raised by alert rules",
                       emitted.get("alert", 0))
        yield _counter("dnsflow_streams_policy_updates",
                       "automatic policy updates (auto-denies) published",
                       emitted.get("policy_update", 0))
        yield _gauge("dnsflow_streams_open_incidents", "incidents still open (deduplicated "
                     "detections)", st.get("open_incidents", 0))
        yield _gauge("dnsflow_streams_pending_outputs",
                     "outputs not yet accepted by Kafka (retried; offsets wait)",
                     st.get("pending_outputs", 0))
        wm = st.get("watermark_us")
        yield _gauge("dnsflow_streams_watermark_seconds",
                     "event time up to which windows are closed (Unix seconds; 0 before the "
                     "first event)", wm / 1e6 if wm else 0.0)
        hooks = st.get("webhooks", {})
        yield _counter("dnsflow_streams_webhook_deliveries", "alert webhooks delivered",
                       hooks.get("sent", 0))
        yield _counter("dnsflow_streams_webhook_failures",
                       "alert webhooks not delivered after their retries",
                       hooks.get("failed", 0))
        yield _counter("dnsflow_streams_webhook_dropped", "alert webhooks dropped: queue full",
                       hooks.get("dropped", 0))
        yield _gauge("dnsflow_streams_webhook_queued", "alert webhooks waiting to be posted",
                     hooks.get("queued", 0))
        yield _gauge("dnsflow_streams_assigned_partitions",
                     "events partitions this worker owns", p.assigned())
        if p.checkpoints is not None:
            count, at = p.checkpoints()
            yield _counter("dnsflow_streams_checkpoints",
                           "partition checkpoints written", count)
            yield _gauge("dnsflow_streams_checkpoint_age_seconds",
                         "seconds since the last successful checkpoint (since start before "
                         "the first)", time.time() - (at or p.started_at))
        if p.lag is not None:
            yield from lag_families("streams", p.lag)

