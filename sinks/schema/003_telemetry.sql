-- Windowed aggregates from the stream processors, one row per tenant and window.
-- The record's own fields vary with the aggregate, so the full record is kept in `data`
-- (JSON) next to the columns every telemetry record has.
CREATE TABLE IF NOT EXISTS dnsflow.telemetry
(
    ts              DateTime64(6, 'UTC')            CODEC(DoubleDelta, ZSTD(1)),
    tenant          LowCardinality(String),
    window_s        UInt32                          DEFAULT 0,
    data            String                          CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64                          CODEC(Delta, ZSTD(1)),
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
