"""Publish compiled policy sets on the compacted topic, only when the content really changed.

On start the publisher reads the topic back to learn each key's version and hash; a
document whose hash equals the published one is skipped, anything else goes out as
``version + 1``. Every publication also writes one ``policy_log`` record (JSON) to
``<prefix>policy_log`` for the sink::

    {"ts": µs, "tenant": "acme" | "_global", "version": 4, "hash": "sha256:..",
     "previous_hash": "sha256:.." | "", "source": "yaml:/etc/dnsflow/policies",
     "actor": "alice@host", "change": "changed shop/base: +rule block, ~rule pin",
     "document": "<the published content as a JSON string>"}
"""

from __future__ import annotations

import getpass
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from dnsflow.bus import Bus
from dnsflow.policies import records
from dnsflow.policies.topic import CompactedReader, ensure_topic
from dnsflow.policies.types import PolicyRecordError
from dnsflow.schema import now_us

log = logging.getLogger(__name__)
POLICY_LOG = "policy_log"
MAX_CHANGE_LEN = 1000


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class Change:
    """One key whose published content changes (or would, in a dry run)."""

    key: str
    tenant: str
    version: int
    previous_version: int
    hash: str
    previous_hash: str
    summary: str
    document: dict[str, Any]
    previous: dict[str, Any] | None

    def __str__(self) -> str:
        prev = f"v{self.previous_version}" if self.previous_version else "new"
        return f"{self.key}: {prev} -> v{self.version} {self.hash[:19]} ({self.summary})"


def _by_ref(doc: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in (doc or {}).get("policies", []):
        meta = p.get("metadata", {})
        ref = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name")
        out[str(ref)] = p
    return out


def _rules(p: Mapping[str, Any]) -> dict[str, bytes]:
    return {str(r.get("id", i)): records.canonical(r)
            for i, r in enumerate(p.get("spec", {}).get("rules", []))}


def summarize(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """A short human summary: policies added/removed, rules added/removed/changed."""
    if new.get("kind") == records.KIND_AUTO:
        before = {d["domain"] for d in (old or {}).get("denies", [])}
        after = {d["domain"] for d in new.get("denies", [])}
        parts = [f"+deny {d}" for d in sorted(after - before)]
        parts += [f"-deny {d}" for d in sorted(before - after)]
        return ", ".join(parts) or "auto-denies refreshed"
    a, b = _by_ref(old), _by_ref(new)
    parts: list[str] = []
    for ref in sorted(b.keys() - a.keys()):
        parts.append(f"added {ref} ({len(b[ref].get('spec', {}).get('rules', []))} rules)")
    for ref in sorted(a.keys() - b.keys()):
        parts.append(f"removed {ref}")
    for ref in sorted(a.keys() & b.keys()):
        if records.canonical(a[ref]) == records.canonical(b[ref]):
            continue
        ra, rb = _rules(a[ref]), _rules(b[ref])
        bits = [f"+rule {r}" for r in rb if r not in ra]
        bits += [f"-rule {r}" for r in ra if r not in rb]
        bits += [f"~rule {r}" for r in rb if r in ra and ra[r] != rb[r]]
        sa = {k: v for k, v in a[ref].get("spec", {}).items() if k != "rules"}
        sb = {k: v for k, v in b[ref].get("spec", {}).items() if k != "rules"}
        if records.canonical(sa) != records.canonical(sb):
            bits.append("spec " + ",".join(sorted(
                k for k in sa.keys() | sb.keys() if sa.get(k) != sb.get(k))))
        parts.append(f"changed {ref}: " + (", ".join(bits) or "order"))
    text = "; ".join(parts) or ("emptied" if not b else "reordered")
    return text if len(text) <= MAX_CHANGE_LEN else text[: MAX_CHANGE_LEN - 3] + "..."


class Publisher:
    """Owns what this process publishes; call :meth:`load` once before :meth:`publish`."""

    def __init__(self, bus: Bus, *, source: str, actor: str | None = None) -> None:
        self.bus = bus
        self.source = source
        self.actor = actor or default_actor()
        self.current: dict[str, dict[str, Any]] = {}
        self.published = 0
        self.loaded = False
        self._log_topic_ready = False
        self._reader: CompactedReader | None = None

    async def load(self) -> dict[str, dict[str, Any]]:
        """Read back what is on the topic (latest valid record per key); later calls only
        read what arrived since, so other publishers' versions are always seen."""
        if self._reader is None:
            self._reader = CompactedReader(self.bus, self.bus.topics.policies)
            self.current = {}
        raw = await self._reader.read_new()
        for key, value in raw.items():
            if value is None:
                self.current.pop(key, None)
                continue
            try:
                rec = records.decode(key.encode(), value)
            except PolicyRecordError as exc:
                log.warning("ignoring unreadable record on %s: %s", self.bus.topics.policies,
                            exc)
                continue
            cur = self.current.get(key)
            if cur is None or rec["version"] >= cur["version"]:
                self.current[key] = rec
        self.loaded = True
        return self.current

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    def plan(self, docs: Mapping[str, dict[str, Any]], *, prune: bool = False) -> list[Change]:
        """What :meth:`publish` would send. ``prune`` empties keys this source published
        earlier that are no longer in ``docs`` (other sources' keys are never touched)."""
        targets = dict(docs)
        if prune:
            for key, cur in self.current.items():
                if (key not in targets and cur.get("kind") == records.KIND_TENANT
                        and cur.get("source") == self.source and cur.get("policies")):
                    targets[key] = records.tenant_document(key, [])
                elif (key not in targets and cur.get("kind") == records.KIND_CLUSTER
                      and cur.get("source") == self.source and cur.get("policies")):
                    targets[key] = records.cluster_document([])
        changes = []
        for key in sorted(targets):
            doc = records.content_of(targets[key])
            h = records.content_hash(doc)
            cur = self.current.get(key)
            if cur is not None and cur.get("hash") == h:
                continue
            prev_version = int(cur["version"]) if cur else 0
            changes.append(Change(key, str(doc["tenant"]), prev_version + 1, prev_version, h,
                                  str(cur.get("hash", "")) if cur else "",
                                  summarize(cur, doc), doc, cur))
        return changes

    async def publish(self, docs: Mapping[str, dict[str, Any]], *, prune: bool = False,
                      actor: str | None = None, dry_run: bool = False) -> list[Change]:
        """Publish every changed document (policies first, then the policy_log)."""
        await self.load()  # catch up with every publisher, so versions only grow
        changes = self.plan(docs, prune=prune)
        if dry_run or not changes:
            return changes
        who = actor or self.actor
        ts = now_us()
        out = [records.encode(c.document, c.version, ts, self.source, who) for c in changes]
        await self.bus.send_many(self.bus.topics.policies, out)
        logs = [(c.tenant.encode(), orjson.dumps({
            "ts": ts, "tenant": c.tenant, "version": c.version, "hash": c.hash,
            "previous_hash": c.previous_hash, "source": self.source, "actor": who,
            "change": c.summary, "document": records.canonical(c.document).decode(),
        })) for c in changes]
        if not self._log_topic_ready:
            await ensure_topic(self.bus, self.bus.topics.name(POLICY_LOG))
            self._log_topic_ready = True
        await self.bus.send_many(self.bus.topics.name(POLICY_LOG), logs)
        for c, (_, value) in zip(changes, out, strict=True):
            self.current[c.key] = orjson.loads(value)
        self.published += len(changes)
        return changes
