"""The policies API the edge consumes, with a permissive stand-in until ``policies`` is built.

Why a stand-in: the edge must answer DNS even on a tree where the policies component is not
installed (e.g. the first milestone); it then allows everything and says so in ``status()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

try:  # pragma: no cover - exercised by whichever tree is installed
    from policies.api import (  # type: ignore[import-not-found]
        ClientInfo,
        LocalRecord,
        PolicyRecordError,
        PolicyStore,
        Verdict,
        View,
    )

    POLICIES_AVAILABLE = True
except ImportError:  # pragma: no cover
    POLICIES_AVAILABLE = False

    @dataclass(frozen=True, slots=True)
    class ClientInfo:  # type: ignore[no-redef]
        ip: str
        tenant: str
        namespace: str
        pod: str = ""
        service_account: str = ""
        labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @dataclass(frozen=True, slots=True)
    class LocalRecord:  # type: ignore[no-redef]
        name: str
        rtype: str
        ttl: int
        rdata: str

    @dataclass(frozen=True, slots=True)
    class Verdict:  # type: ignore[no-redef]
        action: str
        rule: str
        policy_version: int
        deny_mode: str = ""
        records: tuple = ()
        upstreams: tuple[str, ...] = ()
        rate_limit: tuple[float, int] | None = None
        log: bool = False
        isolated: bool = False

    @dataclass(frozen=True, slots=True)
    class View:  # type: ignore[no-redef]
        tenant: str
        records: tuple = ()
        search_domains: tuple[str, ...] = ()
        upstreams: tuple[str, ...] = ()
        cluster_domain: str = "cluster.local"

    class PolicyRecordError(ValueError):  # type: ignore[no-redef]
        pass

    class PolicyStore:  # type: ignore[no-redef]
        """Allows everything: used only when the policies component is absent."""

        _ALLOW = Verdict("allow", "", 0)

        def __init__(self, cluster_domain: str = "cluster.local") -> None:
            self.cluster_domain = cluster_domain

        def apply_record(self, key: bytes | None, value: bytes | None) -> bool:
            raise PolicyRecordError("policies component is not installed")

        def set_namespace_tenants(self, mapping: Mapping[str, str]) -> None:
            return None

        def decide(self, client: Any, qname: str, qtype: str) -> Verdict:
            return self._ALLOW

        def hides(self, client: Any, name: str) -> bool:
            return False

        def check_response(self, client: Any, qname: str, qtype: str, rcode: str,
                           answer_ips: Sequence[str]) -> Verdict | None:
            return None

        def view(self, tenant: str) -> View:
            return View(tenant, cluster_domain=self.cluster_domain)

        def version(self, tenant: str) -> int:
            return 0

        def snapshot(self) -> bytes:
            return b"{}"

        @classmethod
        def from_snapshot(cls, data: bytes, cluster_domain: str = "cluster.local") -> PolicyStore:
            return cls(cluster_domain)


__all__ = ["POLICIES_AVAILABLE", "ClientInfo", "LocalRecord", "PolicyRecordError", "PolicyStore",
           "Verdict", "View"]
