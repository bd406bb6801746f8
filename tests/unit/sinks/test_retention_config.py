"""`sink.retention_days`: every table's TTL from the config, with errors that name the key."""

from __future__ import annotations

import pytest

from dnsflow.settings import ConfigError, Settings
from dnsflow.sinks.config import SinkConfig, sink_config
from dnsflow.sinks.migrate import RETENTION_DAYS


def test_defaults_cover_every_table_and_partial_config_keeps_the_rest() -> None:
    assert SinkConfig().retention_days == RETENTION_DAYS
    cfg = SinkConfig(retention_days={"alerts": 30})
    assert cfg.retention_days == {**RETENTION_DAYS, "alerts": 30}


def test_the_older_spelling_still_sets_dns_events() -> None:
    assert SinkConfig(events_ttl_days=7).retention_days["dns_events"] == 7


@pytest.mark.parametrize(("section", "words"), [
    ({"retention_days": {"dns_event": 3}}, ["sink.retention_days", "dns_event", "dns_events"]),
    ({"retention_days": {"alerts": 0}}, ["sink.retention_days", "alerts", "1..36500"]),
])
def test_bad_retention_is_named(tmp_path, section, words) -> None:
    with pytest.raises(ConfigError) as err:
        sink_config(Settings(home=tmp_path, sink=section, source="dnsflow.yaml"))
    assert str(err.value).startswith("dnsflow.yaml: sink.retention_days")
    for w in words:
        assert w in str(err.value)
