-- One row per anomaly detection or update (anomaly schema v1); evidence as JSON.
CREATE TABLE IF NOT EXISTS dnsflow.anomalies
(
    ts              DateTime64(6, 'UTC'),
    tenant          LowCardinality(String),
    kind            LowCardinality(String),
    client_ip       String,
    domain          String,
    severity        LowCardinality(String),
    score           Float32,
    evidence        String                          CODEC(ZSTD(3)),
    extra           String                          DEFAULT '',
    kafka_partition UInt16,
    kafka_offset    UInt64,
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
