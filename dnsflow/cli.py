"""The ``dnsflow`` command: one verb per component, as fixed in the architecture contract.

Each verb's arguments are declared by the component's ``cli`` module (``register(sub)`` plus
a ``run(args) -> int``); modules are imported lazily so ``dnsflow --help`` stays fast and a
component that is not built yet says so instead of crashing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from dnsflow import __version__
from dnsflow.settings import ConfigError, Settings, load_settings

# verb -> (module providing register/run, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("dnsflow.demo", "embedded pipeline plus synthetic multi-tenant traffic"),
    "up": ("dnsflow.runner", "all components in one process (embedded bus and chDB by default)"),
    "edge": ("dnsflow.edge.cli", "run one edge resolver"),
    "streams": ("dnsflow.streams.cli", "run the faust stream worker"),
    "sink": ("dnsflow.sinks.cli", "run the ClickHouse sink (--migrate applies the schema)"),
    "policy": ("dnsflow.policies.cli", "validate, apply, diff, explain and show policies"),
    "replay": ("dnsflow.streams.replay_cli",
               "run recorded events through the stream logic offline"),
    "query": ("dnsflow.sinks.query_cli", "run SQL against the configured ClickHouse"),
    "console": ("dnsflow.console.cli", "the web console over ClickHouse, with tenant tokens"),
    "tail": ("dnsflow.console.tail_cli", "live DNS events in the terminal, filtered"),
    "tap": ("dnsflow.edge.tap.cli", "receive dnstap from existing resolvers and publish events"),
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit 2."""


class CommandError(Exception):
    """A command could not do its job (e.g. a component is missing): one line, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, named, non-zero
        raise UsageError(f"{self.prog}: {message}")


def common_options() -> argparse.ArgumentParser:
    """Options every verb accepts: where Kafka, ClickHouse and the data directory are."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common")
    g.add_argument("--config", metavar="FILE", help="YAML config file (env DNSFLOW_CONFIG)")
    g.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap servers; "
                   "without it the in-process bus is used")
    g.add_argument("--clickhouse", metavar="DSN", help="ClickHouse DSN (http(s)://... or "
                   "chdb://PATH); default chDB under the data directory")
    g.add_argument("--home", metavar="DIR", help="data directory (env DNSFLOW_HOME, "
                   "default ./.dnsflow)")
    g.add_argument("--topic-prefix", metavar="PREFIX", help="Kafka topic prefix "
                   "(default 'dnsflow.')")
    g.add_argument("--kafka-replication", type=int, metavar="N", help="replication factor of "
                   "the Kafka topics dnsflow creates (env DNSFLOW_KAFKA_REPLICATION, default 1)")
    g.add_argument("--kafka-min-insync", type=int, metavar="N", help="their "
                   "min.insync.replicas, at most N above (env DNSFLOW_KAFKA_MIN_INSYNC, "
                   "default 1)")
    g.add_argument("--log-level", default=None, metavar="LEVEL",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level (default WARNING; the demo shows only errors)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        {
            "kafka": getattr(args, "kafka", None),
            "clickhouse": getattr(args, "clickhouse", None),
            "home": getattr(args, "home", None),
            "topic_prefix": getattr(args, "topic_prefix", None),
            "kafka_replication": getattr(args, "kafka_replication", None),
            "kafka_min_insync": getattr(args, "kafka_min_insync", None),
        },
    )


def _not_built(verb: str, module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        print(f"dnsflow {verb}: not available yet ({module} is not built)", file=sys.stderr)
        return 3

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dnsflow",
        description="Multi-tenant DNS edge, telemetry and policy pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"dnsflow {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    common = common_options()
    for verb, (module_name, help_text) in VERBS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not module_name.startswith(str(exc.name)):
                raise
            p = sub.add_parser(verb, help=help_text + " [not built yet]", parents=[common])
            p.set_defaults(func=_not_built(verb, module_name))
            continue
        p = sub.add_parser(verb, help=help_text, description=help_text, parents=[common])
        module.register(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not args.verb:
        parser.print_help()
        return 2
    args.log_level = getattr(args, "log_level", None) or getattr(
        args, "default_log_level", "WARNING"
    )
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"dnsflow {args.verb}: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"dnsflow {args.verb}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dnsflow query ... | head`: the reader has what it wanted
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports a command that a pipe closed on


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
