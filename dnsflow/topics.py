"""Kafka topic names and their configs (the contract's topic table)."""

from __future__ import annotations

from dataclasses import dataclass, field

EVENTS = "events"
TELEMETRY = "telemetry"
ANOMALIES = "anomalies"
ALERTS = "alerts"
POLICIES = "policies"
DLQ = "dlq"
POLICY_LOG = "policy_log"
EGRESS = "egress"  # L4 egress allowances and dropped attempts (#17)

ALL = (EVENTS, TELEMETRY, ANOMALIES, ALERTS, POLICIES, DLQ, POLICY_LOG, EGRESS)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Resolves short names (``events``) to full names (``dnsflow.events``) under a prefix."""

    prefix: str = "dnsflow."

    def __getattr__(self, short: str) -> str:  # topics.events -> "dnsflow.events"
        if short in ALL:
            return self.prefix + short
        raise AttributeError(short)

    def name(self, short: str) -> str:
        return self.prefix + short

    def specs(self, events_partitions: int = 6) -> list[TopicSpec]:
        """Topic configs created on start-up; the policy topic is compacted so edges rebuild."""
        return [
            TopicSpec(self.name(EVENTS), events_partitions, {"compression.type": "producer"}),
            TopicSpec(self.name(TELEMETRY), 3),
            TopicSpec(self.name(ANOMALIES), 3),
            TopicSpec(self.name(ALERTS), 1),
            TopicSpec(
                self.name(POLICIES),
                1,
                {"cleanup.policy": "compact", "min.compaction.lag.ms": "0",
                 "segment.ms": "3600000"},
            ),
            TopicSpec(self.name(DLQ), 1),
            TopicSpec(self.name(POLICY_LOG), 1),  # who/what changed which policy version
            # keyed by tenant like the events and as many partitions: co-partitioned, so
            # the streams checkpoint a tenant's egress state with its events (streams/)
            TopicSpec(self.name(EGRESS), events_partitions),
        ]
