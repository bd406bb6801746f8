"""The policy documents users write: ``DNSPolicy`` (per tenant) and ``ClusterDNSPolicy``.

Field names follow Kubernetes conventions (camelCase) so the same YAML works as a file and
as a custom resource. Every model forbids unknown fields, so a typo is an error with a field
path instead of a silently ignored rule. Semantics (precedence, isolation) are in README.md.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, ClassVar, Literal

import dns.exception
import dns.rdata
import dns.rdataclass
import dns.rdatatype
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dnsflow.kube import TENANT_LABEL as TENANT_LABEL  # re-exported by policies.api
from dnsflow.policies.names import check_name
from dnsflow.policies.regex import RegexError, compile_name_regex
from dnsflow.upstream_url import SCHEMES, parse_upstream_url

API_VERSION = "dnsflow.io/v1"

Action = Literal["allow", "deny", "rewrite", "redirect"]
DenyMode = Literal["NXDOMAIN", "REFUSED", "NODATA", "DROP"]
Rcode = Literal["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"]
# audit: what "tenant" isolation would hide is answered, and recorded as decision would_deny
Isolation = Literal["tenant", "namespace", "none", "audit"]
Tier = Literal["guardrail", "baseline"]
EgressMode = Literal["enforce", "audit"]
Protocol = Literal["TCP", "UDP", "SCTP"]

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
_LABEL_KEY = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
MAX_REGEX_LEN = 512
UPSTREAM_SCHEMES = SCHEMES


def _k8s_name(value: str, what: str) -> str:
    if not value or len(value) > 253 or not _DNS1123.match(value):
        raise ValueError(f"{what} {value!r} is not a valid DNS-1123 name (lower case "
                         "letters, digits, '-' and '.')")
    return value


def check_upstream(url: str) -> str:
    """Validate ``udp://host[:port]``, ``tcp://..``, ``tls://host[:port][@sni]``,
    ``https://host/path`` (``dot://`` and ``doh://`` alias ``tls://`` and ``https://``): the
    core's grammar (:mod:`dnsflow.upstream_url`), the one the edge parses them with."""
    parse_upstream_url(url)
    return url


def check_rdata(rtype: str, value: str) -> str:
    """Validate presentation-format rdata for ``rtype`` with dnspython."""
    try:
        rdtype = dns.rdatatype.from_text(rtype)
        rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, value)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ValueError(f"invalid {rtype} record data {value!r}: {exc}") from None
    return rd.to_text()


def check_qtype(value: str) -> str:
    text = str(value).upper()
    try:
        dns.rdatatype.from_text(text)
    except (dns.exception.DNSException, ValueError):
        raise ValueError(f"unknown query type {value!r}") from None
    return text


def _check_list(values: list[str], check: Callable[[str], str]) -> list[str]:
    out = []
    for i, item in enumerate(values):
        try:
            out.append(check(item))
        except ValueError as exc:
            raise ValueError(f"[{i}] {exc}") from None
    return out


def _check_regex(pattern: str) -> str:
    """Tenant regexes run at the shared edge on every query, so they are compiled with RE2
    (linear time in the name, no backtracking); what RE2 cannot compile is refused."""
    if len(pattern) > MAX_REGEX_LEN:
        raise ValueError(f"regex longer than {MAX_REGEX_LEN} characters")
    try:
        compile_name_regex(pattern)
    except RegexError as exc:
        raise ValueError(f"bad regex {pattern!r}: {exc} (policy regexes use RE2 syntax, which "
                         "matches in linear time: no backreferences or lookaround)") from None
    return pattern


def _check_rule_id(value: str) -> str:
    if not _RULE_ID.match(value):
        raise ValueError(f"rule id {value!r}: use letters, digits and _ . : / - "
                         "(at most 128)")
    return value


def _k8s(what: str, star: bool = False) -> Callable[[str], str]:
    """The check of one Kubernetes name (``star``: ``'*'`` stands for all)."""
    return lambda v: v if star and v == "*" else _k8s_name(v, what)


