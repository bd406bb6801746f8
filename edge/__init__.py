"""dnsflow edge resolver: identity-aware, policy-enforcing DNS forwarder with telemetry."""
