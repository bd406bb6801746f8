-- The audit trail of policy changes: who changed what, with the hash chain to verify it.
CREATE TABLE IF NOT EXISTS dnsflow.policy_log
(
    ts              DateTime64(6, 'UTC'),
    tenant          LowCardinality(String),
    version         UInt64,
    hash            String,
    previous_hash   String,
    source          LowCardinality(String),
    actor           String,
    change          String,
    document        String                          CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64,
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
