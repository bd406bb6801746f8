"""The ``streams:`` settings section, validated so errors name the field path.

Every knob has a default that works for the demo and for a small cluster; durations are
seconds in the file and microseconds inside the logic (the event ``ts`` unit).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from dnsflow.settings import Settings, section
from dnsflow.streams.detectors import registered

# the anomaly kinds: one per registered detector (streams/detectors/)
KINDS: tuple[str, ...] = tuple(c.kind for c in registered())
Kind = Literal[KINDS]  # type: ignore[valid-type]
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


def _detectors_config() -> type[BaseModel]:
    """``streams.detectors``: one section per registered detector (its ``config`` model,
    named by its kind), plus the look-alike allowlists every detector respects and the
    cluster domain."""
    fields: dict[str, Any] = {c.kind: (c.config, c.config()) for c in registered()}
    fields["allowlist"] = (list[str], Field(default_factory=lambda: list(DEFAULT_ALLOWLIST)))
    fields["extra_allowlist"] = (list[str], Field(default_factory=list))
    fields["cluster_domain"] = (str, Field(
        "cluster.local", min_length=1, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="names under it are the cluster's (services, pods): cross-tenant "
        "discovery and NXDOMAIN bursts on internal names look at them"))
    return create_model("DetectorsConfig", __config__=ConfigDict(extra="forbid"), **fields)


DetectorsConfig = _detectors_config()


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
    detectors: DetectorsConfig = DetectorsConfig()  # type: ignore[valid-type]
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