def _each(check: Callable[[str], str]) -> AfterValidator:
    """Checks every item of a list; an error names the item's index."""
    return AfterValidator(lambda v: _check_list(v, check))


# The checked field types: each field says what it holds instead of a validator method apiece.
K8sName = Annotated[str, AfterValidator(_k8s("name"))]
NamespaceName = Annotated[str, AfterValidator(_k8s("namespace"))]
TenantName = Annotated[str, AfterValidator(_k8s("tenant"))]
ServiceName = Annotated[str, AfterValidator(_k8s("service"))]
RuleId = Annotated[str, AfterValidator(_check_rule_id)]  # a rule's or egress rule's id
DomainName = Annotated[str, AfterValidator(check_name)]
NamePattern = Annotated[str, AfterValidator(partial(check_name, allow_wildcard=True))]
NamePatterns = Annotated[list[str], _each(partial(check_name, allow_wildcard=True))]
DomainNames = Annotated[list[str], _each(check_name)]
Regexes = Annotated[list[str], _each(_check_regex)]
QueryTypes = Annotated[list[str], _each(check_qtype)]
Upstreams = Annotated[list[str], _each(check_upstream)]
Namespaces = Annotated[list[str], _each(_k8s("namespace", star=True))]
Tenants = Annotated[list[str], _each(_k8s("tenant"))]
TenantsOrAll = Annotated[list[str], _each(_k8s("tenant", star=True))]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class Metadata(_Strict):
    name: K8sName
    namespace: NamespaceName | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ResponseMatch(_Strict):
    """Conditions on the upstream answer: evaluated by ``check_response``."""

    answer_cidrs: list[str] = Field(default_factory=list, alias="answerCIDRs")
    rcodes: list[Rcode] = Field(default_factory=list)

    @field_validator("answer_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        out = []
        for i, cidr in enumerate(v):
            try:
                out.append(str(ipaddress.ip_network(cidr, strict=True)))
            except ValueError as exc:
                raise ValueError(f"[{i}] bad CIDR {cidr!r}: {exc}") from None
        return out

    @model_validator(mode="after")
    def _not_empty(self) -> ResponseMatch:
        if not self.answer_cidrs and not self.rcodes:
            raise ValueError("response match needs answerCIDRs or rcodes")
        return self


class Match(_Strict):
    """What a rule matches. Empty name lists match every name; empty types every type."""

    names: NamePatterns = Field(default_factory=list,
                             description="exact names, or '*.zone' for names strictly below zone")
    suffixes: DomainNames = Field(default_factory=list,
                                description="a zone: the name itself and everything below")
    regex: Regexes = Field(default_factory=list,
                             description="RE2 regular expressions (linear time) matched against "
                                         "the whole lower-case name without trailing dot")
    types: QueryTypes = Field(default_factory=list)
    response: ResponseMatch | None = None

    @property
    def all_names(self) -> bool:
        return not (self.names or self.suffixes or self.regex)


class RecordData(_Strict):
    """One local answer of a rewrite; its owner name is the query name."""

    type: str
    value: str
    ttl: int = Field(default=60, ge=0, le=604800)

    @model_validator(mode="after")
    def _rdata(self) -> RecordData:
        rtype = check_qtype(self.type)
        object.__setattr__(self, "type", rtype)
        object.__setattr__(self, "value", check_rdata(rtype, self.value))
        return self


class ViewRecord(RecordData):
    name: NamePattern


class Rewrite(_Strict):
    records: list[RecordData] = Field(default_factory=list)
    cname: DomainName | None = None

    @model_validator(mode="after")
    def _one(self) -> Rewrite:
        if bool(self.records) == bool(self.cname):
            raise ValueError("rewrite needs exactly one of 'records' or 'cname'")
        return self


class Redirect(_Strict):
    upstreams: Upstreams = Field(min_length=1)


class RateLimit(_Strict):
    qps: float = Field(gt=0)
    burst: int = Field(default=0, ge=0, description="0 means max(1, qps)")


class Rule(_Strict):
    id: RuleId | None = Field(default=None, description="stable id; default '<policy>#<n>'")
    match: Match = Field(default_factory=Match)
    action: Action
    deny_mode: DenyMode | None = None
    rewrite: Rewrite | None = None
    redirect: Redirect | None = None
    rate_limit: RateLimit | None = None
    log: bool = False
    audit: bool = Field(default=False, description="a deny that is recorded (decision "
                        "would_deny) but not enforced: roll a rule out before it bites")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        a = self.action
        if (a == "rewrite") != (self.rewrite is not None):
            raise ValueError("'rewrite' is required with action rewrite and only allowed "
                             "with it")
        if (a == "redirect") != (self.redirect is not None):
            raise ValueError("'redirect' is required with action redirect and only allowed "
                             "with it")
        if self.deny_mode is not None and a != "deny":
            raise ValueError("'denyMode' is only allowed with action deny")
        if self.audit and a != "deny":
            raise ValueError("'audit' is only allowed with action deny")
        if self.rate_limit is not None and a == "deny":
            raise ValueError("'rateLimit' makes no sense with action deny")
        if self.match.response is not None and a == "redirect":
            raise ValueError("a response rule (match.response) cannot redirect: the query "
                             "was already answered")
        return self


class ClientSelector(_Strict):
    """Which of the tenant's clients a DNSPolicy applies to (all conditions must hold)."""

    namespaces: Namespaces = Field(default_factory=list,
                                  description="default: the policy's own namespace; '*': all "
                                              "namespaces of the tenant")
    labels: dict[str, str] = Field(default_factory=dict)
    service_accounts: list[str] = Field(default_factory=list)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"bad label key {key!r}")
        return v


