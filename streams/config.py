"""The ``streams:`` settings section, validated so errors name the field path.

Every knob has a default that works for the demo and for a small cluster; durations are
seconds in the file and microseconds inside the logic (the event ``ts`` unit).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dnsflow.settings import Settings, section

Kind = Literal["dga", "tunneling", "nxdomain_burst", "rate_spike", "cross_tenant", "new_domain"]
SeverityName = Literal["low", "medium", "high", "critical"]

SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}

# CDN and cloud hostnames that carry hashes or random tokens by design; never flagged.
DEFAULT_ALLOWLIST = (
    "cloudfront.net", "akamai.net", "akamaiedge.net", "akamaihd.net", "akamaized.net",
    "edgekey.net", "edgesuite.net", "akamaitechnologies.com", "azureedge.net", "azurefd.net",
    "trafficmanager.net", "windows.net", "azure.com", "azurewebsites.net", "msedge.net",
    "amazonaws.com", "awsdns-cn.com", "elb.amazonaws.com", "googleusercontent.com",
    "googlevideo.com", "gvt1.com", "gvt2.com", "1e100.net", "googleapis.com",
    "googlesyndication.com", "doubleclick.net", "gstatic.com", "fastly.net",
    "fastlylb.net", "cloudflare.net", "cloudflare.com", "cdn77.org", "edgecastcdn.net",
    "llnwd.net", "stackpathdns.com", "b-cdn.net", "cdn.jsdelivr.net", "jsdelivr.net",
    "apple-dns.net", "aaplimg.com", "icloud.com", "mzstatic.com", "office.net",
    "office365.com", "outlook.com", "live.com", "skype.com", "spotify.com", "scdn.co",
    "sophosxl.net", "mcafee.com", "trendmicro.com", "herokudns.com", "vercel-dns.com",
    "netlify.app", "github.io", "githubusercontent.com", "docker.io", "docker.com",
    "in-addr.arpa", "ip6.arpa",
)


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    top_names: int = Field(10, ge=0, le=1000)
    names_exact_cap: int = Field(20_000, ge=100, description="exact name counts per pane "
                                 "before the HyperLogLog overflow takes over")


class DgaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    window_s: float = Field(60, gt=0)
    min_label_len: int = Field(6, ge=1, description="shorter registered labels are not scored")
    suspicious_score: float = Field(0.6, ge=0, le=1)
    nx_min: int = Field(8, ge=1, description="distinct NXDOMAIN registered domains per client")
    susp_min: int = Field(4, ge=1, description="distinct suspicious registered domains")
    slow_window_s: float = Field(600, gt=0, description="window for slow DGAs")
    slow_nx_min: int = Field(12, ge=1)
    slow_nx_share: float = Field(0.1, ge=0, le=1)
    c2_score: float = Field(0.8, ge=0, le=1, description="a resolving domain needs this "
                            "score to be named as the live C2 (and be auto-denied)")
    nx_share: float = Field(0.2, ge=0, le=1, description="NXDOMAIN share of a client's "
                            "queries needed when its NXDOMAIN names look benign")


class TunnelingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_sub_len: int = Field(14, ge=1, description="subdomain part shorter than this is ignored")
    window_s: float = Field(60, gt=0)
    min_unique: int = Field(20, ge=2)
    long_window_s: float = Field(3600, gt=0, description="low-and-slow window")
    long_min_unique: int = Field(60, ge=2)
    min_avg_len: float = Field(18, ge=1)
    min_randomness: float = Field(0.5, ge=0, le=1)


class NxBurstConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    window_s: float = Field(60, gt=0)
    client_min: int = Field(30, ge=1)
    client_ratio: float = Field(0.5, ge=0, le=1)
    tenant_min: int = Field(300, ge=1)
    tenant_ratio: float = Field(0.3, ge=0, le=1)


class RateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    pane_s: float = Field(10, gt=0)
    alpha: float = Field(0.1, gt=0, le=1, description="EWMA weight of the newest pane")
    k_sigma: float = Field(6.0, gt=0)
    factor: float = Field(3.0, ge=1, description="also require count >= factor * baseline")
    warmup_panes: int = Field(6, ge=1)
    client_min: int = Field(200, ge=1)
    tenant_min: int = Field(1000, ge=1)


class CrossTenantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    window_s: float = Field(60, gt=0)
    min_count: int = Field(3, ge=1)
    rule_prefix: str = "isolation"


class NewDomainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    warmup_s: float = Field(300, ge=0, description="learn a tenant's domains this long first")
    max_per_window: int = Field(20, ge=0)
    window_s: float = Field(60, gt=0)
    max_known: int = Field(200_000, ge=100)


class DetectorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dga: DgaConfig = DgaConfig()
    tunneling: TunnelingConfig = TunnelingConfig()
    nxdomain_burst: NxBurstConfig = NxBurstConfig()
    rate_spike: RateConfig = RateConfig()
    cross_tenant: CrossTenantConfig = CrossTenantConfig()
    new_domain: NewDomainConfig = NewDomainConfig()
    allowlist: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWLIST))
    extra_allowlist: list[str] = Field(default_factory=list)


class IncidentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idle_s: float = Field(600, gt=0, description="an incident ends after this long quiet")
    min_update_s: float = Field(60, ge=0, description="at most one plain update this often")
    score_step: float = Field(0.1, ge=0)


class AutoResponseConfig(BaseModel):
    """Opt-in: only listed tenants (``*`` = all) and kinds get automatic denies."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    ttl_s: float = Field(900, gt=0)
    min_severity: SeverityName = "high"
    tenants: dict[str, list[Kind]] = Field(
        default_factory=lambda: {"*": ["dga", "tunneling"]}
    )


class StreamsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    windows: list[float] = Field(default_factory=lambda: [10.0, 60.0])
    grace_s: float = Field(5, ge=0, description="late events this old still count")
    max_skew_s: float = Field(
        30, ge=0, description="a tenant this far behind the newest event stops holding "
        "the watermark back (its later events may be too late)")
    max_future_s: float = Field(
        300, gt=0, description="live drivers dead-letter events this far ahead of the clock")
    idle_advance_s: float = Field(
        2.0, ge=0, description="live driver: advance the watermark by wall clock after idling"
    )
    group: str = "dnsflow-streams"
    checkpoint_s: float = Field(
        2.0, gt=0, le=3600, description="faust worker: write the state this often; offsets "
        "are committed only as far as a written checkpoint reaches, so a crash repeats at "
        "most this much input and loses none")
    telemetry: TelemetryConfig = TelemetryConfig()
    detectors: DetectorsConfig = DetectorsConfig()
    incidents: IncidentConfig = IncidentConfig()
    alert_rules: str | None = Field(None, description="YAML file of alert rules")
    auto_response: AutoResponseConfig = AutoResponseConfig()
    recent: int = Field(50, ge=1, le=10_000, description="recent outputs kept for status()")

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one window")
        if any(w <= 0 for w in v):
            raise ValueError("windows must be positive seconds")
        if any(int(w * 1_000_000) % 1000 for w in v):
            raise ValueError("windows must be whole milliseconds")
        return sorted(set(v))


def load(settings: Settings) -> StreamsConfig:
    """Validate ``settings.streams``; raises ``ConfigError`` naming ``streams.<field>``."""
    return section(settings, "streams", StreamsConfig)
