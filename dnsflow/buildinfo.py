"""``dnsflow_build_info{component,version,python}``: the one metric every component exposes, so
a dashboard can tell which version runs where (CoreDNS's ``coredns_build_info``)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client.core import GaugeMetricFamily, Metric


def dnsflow_version() -> str:
    try:
        return version("dnsflow")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


class BuildInfoCollector:
    """A prometheus_client collector: register one per component registry."""

    def __init__(self, component: str) -> None:
        self.labels = [component, dnsflow_version(), platform.python_version()]

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("dnsflow_build_info", "1, labelled with the running build",
                              labels=["component", "version", "python"])
        g.add_metric(self.labels, 1.0)
        yield g
