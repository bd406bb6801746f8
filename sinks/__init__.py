"""ClickHouse storage for dnsflow: schema migrations, the exactly-once sink, SQL access."""
