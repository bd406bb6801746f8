"""Forwarding: UDP (TCP fallback on TC), TCP, DoT and DoH clients, and a failover pool."""

from dnsflow.edge.upstream.base import Upstream, UpstreamError, parse_upstream
from dnsflow.edge.upstream.pool import UpstreamPool

__all__ = ["Upstream", "UpstreamError", "UpstreamPool", "parse_upstream"]