class ClusterClientSelector(ClientSelector):
    """For ClusterDNSPolicy: empty lists mean every tenant / every namespace."""

    tenants: Tenants = Field(default_factory=list)


_FQDN_PATTERN = re.compile(r"^(\*|[-a-z0-9_*]+(\.[-a-z0-9_*]+)*)$")


def check_fqdn_pattern(value: str) -> str:
    """A ``matchPattern`` as Cilium's ``toFQDNs`` spells it: ``*`` stands for any run of
    name characters inside one label (never a dot); a lone ``*`` is every name."""
    v = value.lower().rstrip(".")
    if len(v) > 253 or not _FQDN_PATTERN.match(v):
        raise ValueError(f"pattern {value!r}: use labels of letters, digits, '-', '_' and "
                         "'*' separated by single dots (a lone '*' matches every name)")
    if "*" not in v:
        return check_name(v)
    return v


FQDNPattern = Annotated[str, AfterValidator(check_fqdn_pattern)]


class FQDNSelector(_Strict):
    """One name of ``toFQDNs``: exactly one of ``matchName`` and ``matchPattern``."""

    match_name: DomainName | None = Field(default=None, description="one exact name")
    match_pattern: FQDNPattern | None = Field(
        default=None, description="'*' = any characters inside one label, e.g. "
                                  "'*.example.com', 'api-*.example.com'; '*' alone: every name")

    @model_validator(mode="after")
    def _one(self) -> FQDNSelector:
        if (self.match_name is None) == (self.match_pattern is None):
            raise ValueError("needs exactly one of 'matchName' or 'matchPattern'")
        return self


class PortSpec(_Strict):
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = "TCP"


class EgressRule(_Strict):
    """Connections the selected clients may open: to the addresses the edge answered them
    for these names, on these ports (none listed: every port), while the answer's TTL
    (plus the node's grace) lasts. Everything else they send is dropped (``enforce``) or
    recorded as what would be dropped (``audit``)."""

    id: RuleId | None = Field(default=None, description="stable id; default '<policy>#egress<n>'")
    to_fqdns: list[FQDNSelector] = Field(min_length=1, alias="toFQDNs")
    ports: list[PortSpec] = Field(default_factory=list,
                                  description="empty: every port and protocol")
    clients: ClientSelector | None = Field(default=None,
                                           description="default: the policy's clients")
    mode: EgressMode = "enforce"


