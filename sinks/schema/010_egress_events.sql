-- One row per egress event on `dnsflow.egress` (`dnsflow.schema.EgressEvent`, schema v1):
-- `allow` = the edge answered a client an allowed name, so the node let that client reach
-- `dst_ip` on `protocol`/`port` (port 0 with protocol '' = every port) for `ttl` seconds
-- (the answer's TTL plus the node's grace); `drop` / `would_drop` = a connection attempt the
-- node dropped (mode enforce) or would have (mode audit).
--
-- ORDER BY (tenant, ts, ...) like dns_events: per-tenant time ranges read one range. The
-- questions asked of it are "which name let this client reach this address" (`policy
-- explain --connect`) and "which addresses did a rule's clients reach" (`egress-export`),
-- both filtered on client_ip / dst_ip / rule: bloom filters skip the granules without them.
-- Fields added to the record later (the allow's `ports` list ...) go to `extra` (JSON).
-- The retention TTL (`sink.retention_days.egress_events`) is applied by the migrator.
CREATE TABLE IF NOT EXISTS dnsflow.egress_events
(
    ts              DateTime64(6, 'UTC')            CODEC(Delta, ZSTD(1)),
    tenant          LowCardinality(String),
    namespace       LowCardinality(String),
    pod             LowCardinality(String)          DEFAULT '',
    edge            LowCardinality(String),
    kind            LowCardinality(String),
    client_ip       String,
    dst_ip          String,
    protocol        LowCardinality(String)          DEFAULT '',
    port            UInt16                          DEFAULT 0,
    qname           String                          DEFAULT '',
    rule            LowCardinality(String)          DEFAULT '',
    mode            LowCardinality(String),
    ttl             UInt32                          DEFAULT 0,
    policy_version  UInt64                          DEFAULT 0,
    extra           String                          DEFAULT '' CODEC(ZSTD(3)),
    kafka_partition UInt16,
    kafka_offset    UInt64                          CODEC(Delta, ZSTD(1)),
    kafka_source    LowCardinality(String),
    INDEX idx_offset kafka_offset TYPE minmax GRANULARITY 1,
    INDEX idx_client client_ip TYPE bloom_filter GRANULARITY 4,
    INDEX idx_dst dst_ip TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (tenant, ts, kafka_partition, kafka_offset, kafka_source)
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
