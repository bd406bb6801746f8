-- One row per alert raised by an alert rule; the whole record is kept in `data` (JSON).
CREATE TABLE IF NOT EXISTS dnsflow.alerts
(
    ts              DateTime64(6, 'UTC'),
    rule            LowCardinality(String),
    tenant          LowCardinality(String),
    severity        LowCardinality(String),
    data            String                          CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
