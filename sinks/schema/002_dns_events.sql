-- One row per DNS query/response (event schema v1).
--
-- ORDER BY (tenant, ts): per-tenant time-range queries read one contiguous range; within a
-- tenant, ts is nearly monotonic so DoubleDelta shrinks it to a few bits per row.
-- LowCardinality on every column with a small vocabulary (tenants, namespaces, pods, clients,
-- qtype, rcode, decision, rule ...) stores a per-part dictionary plus small indexes.
-- kafka_partition/kafka_offset record where each row came from: the sink uses them after a
-- restart to skip rows ClickHouse already holds, and ReplacingMergeTree collapses any replay
-- that slips through (e.g. two sink instances racing on a rebalance). Query with FINAL when
-- exactness in that rare case matters.
-- The retention TTL ({events_ttl_days} days) is re-applied from the sink config on start.
CREATE TABLE IF NOT EXISTS dnsflow.dns_events
(
    ts              DateTime64(6, 'UTC')            CODEC(DoubleDelta, ZSTD(1)),
    tenant          LowCardinality(String),
    namespace       LowCardinality(String),
    pod             LowCardinality(String)          DEFAULT '',
    service_account LowCardinality(String)          DEFAULT '',
    edge            LowCardinality(String),
    client_ip       LowCardinality(String)          CODEC(ZSTD(1)),
    transport       LowCardinality(String),
    qname           String                          CODEC(ZSTD(3)),
    qtype           LowCardinality(String),
    rcode           LowCardinality(String),
    answers         Array(String)                   CODEC(ZSTD(3)),
    latency_us      UInt32                          CODEC(T64, ZSTD(1)),
    cache           LowCardinality(String),
    decision        LowCardinality(String),
    rule            LowCardinality(String),
    policy_version  UInt64                          CODEC(T64, ZSTD(1)),
    upstream        LowCardinality(String),
    v               UInt8                           CODEC(T64, ZSTD(1)),
    extra           String                          DEFAULT '' CODEC(ZSTD(3)),
    kafka_partition UInt16                          CODEC(T64, ZSTD(1)),
    kafka_offset    UInt64                          CODEC(Delta, ZSTD(1)),
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1,
    INDEX idx_qname qname TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset)
TTL toDateTime(ts) + INTERVAL {events_ttl_days} DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
