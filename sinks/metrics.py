"""The sink's ``/metrics``, ``/healthz`` and ``/readyz``.

Read on scrape from what the sink already counts (:class:`~sinks.sink.SinkStats`, its
per-batch latency buckets and failure flag), so storing a batch costs nothing more; lag
comes from a :class:`~dnsflow.lag.LagProbe`. Names are ``dnsflow_sink_*``; the reference is
docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dnsflow.lag import lag_families
from dnsflow.sinks.sink import LATENCY_BOUNDS

if TYPE_CHECKING:
    from dnsflow.sinks.service import SinkService


def readiness(svc: SinkService) -> tuple[bool, dict[str, Any]]:
    """Ready: the schema is migrated and ClickHouse answers (the sink's own last operation
    worked, and on a server the background ping too)."""
    ok = svc.migrated and svc.reachable and not svc.sink.failing
    detail: dict[str, Any] = {"schema_migrated": svc.migrated,
                              "clickhouse_reachable": svc.reachable and not svc.sink.failing}
    if svc.sink.failing and svc.sink.stats.last_error:
        detail["last_error"] = svc.sink.stats.last_error
    elif svc.ping_error:
        detail["last_error"] = svc.ping_error
    return ok, detail


def liveness(svc: SinkService) -> tuple[bool, dict[str, Any]]:
    """Alive while the sink loop runs (retrying counts: it is waiting, not dead)."""
    task = svc.task
    if task is None or task.done():
        return False, {"loop": "not running", "error": svc.error}
    return True, {"loop": "running"}


class SinkCollector:
    """A prometheus_client collector over a running :class:`SinkService`."""

    def __init__(self, svc: SinkService) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        sink = self.svc.sink
        st = sink.stats
        rows = CounterMetricFamily("dnsflow_sink_rows_stored", "rows stored, per table",
                                   labels=["table"])
        for spec in sink.specs.values():
            rows.add_metric([spec.table], st.stored.get(spec.table, 0))
        yield rows
        yield CounterMetricFamily("dnsflow_sink_records_consumed", "records read from Kafka",
                                  value=st.records)
        yield CounterMetricFamily("dnsflow_sink_batches", "batches gathered", value=st.batches)
        yield CounterMetricFamily("dnsflow_sink_dlq_records",
                                  "records rejected to the DLQ (with the reason)",
                                  value=st.rejected)
        yield CounterMetricFamily("dnsflow_sink_replayed_skipped",
                                  "re-delivered records already stored, skipped",
                                  value=st.skipped_replayed)
        yield CounterMetricFamily("dnsflow_sink_retries",
                                  "ClickHouse or Kafka operations retried", value=st.retries)
        yield CounterMetricFamily("dnsflow_sink_reconcile_runs",
                                  "look-ups of already stored offsets (start, restart, "
                                  "rebalance)", value=sink.reconciles)
        yield GaugeMetricFamily("dnsflow_sink_last_error",
                                "1 while the last ClickHouse/Kafka operation failed and none "
                                "has worked since", value=1.0 if sink.failing else 0.0)
        yield GaugeMetricFamily("dnsflow_sink_last_commit_timestamp_seconds",
                                "when offsets were last committed (Unix seconds; 0: never)",
                                value=st.committed_at)
        yield GaugeMetricFamily("dnsflow_sink_schema_migrated",
                                "1 once the schema is applied", value=float(self.svc.migrated))
        h = HistogramMetricFamily("dnsflow_sink_batch_duration_seconds",
                                  "from a batch's first record gathered to its rows stored")
        acc, buckets = 0, []
        for bound, n in zip(LATENCY_BOUNDS, sink.latency, strict=False):
            acc += n
            buckets.append((str(bound), acc))
        buckets.append(("+Inf", acc + sink.latency[-1]))
        h.add_metric([], buckets, sink.latency_sum)
        yield h
        yield GaugeMetricFamily("dnsflow_sink_idle_seconds", "seconds since records last "
                                "arrived", value=time.monotonic() - sink.last_activity)
        yield from lag_families("sink", self.svc.lag)
