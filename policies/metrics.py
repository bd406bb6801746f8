"""The policy source's ``/metrics``, ``/healthz`` and ``/readyz`` (``dnsflow policy apply
--watch`` and/or ``--kubernetes``).

A :class:`PublishTracker` wraps each source's :class:`~policies.publisher.Publisher` so every
publish attempt is counted where it happens (files and Kubernetes alike) without touching
the sources; the versions come from what the publishers read back from the topic. Names are
``dnsflow_policies_*``; the reference is docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dnsflow.policies import records
from dnsflow.policies.publisher import Publisher


class PublishTracker:
    """Counts the attempts, failures and rejections of the publishers it wraps."""

    def __init__(self) -> None:
        self.publishers: list[Publisher] = []
        self.attempts = 0
        self.errors = 0
        self.rejected_sets = 0
        self.rejected_problems = 0
        self.last_ok: bool | None = None  # None: nothing attempted yet
        self.last_error = ""
        self.last_error_at = 0.0
        self.last_success_at = 0.0
        self.loops: list[Callable[[], asyncio.Task[Any] | None]] = []
        self.invalid_keys: Callable[[], int] = lambda: 0  # Kubernetes: keys with problems

    def wrap(self, pub: Publisher) -> Publisher:
        """Count every :meth:`Publisher.publish` of ``pub`` (dry runs excluded)."""
        inner = pub.publish

        async def publish(*args: Any, **kw: Any) -> Any:
            if kw.get("dry_run"):
                return await inner(*args, **kw)
            self.attempts += 1
            try:
                out = await inner(*args, **kw)
            except Exception as exc:
                self.errors += 1
                self.last_ok = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_at = time.time()
                raise
            self.last_ok = True
            self.last_success_at = time.time()
            return out

        pub.publish = publish  # type: ignore[method-assign]
        self.publishers.append(pub)
        return pub

    def rejected(self, problems: int) -> None:
        """A policy set that did not validate (the last good version stays)."""
        self.rejected_sets += 1
        self.rejected_problems += problems
        self.last_error_at = time.time()

    def versions(self) -> dict[str, int]:
        """Published version per tenant (``_global`` for the cluster policies), as read
        back from the topic; the streams' auto-deny records are not this source's."""
        out: dict[str, int] = {}
        for pub in self.publishers:
            for key, rec in pub.current.items():
                if rec.get("kind") == records.KIND_AUTO:
                    continue
                out[key] = max(out.get(key, 0), int(rec.get("version", 0)))
        return out

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready once a publish has run and the last one succeeded."""
        detail: dict[str, Any] = {"publishes": self.attempts, "last_publish_ok": self.last_ok}
        if self.last_ok is False:
            detail["last_error"] = self.last_error
        return self.last_ok is True, detail

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """Alive while every source's loop runs."""
        dead = sum(1 for loop in self.loops if (t := loop()) is None or t.done())
        return dead == 0, {"sources": len(self.loops), "stopped": dead}


class PolicySourceCollector:
    def __init__(self, tracker: PublishTracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterator[Metric]:
        t = self.tracker
        g = GaugeMetricFamily("dnsflow_policies_published_version",
                              "policy version on the topic, per tenant (_global: cluster)",
                              labels=["tenant"])
        for tenant, version in sorted(t.versions().items()):
            g.add_metric([tenant], version)
        yield g
        yield CounterMetricFamily("dnsflow_policies_publishes",
                                  "publish attempts (a set with no change included)",
                                  value=t.attempts)
        yield CounterMetricFamily("dnsflow_policies_published_changes",
                                  "policy records published (real changes)",
                                  value=sum(p.published for p in t.publishers))
        yield CounterMetricFamily("dnsflow_policies_publish_errors",
                                  "publish attempts that failed (Kafka)", value=t.errors)
        yield CounterMetricFamily("dnsflow_policies_rejected_sets",
                                  "policy sets that did not validate (last good version stays)",
                                  value=t.rejected_sets)
        yield CounterMetricFamily("dnsflow_policies_rejected_records",
                                  "problems found in rejected policy sets (one per bad "
                                  "document or field)", value=t.rejected_problems)
        yield GaugeMetricFamily("dnsflow_policies_last_error_timestamp_seconds",
                                "when a publish last failed or a set was last rejected (Unix "
                                "seconds; 0: never)", value=t.last_error_at)
        yield GaugeMetricFamily("dnsflow_policies_last_publish_success_timestamp_seconds",
                                "when a publish last succeeded (Unix seconds; 0: never)",
                                value=t.last_success_at)
        yield GaugeMetricFamily("dnsflow_policies_invalid_keys",
                                "tenants whose Kubernetes resources do not validate now (they "
                                "keep their last good version)", value=t.invalid_keys())
        yield GaugeMetricFamily("dnsflow_policies_last_publish_ok",
                                "1 if the last publish succeeded", value=1.0 if t.last_ok else 0.0)