class ClusterEgressRule(EgressRule):
    clients: ClusterClientSelector | None = Field(
        default=None, description="default: the policy's clients")


class View(_Strict):
    records: list[ViewRecord] = Field(default_factory=list)
    search_domains: DomainNames = Field(default_factory=list)
    upstreams: Upstreams = Field(default_factory=list)


class Export(_Strict):
    """A service of the policy's namespace that other tenants may resolve."""

    service: ServiceName
    to: TenantsOrAll = Field(min_length=1,
                             description="tenant names, or '*' for every tenant")


class DNSPolicySpec(_Strict):
    tenant: TenantName | None = Field(default=None,
                                      description="default: the namespace's tenant label, "
                                                  "or the namespace name for files")
    priority: int = Field(default=100, ge=0, le=1000,
                          description="lower is evaluated first among the tenant's policies")
    clients: ClientSelector = Field(default_factory=ClientSelector)
    rules: list[Rule] = Field(default_factory=list)
    view: View | None = None
    isolation: Isolation | None = None
    exports: list[Export] = Field(default_factory=list)
    egress: list[EgressRule] = Field(default_factory=list, description="L4 egress from "
                                     "DNS answers (edge/egress/README.md)")


class ClusterDNSPolicySpec(_Strict):
    tier: Tier = Field(default="guardrail",
                       description="guardrail: before tenant rules; baseline: after them")
    priority: int = Field(default=100, ge=0, le=1000)
    clients: ClusterClientSelector = Field(default_factory=ClusterClientSelector)
    rules: list[Rule] = Field(default_factory=list)
    isolation: Isolation | None = Field(default=None, description="the isolation of every "
                                        "namespace whose own policy sets none (default "
                                        "tenant); the first cluster policy by priority that "
                                        "sets it wins")
    egress: list[ClusterEgressRule] = Field(default_factory=list, description="L4 egress "
                                            "from DNS answers (edge/egress/README.md)")


class _Resource(_Strict):
    """What both kinds share; :attr:`namespaced` says whether ``metadata.namespace`` is
    required (a DNSPolicy) or refused (a ClusterDNSPolicy)."""

    namespaced: ClassVar[bool]
    api_version: Literal["dnsflow.io/v1"]
    kind: str
    metadata: Metadata
    spec: _Strict

    @model_validator(mode="after")
    def _scope(self) -> _Resource:
        if self.namespaced and not self.metadata.namespace:
            raise ValueError(f"metadata.namespace is required for a {self.kind}")
        if not self.namespaced and self.metadata.namespace:
            raise ValueError(f"a {self.kind} is cluster-scoped: remove metadata.namespace")
        return self

    @property
    def ref(self) -> str:
        """``namespace/name``; ``name`` for a cluster-scoped kind."""
        m = self.metadata
        return f"{m.namespace}/{m.name}" if self.namespaced else m.name


class DNSPolicy(_Resource):
    namespaced = True
    kind: Literal["DNSPolicy"]
    spec: DNSPolicySpec

    @property
    def tenant(self) -> str:
        return self.spec.tenant or str(self.metadata.namespace)


class ClusterDNSPolicy(_Resource):
    namespaced = False
    kind: Literal["ClusterDNSPolicy"]
    spec: ClusterDNSPolicySpec


AnyPolicy = Annotated[DNSPolicy | ClusterDNSPolicy, Field(discriminator="kind")]
KINDS = {"DNSPolicy": DNSPolicy, "ClusterDNSPolicy": ClusterDNSPolicy}


def dump(policy: DNSPolicy | ClusterDNSPolicy) -> dict[str, Any]:
    """Canonical JSON-able form (aliases, defaults dropped) used for records and hashes."""
    return policy.model_dump(mode="json", by_alias=True, exclude_defaults=True)
