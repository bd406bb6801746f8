"""Alert rules over the anomaly stream, from a YAML file.

```yaml
rules:
  - id: dga-high                 # alert key on dnsflow.alerts
    match: {kind: [dga], tenant: ["shop*"], min_severity: high, min_score: 0.8}
    threshold: {count: 1, window_s: 60}   # this many matching anomalies in the window
    group_by: [tenant, client_ip]         # thresholds and suppression per group
    suppress_s: 600                       # after firing, stay quiet this long per group
    webhook: {url: "http://127.0.0.1:8080/hook", retries: 3, timeout_s: 5}
```

A file that does not validate is rejected with the field path
(``rules.0.match.min_severity: ...``); the engine keeps the last good rule set.
Event time throughout, so replay fires the same alerts as the live stream.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dnsflow.streams.config import SEVERITY_RANK, Kind, SeverityName
from dnsflow.streams.windows import to_us
from dnsflow.yaml_file import load_yaml


class RuleFileError(ValueError):
    """An alert rule file that cannot be used; the message names file and field."""


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: list[Kind] = Field(default_factory=list, description="empty = any kind")
    tenant: list[str] = Field(default_factory=list, description="glob patterns; empty = any")
    min_severity: SeverityName = "low"
    min_score: float = Field(0.0, ge=0, le=1)


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(1, ge=1)
    window_s: float = Field(60, gt=0)


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://")
    retries: int = Field(3, ge=0, le=20)
    timeout_s: float = Field(5, gt=0, le=120)
    backoff_s: float = Field(0.5, ge=0, le=60)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str = ""
    match: Match = Match()
    threshold: Threshold = Threshold()
    group_by: list[Literal["tenant", "client_ip", "domain", "kind"]] = Field(
        default_factory=lambda: ["tenant"])
    suppress_s: float = Field(300, ge=0)
    severity: SeverityName | None = Field(None, description="alert severity; default: "
                                          "the highest of the anomalies")
    webhook: Webhook | None = None


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: set[str] = set()
        for i, r in enumerate(self.rules):
            if r.id in seen:
                raise ValueError(f"rules.{i}.id: duplicate rule id {r.id!r}")
            seen.add(r.id)
        return self


DEFAULT_RULES = RuleSet(rules=[
    Rule(id="high-severity", description="any detection of high or critical severity",
         match=Match(min_severity="high"), group_by=["tenant", "kind", "client_ip"],
         suppress_s=600),
    Rule(id="cross-tenant-probe", description="a client probing other tenants' names",
         match=Match(kind=["cross_tenant"]), group_by=["tenant", "client_ip"],
         suppress_s=600),
])


def parse_rules(data: Any, where: str) -> RuleSet:
    try:
        return RuleSet.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        if msg.startswith("rules."):
            raise RuleFileError(f"{where}: {msg}") from None
        raise RuleFileError(f"{where}: {loc}: {msg}") from None


def load_rules(path: str | Path) -> RuleSet:
    return parse_rules(load_yaml(path, str(path), RuleFileError), str(path))


class AlertEngine:
    """Counts matching anomalies per rule and group; fires and suppresses in event time."""

    def __init__(self, rules: RuleSet, emit: Callable[[str, dict[str, Any]], None]) -> None:
        self.emit = emit
        self._rules = rules
        self._compiled = _compile(rules)
        self.windows: dict[tuple[str, tuple[str, ...]], deque[tuple[int, dict[str, Any]]]] = {}
        self.quiet_until: dict[tuple[str, tuple[str, ...]], int] = {}
        self.suppressed = 0
        self.last_error: str | None = None

    @property
    def rules(self) -> RuleSet:
        return self._rules

    @rules.setter
    def rules(self, rules: RuleSet) -> None:
        self._rules = rules
        self._compiled = _compile(rules)

    def replace(self, rules: RuleSet) -> None:
        self.rules = rules
        ids = {r.id for r in rules.rules}
        self.windows = {k: v for k, v in self.windows.items() if k[0] in ids}

    def reload(self, path: str | Path) -> str | None:
        """Load ``path``; on error keep the current rules and return the error."""
        try:
            self.replace(load_rules(path))
        except RuleFileError as exc:
            self.last_error = str(exc)
            return self.last_error
        self.last_error = None
        return None

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules.rules if r.id == rule_id), None)

    @staticmethod
    def matches(rule: Rule, a: dict[str, Any]) -> bool:
        m = rule.match
        if m.kind and a["kind"] not in m.kind:
            return False
        if m.tenant and not any(fnmatch.fnmatchcase(a["tenant"], p) for p in m.tenant):
            return False
        if SEVERITY_RANK.get(a["severity"], 0) < SEVERITY_RANK[m.min_severity]:
            return False
        return a["score"] >= m.min_score

    def on_anomaly(self, a: dict[str, Any]) -> None:
        ts = a["ts"]
        rank = SEVERITY_RANK.get(a["severity"], 0)
        for c in self._compiled:
            if (rank < c.min_rank or a["score"] < c.min_score
                    or (c.kinds is not None and a["kind"] not in c.kinds)
                    or (c.tenants and not c.tenant_ok(a["tenant"]))):
                continue
            rule = c.rule
            group = tuple(str(a.get(f) or "") for f in rule.group_by)
            key = (rule.id, group)
            win = self.windows.get(key)
            if win is None:
                win = self.windows[key] = deque()
            win.append((ts, a))
            horizon = ts - c.window_us
            while win and win[0][0] <= horizon:
                win.popleft()
            if len(win) < rule.threshold.count:
                continue
            if ts < self.quiet_until.get(key, -1):
                self.suppressed += 1
                continue
            self.quiet_until[key] = ts + c.suppress_us
            anomalies = [x for _, x in win]
            win.clear()
            self.emit(rule.id, self._alert(rule, group, anomalies, ts))

    @staticmethod
    def _alert(rule: Rule, group: tuple[str, ...], anomalies: list[dict[str, Any]],
               ts: int) -> dict[str, Any]:
        worst = max(anomalies, key=lambda x: SEVERITY_RANK.get(x["severity"], 0))
        groups = dict(zip(rule.group_by, group, strict=True))
        what = ", ".join(f"{k}={v}" for k, v in groups.items() if v)
        kinds = sorted({x["kind"] for x in anomalies})
        return {
            "v": 1, "ts": ts, "rule": rule.id, "severity": rule.severity or worst["severity"],
            "tenant": worst["tenant"], "group": groups, "count": len(anomalies),
            "window_s": rule.threshold.window_s, "kinds": kinds,
            "summary": f"{len(anomalies)} x {'/'.join(kinds)} ({what}) max score "
                       f"{max(x['score'] for x in anomalies):.2f}",
            "incidents": sorted({str(x["evidence"].get("incident")) for x in anomalies})[:20],
            "domains": sorted({x["domain"] for x in anomalies if x.get("domain")})[:20],
        }


class _Compiled:
    """A rule's match prepared once per rule set (anomalies are matched against every rule)."""

    __slots__ = ("kinds", "min_rank", "min_score", "rule", "suppress_us", "tenant_seen",
                 "tenants", "window_us")

    def __init__(self, rule: Rule) -> None:
        m = rule.match
        self.rule = rule
        self.kinds = frozenset(m.kind) if m.kind else None
        self.tenants = tuple(m.tenant)
        self.tenant_seen: dict[str, bool] = {}
        self.min_rank = SEVERITY_RANK[m.min_severity]
        self.min_score = m.min_score
        self.window_us = to_us(rule.threshold.window_s)
        self.suppress_us = to_us(rule.suppress_s)

    def tenant_ok(self, tenant: str) -> bool:
        ok = self.tenant_seen.get(tenant)
        if ok is None:
            if len(self.tenant_seen) > 10_000:
                self.tenant_seen.clear()
            ok = self.tenant_seen[tenant] = any(fnmatch.fnmatchcase(tenant, p)
                                                for p in self.tenants)
        return ok


def _compile(rules: RuleSet) -> list[_Compiled]:
    return [_Compiled(r) for r in rules.rules]
