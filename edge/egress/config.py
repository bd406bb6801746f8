"""``edge.egress`` settings (validated; errors name the field)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


class EgressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="program nftables from egress rules")
    table: str = Field(default="dnsflow", pattern=_TABLE.pattern,
                       description="the inet table this edge owns")
    grace: float = Field(default=5.0, ge=0, le=3600,
                         description="seconds an address stays allowed after its TTL")
    min_ttl: int = Field(default=5, ge=0, le=3600,
                         description="an answer with a shorter TTL is allowed this long")
    on_start: Literal["flush", "keep"] = Field(
        default="flush", description="flush: start with no allowance (clients re-resolve); "
        "keep: keep what the previous run allowed until it expires")
    fail: Literal["closed", "open"] = Field(
        default="closed", description="closed: an answer whose allowance cannot be programmed "
        "is SERVFAIL, a table that cannot be installed stops the edge from starting, the "
        "table stays (and drops) while the edge is down; open: the answer goes out anyway, "
        "egress is off when the table cannot be installed, and removed when the edge stops")
    nflog_group: int = Field(default=17, ge=0, le=65535,
                             description="NFLOG group of dropped attempts (0: not logged)")
    dns_port: int = Field(default=53, ge=1, le=65535,
                          description="DNS port enforced clients may always reach")
    dns_addresses: list[str] = Field(
        default_factory=list, description="addresses of DNS servers enforced clients may "
        "always reach (default: the edge's listen and extra addresses)")
    events_file: str | None = Field(default=None, description="also append each egress "
                                    "event as a JSON line here (audit trail without Kafka)")
    sync_interval: float = Field(default=2.0, gt=0, description="seconds between client set "
                                 "checks (identity and policy changes also trigger one)")
