-- Per-tenant rollups kept current by materialized views, so dashboards and the usual
-- questions read thousands of rows instead of scanning raw events.
-- They count what each insert into dns_events carries: the sink's reconciliation and insert
-- deduplication tokens (which also apply to these views) keep replays out of them.

-- Per tenant and minute: volume, outcomes, latency and distinct clients / names.
CREATE TABLE IF NOT EXISTS dnsflow.dns_minute
(
    minute          DateTime('UTC'),
    tenant          LowCardinality(String),
    queries         SimpleAggregateFunction(sum, UInt64),
    nxdomain        SimpleAggregateFunction(sum, UInt64),
    servfail        SimpleAggregateFunction(sum, UInt64),
    denied          SimpleAggregateFunction(sum, UInt64),
    cache_hits      SimpleAggregateFunction(sum, UInt64),
    latency_sum_us  SimpleAggregateFunction(sum, UInt64),
    latency_max_us  SimpleAggregateFunction(max, UInt32),
    latency_q       AggregateFunction(quantilesTDigest(0.5, 0.9, 0.99), UInt32),
    clients         AggregateFunction(uniq, String),
    names           AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant, minute)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS dnsflow.dns_minute_mv TO dnsflow.dns_minute AS
SELECT
    toStartOfMinute(ts)                         AS minute,
    tenant,
    count()                                     AS queries,
    countIf(rcode = 'NXDOMAIN')                 AS nxdomain,
    countIf(rcode = 'SERVFAIL')                 AS servfail,
    countIf(decision = 'deny')                  AS denied,
    countIf(cache = 'hit')                      AS cache_hits,
    sum(toUInt64(latency_us))                   AS latency_sum_us,
    max(latency_us)                             AS latency_max_us,
    quantilesTDigestState(0.5, 0.9, 0.99)(latency_us) AS latency_q,
    uniqState(CAST(client_ip AS String))        AS clients,
    uniqState(CAST(qname AS String))            AS names
FROM dnsflow.dns_events
GROUP BY tenant, minute;

-- Per tenant, hour and name: "top (denied / NXDOMAIN) names" without the raw table.
CREATE TABLE IF NOT EXISTS dnsflow.dns_names_hour
(
    hour            DateTime('UTC'),
    tenant          LowCardinality(String),
    decision        LowCardinality(String),
    rcode           LowCardinality(String),
    qname           LowCardinality(String),
    queries         SimpleAggregateFunction(sum, UInt64),
    clients         AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, hour, decision, rcode, qname)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS dnsflow.dns_names_hour_mv TO dnsflow.dns_names_hour AS
SELECT
    toStartOfHour(ts)                           AS hour,
    tenant,
    decision,
    rcode,
    qname,
    count()                                     AS queries,
    uniqState(CAST(client_ip AS String))        AS clients
FROM dnsflow.dns_events
GROUP BY tenant, hour, decision, rcode, qname;
