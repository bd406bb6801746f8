-- One row per DNS query/response (event schema v1).
--
-- ORDER BY (tenant, ts): per-tenant time-range queries read one contiguous range.
-- Codecs, measured on realistic traffic by `python -m bench.sink` (~15 bytes/event on disk
-- against ~400 bytes of JSON):
--   * ts: Delta + ZSTD; within a tenant ts only grows, by small irregular steps
--     (DoubleDelta suits regular intervals and was larger here);
--   * LowCardinality + ZSTD on every string with a small or Zipf-skewed vocabulary, qname and
--     answers included: per-part dictionaries plus small, well-compressing indexes;
--   * T64 + ZSTD on the integers (latency, versions, partition).
-- kafka_partition/kafka_offset record where each row came from: the sink uses them after a
-- restart to skip rows ClickHouse already holds, and ReplacingMergeTree collapses any replay
-- that slips through (e.g. two sink instances racing on a rebalance). Query with FINAL when
-- exactness in that rare case matters.
-- The retention TTL ({events_ttl_days} days) is re-applied from the sink config on start.
CREATE TABLE IF NOT EXISTS dnsflow.dns_events
(
    ts              DateTime64(6, 'UTC')            CODEC(Delta, ZSTD(1)),
    tenant          LowCardinality(String)          CODEC(ZSTD(1)),
    namespace       LowCardinality(String)          CODEC(ZSTD(1)),
    pod             LowCardinality(String)          DEFAULT '' CODEC(ZSTD(1)),
    service_account LowCardinality(String)          DEFAULT '' CODEC(ZSTD(1)),
    edge            LowCardinality(String)          CODEC(ZSTD(1)),
    client_ip       LowCardinality(String)          CODEC(ZSTD(1)),
    transport       LowCardinality(String)          CODEC(ZSTD(1)),
    qname           LowCardinality(String)          CODEC(ZSTD(1)),
    qtype           LowCardinality(String)          CODEC(ZSTD(1)),
    rcode           LowCardinality(String)          CODEC(ZSTD(1)),
    answers         Array(LowCardinality(String))   CODEC(ZSTD(1)),
    latency_us      UInt32                          CODEC(T64, ZSTD(1)),
    cache           LowCardinality(String)          CODEC(ZSTD(1)),
    decision        LowCardinality(String)          CODEC(ZSTD(1)),
    rule            LowCardinality(String)          CODEC(ZSTD(1)),
    policy_version  UInt64                          CODEC(T64, ZSTD(1)),
    upstream        LowCardinality(String)          CODEC(ZSTD(1)),
    v               UInt8                           CODEC(T64, ZSTD(1)),
    extra           String                          DEFAULT '' CODEC(ZSTD(3)),
    kafka_partition UInt16                          CODEC(T64, ZSTD(1)),
    kafka_offset    UInt64                          CODEC(Delta, ZSTD(1)),
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
TTL toDateTime(ts) + INTERVAL {events_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
