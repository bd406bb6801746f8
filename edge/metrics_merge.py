"""One scrape for all of an edge's ``--workers``: worker 0 adds up its own families and those
of the other worker processes (each serves its own on a loopback port), so Prometheus sees the
node's totals whatever worker the kernel handed a query to.

Counters and histograms add up; gauges add up too (cache entries, spool, connections are per
process) except those that say whether something is fine (``*_up``, ``*_ready``: the minimum,
so one worker without its upstream or policy shows), a start time (the earliest) and
per-process facts that do not add (the maximum). The hit ratio is recomputed from the summed
hits and misses."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

_MIN = ("process_start_time_seconds",)
_MAX = ("process_max_fds", "dnsflow_build_info", "process_virtual_memory_max_bytes")
_RATIO = "dnsflow_edge_cache_hit_ratio"


def _combine(name: str, a: float, b: float) -> float:
    if name in _MIN or name.endswith(("_up", "_ready")):
        return min(a, b)
    if name in _MAX:
        return max(a, b)
    return a + b


class _Merged:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merge(texts: Iterable[str]) -> bytes:
    """The exposition of several processes' scrapes as one (text format)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                values[fam.name] = {}
            vals = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                vals[key] = _combine(s.name, vals[key], s.value) if key in vals else s.value
    _recompute_ratio(values)
    out = []
    for name, fam in families.items():
        fam.samples = [Sample(n, dict(labels), v) for (n, labels), v in values[name].items()]
        out.append(fam)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(out))  # type: ignore[arg-type]
    return generate_latest(registry)


def _recompute_ratio(values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]
                     ) -> None:
    ratio = values.get(_RATIO)
    if not ratio:
        return
    hits = values.get("dnsflow_edge_cache_hits", {})
    misses = values.get("dnsflow_edge_cache_misses", {})
    for key in ratio:
        labels = key[1]
        h = hits.get(("dnsflow_edge_cache_hits_total", labels), 0.0)
        m = misses.get(("dnsflow_edge_cache_misses_total", labels), 0.0)
        ratio[key] = h / (h + m) if h + m else 0.0
