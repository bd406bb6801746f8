-- How events reach dns_events: the sink sends each batch as JSONEachRow into this Null
-- table (stores nothing) and the view below turns it into dns_events rows. ClickHouse parses
-- the JSON in C++ — the raw Kafka values as they came, once the sink has validated them —
-- instead of the sink building columns in Python (bench.sink: ~3 µs less Python per event).
--
-- One JSON object per Kafka record: its coordinates, and the event itself in `event`
-- (the record's value verbatim, or, for a record the core model had to decide or that needs
-- Unicode-aware normalisation, the sink's canonical JSON of the row, already normalised).
-- The view applies the core's normalisation (qname lower case without trailing dots,
-- qtype/rcode upper case); it is a no-op on the canonical rows, and the sink sends verbatim
-- only ASCII values without escapes, where ClickHouse's lower()/upper() equal Python's.
-- Insert deduplication tokens carry through the view (deduplicate_blocks_in_dependent_-
-- materialized_views = 1 on every insert), so retries and the rollups stay exactly-once.
CREATE TABLE IF NOT EXISTS dnsflow.dns_events_ingest
(
    kafka_source    String,
    kafka_partition UInt16,
    kafka_offset    UInt64,
    event Tuple(
        ts              Int64,
        tenant          String,
        namespace       String,
        pod             String,
        service_account String,
        edge            String,
        client_ip       String,
        transport       String,
        qname           String,
        qtype           String,
        rcode           String,
        answers         Array(String),
        latency_us      UInt32,
        cache           String,
        decision        String,
        rule            String,
        policy_version  UInt64,
        upstream        String,
        v               UInt8,
        extra           String
    )
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS dnsflow.dns_events_ingest_mv TO dnsflow.dns_events AS
SELECT
    fromUnixTimestamp64Micro(tupleElement(event, 'ts'), 'UTC')  AS ts,
    tupleElement(event, 'tenant')                               AS tenant,
    tupleElement(event, 'namespace')                            AS namespace,
    tupleElement(event, 'pod')                                  AS pod,
    tupleElement(event, 'service_account')                      AS service_account,
    tupleElement(event, 'edge')                                 AS edge,
    tupleElement(event, 'client_ip')                            AS client_ip,
    tupleElement(event, 'transport')                            AS transport,
    trim(TRAILING '.' FROM lower(tupleElement(event, 'qname'))) AS qname,
    upper(tupleElement(event, 'qtype'))                         AS qtype,
    upper(tupleElement(event, 'rcode'))                         AS rcode,
    tupleElement(event, 'answers')                              AS answers,
    tupleElement(event, 'latency_us')                           AS latency_us,
    tupleElement(event, 'cache')                                AS cache,
    tupleElement(event, 'decision')                             AS decision,
    tupleElement(event, 'rule')                                 AS rule,
    tupleElement(event, 'policy_version')                       AS policy_version,
    tupleElement(event, 'upstream')                             AS upstream,
    toUInt8(1)                                                  AS v,
    tupleElement(event, 'extra')                                AS extra,
    kafka_partition,
    kafka_offset,
    kafka_source
FROM dnsflow.dns_events_ingest;
