"""``edge:`` settings section (validated with pydantic; errors name the field)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dnsflow.edge.egress.config import EgressConfig
from dnsflow.edge.upstream.base import parse_upstream


def system_upstreams(resolv_conf: str = "/etc/resolv.conf") -> list[str]:
    """Nameservers from resolv.conf (the embedded default when none are configured)."""
    out = []
    try:
        for line in Path(resolv_conf).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                host = parts[1]
                out.append(f"udp://[{host}]:53" if ":" in host else f"udp://{host}:53")
    except OSError:
        pass
    return out or ["udp://127.0.0.1:53"]


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default_factory=socket.gethostname, description="edge name in events")
    listen: str = Field(default="127.0.0.1:5353", description="UDP+TCP host:port")
    extra_addresses: list[str] = Field(
        default_factory=list,
        description="more local addresses served on listen's port over UDP+TCP (e.g. the "
                    "kube-dns ClusterIP beside 169.254.20.10, as NodeLocal DNSCache does)")
    dot_listen: str | None = Field(default=None, description="DNS-over-TLS host:port")
    doh_listen: str | None = Field(default=None, description="DNS-over-HTTPS host:port")
    doh_path: str = "/dns-query"
    tls_cert: str | None = None
    tls_key: str | None = None
    upstreams: list[str] = Field(default_factory=list, description="default: resolv.conf")
    upstream_timeout: float = Field(default=2.0, gt=0, le=30)
    upstream_ca: str | None = Field(default=None, description="CA file for DoT/DoH upstreams")
    upstream_verify: bool = True
    health_interval: float = Field(default=2.0, gt=0)
    tenant_map: str | None = None
    kubernetes: bool = False
    kubeconfig: str | None = None
    kube_api: str | None = Field(default=None, description="API server URL without auth "
                                 "(kubectl proxy, tests); default in-cluster or kubeconfig")
    kube_sync_timeout: float = Field(default=10.0, ge=0)
    node_name: str | None = Field(default=None, description="watch only this node's pods "
                                  "(spec.nodeName); default $NODE_NAME; unset: every pod")
    default_tenant: str = "default"
    default_namespace: str = ""
    cache_size: int = Field(default=100_000, ge=0)
    serve_stale: bool = False
    max_cache_ttl: int = Field(default=86_400, ge=1, le=0x7FFFFFFF,
                               description="cap on every TTL passed on and cached (seconds)")
    max_udp_size: int = Field(default=1232, ge=512, le=65535,
                              description="largest UDP answer whatever the client's EDNS size "
                              "(larger ones get TC=1)")
    chaos_identity: str | None = Field(default=None, description="CH TXT id.server / "
                                       "hostname.bind answer; unset = REFUSED (hidden)")
    chaos_version: str | None = Field(default=None, description="CH TXT version.bind / "
                                      "version.server answer; unset = REFUSED (hidden)")
    spool_dir: str | None = None
    spool_limit_mb: float = Field(default=1024, gt=0)
    events: bool = True
    event_queue: int = Field(default=200_000, ge=1000)
    producer: Literal["librdkafka", "bus"] = Field(
        default="librdkafka", description="events via librdkafka (fast) or the bus API")
    kafka_timeout: float = Field(default=10.0, gt=0, description="seconds before an "
                                 "undelivered event is spooled")
    metrics_listen: str | None = Field(default=None, description="host:port for /metrics")
    cluster_domain: str = "cluster.local"
    workers: int = Field(default=1, ge=1, le=64)
    worker_index: int = Field(default=0, ge=0)
    idle_timeout: float = Field(default=10.0, gt=0)
    # hostile clients (edge/listeners/budget.py, edge/rrl.py)
    max_connections: int = Field(default=2048, ge=1, description="TCP+DoT+DoH connections")
    max_connections_per_client: int = Field(default=64, ge=1)
    tcp_read_timeout: float = Field(default=5.0, gt=0, description="a started message "
                                    "(TCP/DoT query, DoH request) must be complete within")
    tls_handshake_timeout: float = Field(default=5.0, gt=0)
    rrl_rate: float = Field(default=0.0, ge=0, description="UDP answers per second per "
                            "client prefix; 0 = response rate limiting off")
    rrl_burst: float = Field(default=0.0, ge=0, description="bucket size; 0 = rrl_rate")
    rrl_slip: int = Field(default=2, ge=0, description="every Nth limited answer is sent "
                          "truncated (TC=1), the rest dropped; 0 = drop all")
    rrl_ipv4_prefix: int = Field(default=24, ge=8, le=32)
    rrl_ipv6_prefix: int = Field(default=56, ge=16, le=128)
    policy_snapshot: str | None = None
    subscribe_policies: bool = True
    reuse_port: bool = True
    egress: EgressConfig = Field(default_factory=EgressConfig, description="L4 egress from "
                                 "DNS answers with nftables (edge/egress/README.md)")

    @model_validator(mode="after")
    def _egress_one_worker(self) -> EdgeConfig:
        if self.egress.enabled and self.workers > 1:
            raise ValueError("egress.enabled needs workers: 1 (one process programs the "
                             "node's nftables sets)")
        return self

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: list[str]) -> list[str]:
        for u in value:
            parse_upstream(u)  # raises ValueError naming the bad one
        return value

    @model_validator(mode="after")
    def _no_loop(self) -> EdgeConfig:
        """An upstream that is one of the edge's own addresses would forward to itself."""
        from dnsflow.edge.listeners.sockets import split_hostport

        host, port = split_hostport(self.listen)
        own = {(a, port) for a in (host, *self.extra_addresses)} if port else set()
        for u in self.upstreams:
            addr = parse_upstream(u)
            if addr.scheme in ("udp", "tcp") and (addr.host, addr.port) in own:
                raise ValueError(
                    f"upstream {u!r} is one of the edge's own addresses (it would forward to "
                    f"itself): when the edge serves the kube-dns ClusterIP, forward to a "
                    f"separate Service for CoreDNS (NodeLocal DNSCache's kube-dns-upstream)")
        return self

    @field_validator("extra_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for a in value:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address") from None
        return value

    @field_validator("listen", "dot_listen", "doh_listen", "metrics_listen")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from dnsflow.edge.listeners.sockets import split_hostport

        try:
            _host, port = split_hostport(value)
        except ValueError:
            raise ValueError(f"{value!r} is not host:port") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"{value!r}: port out of range")
        return value
