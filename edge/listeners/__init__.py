"""Where queries come in: UDP, TCP, DNS-over-TLS and DNS-over-HTTPS."""
