"""``dnsflow tap``: dnstap from existing resolvers -> schema-v1 events (see README.md)."""
