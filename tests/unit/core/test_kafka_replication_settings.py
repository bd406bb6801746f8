"""Replication factor and min.insync.replicas of the topics dnsflow creates (#16): settings
from file, environment and flags, validated with an error naming the key; the bus gets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsflow.bus import bus_for
from dnsflow.bus.kafka import KafkaBus
from dnsflow.cli import build_parser, settings_from_args
from dnsflow.settings import ConfigError, load_settings


def test_defaults_are_one_and_one() -> None:
    s = load_settings(environ={})
    assert (s.kafka_replication, s.kafka_min_insync) == (1, 1)


def test_file_env_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka_replication: 3\nkafka_min_insync: 2\n")
    assert load_settings(cfg, environ={}).kafka_min_insync == 2
    env = {"DNSFLOW_KAFKA_REPLICATION": "5", "DNSFLOW_KAFKA_MIN_INSYNC": "3"}
    s = load_settings(cfg, environ=env)
    assert (s.kafka_replication, s.kafka_min_insync) == (5, 3)
    args = build_parser().parse_args(["sink", "--kafka", "h:1", "--kafka-replication", "3",
                                      "--kafka-min-insync", "2"])
    s = settings_from_args(args)
    assert (s.kafka_replication, s.kafka_min_insync) == (3, 2)
    bus = bus_for(s)
    assert isinstance(bus, KafkaBus)
    assert (bus.replication, bus.min_insync) == (3, 2)


@pytest.mark.parametrize(("data", "where"), [
    ({"kafka_replication": 0}, "kafka_replication"),
    ({"kafka_replication": "three"}, "kafka_replication"),
    ({"kafka_min_insync": 2}, "kafka_min_insync"),  # above the default replication 1
    ({"kafka_replication": 2, "kafka_min_insync": 3}, "kafka_min_insync"),
    ({"kafka_min_insync": 0}, "kafka_min_insync"),
])
def test_bad_values_name_the_key(tmp_path: Path, data: dict, where: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in data.items()))
    with pytest.raises(ConfigError, match=rf"{cfg}: {where}: "):
        load_settings(cfg, environ={})


def test_insync_above_replication_says_why() -> None:
    with pytest.raises(ConfigError, match="exceeds kafka_replication"):
        load_settings(environ={"DNSFLOW_KAFKA_REPLICATION": "2",
                               "DNSFLOW_KAFKA_MIN_INSYNC": "3"})
    with pytest.raises(ValueError, match=r"min\.insync\.replicas 3"):
        KafkaBus("h:1", replication=2, min_insync=3)


def test_in_process_bus_ignores_them() -> None:
    s = load_settings(environ={"DNSFLOW_KAFKA_REPLICATION": "3"})
    assert not isinstance(bus_for(s), KafkaBus)


def test_policy_commands_create_topics_with_the_replication_settings(monkeypatch) -> None:
    """`dnsflow policy` builds its bus from the settings too (flags after the action work)."""
    import argparse

    from dnsflow.cli import build_parser
    from dnsflow.policies import cli as policy_cli

    monkeypatch.delenv("DNSFLOW_KAFKA_REPLICATION", raising=False)
    monkeypatch.delenv("DNSFLOW_KAFKA_MIN_INSYNC", raising=False)
    args = build_parser().parse_args(
        ["policy", "apply", "p.yaml", "--kafka", "h:1", "--kafka-replication", "3",
         "--kafka-min-insync", "2"])
    assert isinstance(args, argparse.Namespace)
    bus = policy_cli._bus(args)
    assert isinstance(bus, KafkaBus)
    assert (bus.replication, bus.min_insync) == (3, 2)
