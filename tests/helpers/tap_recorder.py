"""What the tap hands its publisher, recorded as the (key, JSON) records it would write."""

from __future__ import annotations

from dnsflow.edge.tap.events import encode


class Recorder:
    """Stands in for the event publisher: ``emit_many`` (general path) and ``emit_records``
    (fast path, adjacent pairs) both end as records, so the paths compare byte for byte."""

    def __init__(self) -> None:
        self.events: list[tuple[bytes, bytes]] = []

    def emit_many(self, ts: int, latency_us: int, templates: list[tuple[bytes, bytes]]) -> None:
        self.events.extend((k, encode(ts, latency_us, v)) for k, v in templates)

    def emit_records(self, records: list[tuple[bytes, bytes]]) -> None:
        self.events.extend(records)

    def status(self) -> dict[str, int]:
        return {}
