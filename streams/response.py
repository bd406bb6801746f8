"""Automatic response: time-limited denies for severe DGA/tunneling detections.

Opt-in per tenant and per kind (``streams.auto_response``). A qualifying anomaly adds (or
extends) a deny of its registered domain for its tenant until ``ts + ttl``; when the event-time
watermark passes the expiry the deny is lifted. Each change republishes the tenant's complete
set through ``policies.api.auto_deny_record`` (key ``auto:<tenant>``), is logged with its
cause, and is also emitted as a ``policy_update`` output. Versions are event-time
microseconds (made strictly increasing), so they keep growing across restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dnsflow.streams import policy_bridge
from dnsflow.streams.config import SEVERITY_RANK, AutoResponseConfig
from dnsflow.streams.windows import to_us

log = logging.getLogger("dnsflow.streams.response")


class AutoResponder:
    def __init__(self, cfg: AutoResponseConfig,
                 emit: Callable[[dict[str, Any], tuple[bytes, bytes]], None]) -> None:
        self.cfg = cfg
        self.emit = emit
        self.ttl = to_us(cfg.ttl_s)
        self.min_rank = SEVERITY_RANK[cfg.min_severity]
        self.active: dict[str, dict[str, policy_bridge.Deny]] = {}
        self.version: dict[str, int] = {}

    def eligible(self, tenant: str, kind: str) -> bool:
        if not self.cfg.enabled:
            return False
        kinds = self.cfg.tenants.get(tenant)
        if kinds is None:
            kinds = self.cfg.tenants.get("*", [])
        return kind in kinds

    def on_anomaly(self, a: dict[str, Any]) -> None:
        tenant, kind, domain = a["tenant"], a["kind"], a.get("domain") or ""
        if not domain or SEVERITY_RANK.get(a["severity"], 0) < self.min_rank:
            return
        if not self.eligible(tenant, kind):
            return
        expires = a["ts"] + self.ttl
        denies = self.active.setdefault(tenant, {})
        old = denies.get(domain)
        if old is not None and old.expires_at_us >= expires:
            return
        cause = (f"anomaly {kind} severity={a['severity']} score={a['score']:.2f} "
                 f"client={a.get('client_ip') or '-'} incident={a['evidence'].get('incident')}")
        deny = denies[domain] = policy_bridge.Deny(tenant, domain, expires, cause, kind)
        self._publish(deny, a["ts"], "extend" if old else "deny")

    def expire(self, watermark: int) -> None:
        for tenant in sorted(self.active):
            denies = self.active[tenant]
            for domain in sorted(d for d, x in denies.items() if x.expires_at_us <= watermark):
                gone = denies.pop(domain)
                self._publish(gone, gone.expires_at_us, "lift", f"expired (was: {gone.cause})")

    def _publish(self, deny: policy_bridge.Deny, ts: int, action: str,
                 cause: str | None = None) -> None:
        """Republish the tenant's whole deny set after ``action`` on ``deny``."""
        tenant, domain, cause = deny.tenant, deny.domain, cause or deny.cause
        version = max(ts, self.version.get(tenant, 0) + 1)
        self.version[tenant] = version
        current = sorted(self.active.get(tenant, {}).values(), key=lambda d: d.domain)
        key, value = policy_bridge.record(tenant, current, version)
        log.warning("auto-response %s tenant=%s domain=%s version=%d: %s",
                    action, tenant, domain, version, cause)
        self.emit({
            "v": 1, "ts": ts, "tenant": tenant, "action": action, "domain": domain,
            "expires_at_us": deny.expires_at_us, "version": version, "cause": cause,
            "key": key.decode(), "active": [d.domain for d in current],
        }, (key, value))

    def status(self) -> dict[str, list[str]]:
        return {t: sorted(d) for t, d in self.active.items() if d}
