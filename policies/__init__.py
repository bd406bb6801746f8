"""dnsflow policies: model, validation, matcher, sources and publication (see README.md)."""
