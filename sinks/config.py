"""The ``sink:`` section of the config file, validated here so errors name ``sink.<field>``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dnsflow.settings import Settings, section
from dnsflow.sinks.cluster import check_name
from dnsflow.sinks.migrate import RETENTION_DAYS


class SinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = Field(default="dnsflow-sink", min_length=1, description="Kafka consumer group")
    topics: list[str] = Field(
        default_factory=lambda: ["events", "telemetry", "anomalies", "alerts", "policy_log",
                                 "egress"],
        description="short topic names to store (each maps to its table)",
    )
    batch_rows: int = Field(default=50_000, ge=1, le=1_000_000,
                            description="insert when this many records are gathered ...")
    batch_ms: int = Field(default=1000, ge=10, le=600_000,
                          description="... or when the oldest gathered record is this old")
    commit_ms: int = Field(default=2000, ge=0, le=600_000,
                           description="commit offsets at most this often (inserts pipeline "
                           "in between; a crash replays at most this much, reconciled)")
    kafka_client: Literal["librdkafka", "aiokafka"] = Field(
        default="librdkafka", description="Kafka consumer: librdkafka (confluent-kafka, "
        "~40 % less CPU per record) or the core's aiokafka consumer")
    retention_days: dict[str, int] = Field(
        default_factory=lambda: dict(RETENTION_DAYS),
        description="days each table keeps its rows (ClickHouse TTL, re-applied on every "
        f"start); tables: {', '.join(RETENTION_DAYS)}; those left out keep their default")
    cluster: str | None = Field(default=None, description="ClickHouse cluster name: the "
                                "schema is created ON CLUSTER with replicated tables and "
                                "Distributed tables under the usual names (docs/clickhouse-"
                                "cluster.md)")
    events_ttl_days: int | None = Field(default=None, ge=1, le=36_500,
                                        description="older spelling of "
                                        "retention_days.dns_events")
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=30.0, gt=0, le=3600)
    query_endpoint: bool = Field(default=True, description="embedded: serve `dnsflow query` "
                                 "on loopback while this process owns chDB")


    @field_validator("retention_days")
    @classmethod
    def _known_tables(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(RETENTION_DAYS))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)} (tables: "
                             f"{', '.join(RETENTION_DAYS)})")
        bad = sorted(t for t, d in v.items() if not 1 <= d <= 36_500)
        if bad:
            raise ValueError(f"days for {', '.join(bad)} must be 1..36500")
        return {**RETENTION_DAYS, **v}

    @field_validator("cluster")
    @classmethod
    def _cluster_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v)

    @model_validator(mode="after")
    def _old_spelling(self) -> SinkConfig:
        if self.events_ttl_days is not None:
            self.retention_days = {**self.retention_days, "dns_events": self.events_ttl_days}
        return self


def sink_config(settings: Settings) -> SinkConfig:
    return section(settings, "sink", SinkConfig)
