"""``dnsflow replay FILE [--json]``: recorded events through the stream logic, offline."""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="JSON lines in the event schema ('-' for stdin)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line with type telemetry|anomaly|alert|"
                             "policy_update")
    parser.add_argument("--rules", metavar="FILE", help="alert rules YAML (overrides "
                        "streams.alert_rules)")
    parser.add_argument("--no-telemetry", action="store_true",
                        help="print anomalies, alerts and policy updates only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from dnsflow.cli import UsageError, settings_from_args
    from dnsflow.progress import Progress
    from dnsflow.settings import ConfigError
    from dnsflow.streams import config as streams_config
    from dnsflow.streams.alerts import RuleFileError, load_rules
    from dnsflow.streams.logic import Output, StreamLogic
    from dnsflow.streams.replay import as_json, as_text, replay_lines

    # replay prints policy updates itself; the live drivers' change log would repeat them
    logging.getLogger("dnsflow.streams.response").setLevel(logging.ERROR)
    settings = settings_from_args(args)
    cfg = streams_config.load(settings)
    rules_path = args.rules or cfg.alert_rules
    rules = None
    if rules_path:
        try:
            rules = load_rules(rules_path)
        except RuleFileError as exc:
            raise ConfigError(f"alert rules: {exc}") from None
    logic = StreamLogic(cfg, rules)
    if args.file == "-":
        src = sys.stdin.buffer
        total = None
    else:
        try:
            src = open(args.file, "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"dnsflow replay: {args.file}: {exc.strerror}") from None
        total = os.fstat(src.fileno()).st_size
    out = sys.stdout.buffer
    progress = Progress("replay", total)

    def on_output(o: Output) -> None:
        if args.no_telemetry and o.type == "telemetry":
            return
        out.write(as_json(o) + b"\n" if args.json else (as_text(o) + "\n").encode())

    def on_error(line: int, reason: str) -> None:
        print(f"dnsflow replay: {args.file}: skipped {reason}", file=sys.stderr)

    def lines():  # type: ignore[no-untyped-def]
        for line in src:
            progress.pos += len(line)
            yield line

    def show(n: int) -> None:
        progress.show(f"{n} lines {n / max(1e-6, progress.seconds):,.0f}/s")

    try:
        stats = replay_lines(logic, lines(), on_output, on_error, show)
    finally:
        progress.done()
        if src is not sys.stdin.buffer:
            src.close()
    out.flush()
    outs = " ".join(f"{k}={v}" for k, v in sorted(stats.outputs.items()))
    print(f"dnsflow replay: {stats.events} events, {stats.bad} bad lines skipped, "
          f"{logic.late_dropped} too late; {outs or 'no outputs'} "
          f"({stats.events / max(stats.seconds, 1e-9):,.0f} events/s)", file=sys.stderr)
    return 0
