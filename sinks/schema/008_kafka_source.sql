-- Offsets are unique only per log: a fresh in-process bus (`dnsflow demo`, `dnsflow up`
-- without Kafka) restarts at offset 0. Every row therefore also records which log it came
-- from (`Bus.source_id` plus the topic), and the sink's reconciliation and deduplication
-- tokens are keyed by it, so a new run is never mistaken for a replay of an earlier one.
ALTER TABLE dnsflow.dns_events
    ADD COLUMN IF NOT EXISTS kafka_source LowCardinality(String) CODEC(ZSTD(1)),
    MODIFY ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source);
ALTER TABLE dnsflow.telemetry
    ADD COLUMN IF NOT EXISTS kafka_source LowCardinality(String),
    MODIFY ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source);
ALTER TABLE dnsflow.anomalies
    ADD COLUMN IF NOT EXISTS kafka_source LowCardinality(String),
    MODIFY ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source);
ALTER TABLE dnsflow.alerts
    ADD COLUMN IF NOT EXISTS kafka_source LowCardinality(String),
    MODIFY ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source);
ALTER TABLE dnsflow.policy_log
    ADD COLUMN IF NOT EXISTS kafka_source LowCardinality(String),
    MODIFY ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source);
