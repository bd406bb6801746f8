"""Settings from flags, environment (``DNSFLOW_*``) and a YAML config file, in that order.

The core owns the shared keys (home, kafka, clickhouse, topic prefix). Each component owns
one section (``edge:``, ``streams:``, ``sink:``, ``policies:``) and validates it with its own
pydantic model via :func:`section`, so an error names ``FILE: edge.listen: ...``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dnsflow.yaml_file import load_yaml

M = TypeVar("M", bound=BaseModel)

ENV_PREFIX = "DNSFLOW_"


class ConfigError(ValueError):
    """A configuration problem, with where it came from (file, env var or flag)."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    home: Path = Field(default=Path(".dnsflow"), description="embedded data directory")
    kafka: str | None = Field(default=None, description="Kafka bootstrap; none = in-process")
    clickhouse: str | None = Field(default=None, description="ClickHouse DSN; none = chDB")
    topic_prefix: str = "dnsflow."
    # topics dnsflow creates: copies of each partition, and how many of them must have a
    # record before the (idempotent, acks=all) producers count it as written
    kafka_replication: int = Field(default=1, ge=1, le=32, description="replication factor "
                                   "of the topics dnsflow creates")
    kafka_min_insync: int = Field(default=1, ge=1, le=32, description="min.insync.replicas "
                                  "of the topics dnsflow creates (<= kafka_replication)")
    edge: dict[str, Any] = Field(default_factory=dict)
    streams: dict[str, Any] = Field(default_factory=dict)
    sink: dict[str, Any] = Field(default_factory=dict)
    policies: dict[str, Any] = Field(default_factory=dict)
    # dnstap ingestion next to the edge in `dnsflow up` (listen, pair_timeout, max_pending,
    # name); the client identity comes from the edge: section
    tap: dict[str, Any] = Field(default_factory=dict)
    source: str = Field(default="defaults", exclude=True)

    @field_validator("kafka_min_insync")
    @classmethod
    def _insync_within_replication(cls, value: int, info: ValidationInfo) -> int:
        replication = info.data.get("kafka_replication")
        if replication is not None and value > replication:
            raise ValueError(f"{value} exceeds kafka_replication ({replication}): with fewer "
                             "copies than required in sync no write could be acknowledged")
        return value

    @property
    def clickhouse_dsn(self) -> str:
        """The configured DSN, or chDB under the data directory (the embedded default)."""
        if self.clickhouse:
            return self.clickhouse
        return f"chdb://{(self.home / 'chdb').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.kafka is None


def _load_file(path: Path) -> dict[str, Any]:
    data = load_yaml(path, f"config file {path}", ConfigError) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("home", "kafka", "clickhouse", "topic_prefix", "kafka_replication",
                "kafka_min_insync"):
        value = environ.get(ENV_PREFIX + key.upper())
        if value:
            out[key] = value
    return out


def load_settings(
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Merge file < environment < flags and validate; raise :class:`ConfigError` on problems."""
    environ = dict(os.environ if environ is None else environ)
    config = config or environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    source = "defaults"
    if config:
        data = _load_file(Path(config))
        source = str(config)
    data.update(_from_env(environ))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = validate(Settings, data, source)
    settings.source = source
    return settings


def validate(model: type[M], data: Any, source: str, path: tuple[str, ...] = ()) -> M:
    """``model`` from ``data``; the first error is a :class:`ConfigError` naming ``source``
    (a file, ``defaults``, a flag group) and the field path, below ``path``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join([*path, *(str(p) for p in err["loc"])])
        raise ConfigError(f"{source}: {loc}: {err['msg']}") from None


def section(settings: Settings, name: str, model: type[M]) -> M:
    """Validate one component's section; errors name the file and the field path."""
    return validate(model, getattr(settings, name), settings.source, (name,))
