"""Time-limited denies published by the streams' automatic response.

They travel on the policies topic under ``auto:<tenant>`` so they compact separately from the
tenant's authored policy; each record carries the complete current set for the tenant.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnsflow.policies.names import check_name
from dnsflow.policies.records import KIND_AUTO, encode
from dnsflow.policies.types import PolicyRecordError
from dnsflow.schema import now_us


@dataclass(frozen=True)
class AutoDeny:
    """Deny ``domain`` and everything below it for ``tenant`` until ``expires_at_us``."""

    tenant: str
    domain: str
    expires_at_us: int
    cause: str
    kind: str


def auto_deny_document(tenant: str, denies: Sequence[AutoDeny]) -> dict[str, Any]:
    items = []
    for d in sorted(denies, key=lambda d: (d.domain, d.expires_at_us)):
        if d.tenant != tenant:
            raise ValueError(f"auto-deny for tenant {d.tenant!r} in the set of {tenant!r}")
        items.append({"domain": check_name(d.domain), "expires_at_us": int(d.expires_at_us),
                      "cause": d.cause, "kind": d.kind})
    return {"kind": KIND_AUTO, "tenant": tenant, "denies": items}


def auto_deny_record(tenant: str, denies: Sequence[AutoDeny], version: int) -> tuple[bytes, bytes]:
    """The (key, value) to publish: the complete current auto-deny set of ``tenant``.

    An empty ``denies`` lifts them all. ``version`` must grow with each publication.
    """
    try:
        actor = getpass.getuser()
    except Exception:
        actor = "streams"
    return encode(auto_deny_document(tenant, denies), version, now_us(), "streams", actor)


def parse_denies(tenant: str, items: list[Any]) -> list[AutoDeny]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(AutoDeny(tenant, check_name(item["domain"]), int(item["expires_at_us"]),
                                str(item.get("cause", "")), str(item.get("kind", ""))))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyRecordError(f"auto-deny record for {tenant!r}: denies[{i}]: "
                                    f"{exc}") from None
    return out
