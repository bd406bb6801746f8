"""The one place streams/ touches policies/: building auto-deny records.

The record format belongs to the policies component (``policies.api.auto_deny_record``);
until that module is importable we fall back to a minimal record of the documented shape
so the streams keep working (and tests say which path ran).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from dnsflow.schema import now_us


@dataclass(frozen=True)
class Deny:
    tenant: str
    domain: str
    expires_at_us: int
    cause: str
    kind: str


def policies_available() -> bool:
    try:
        import dnsflow.policies.api  # noqa: F401
    except ImportError:
        return False
    return True


def auto_deny_key(tenant: str) -> bytes:
    return b"auto:" + tenant.encode()


def record(tenant: str, denies: Sequence[Deny], version: int) -> tuple[bytes, bytes]:
    """(key, value) for the policies topic: the complete auto-deny set of ``tenant``."""
    try:
        from dnsflow.policies.api import AutoDeny, auto_deny_record
    except ImportError:
        value = {
            "tenant": tenant, "version": version, "published_at": now_us(),
            "source": "streams", "kind": "auto",
            "denies": [{"domain": d.domain, "expires_at_us": d.expires_at_us,
                        "cause": d.cause, "kind": d.kind} for d in denies],
        }
        return auto_deny_key(tenant), orjson.dumps(value)
    return auto_deny_record(
        tenant,
        [AutoDeny(d.tenant, d.domain, d.expires_at_us, d.cause, d.kind) for d in denies],
        version,
    )
