"""The edge's operations endpoint: the core's :class:`dnsflow.ops.OpsServer` (``/metrics``,
``/healthz``, ``/readyz``) serving :class:`EdgeMetrics` (every worker's scrape added up) and
the edge's readiness (serving, with a policy and at least one healthy upstream)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnsflow.edge.metrics import EdgeMetrics
from dnsflow.ops import OpsServer as _CoreOpsServer


class OpsServer(_CoreOpsServer):
    def __init__(self, metrics: EdgeMetrics, host: str, port: int,
                 readiness: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        super().__init__(metrics.render_all, host, port, readiness)
        self.metrics = metrics
