"""The edge's CPU per answered query, this checkout against an earlier revision, counted in
instructions so the figure does not depend on what else the machine is doing.

    python -m bench.edge_ab --base REV [--head REV] [--queries 20000] [--rounds N] [--kafka B]

Both edges run the same set-up as ``bench.edge_qps`` (static tenant map, a tenant policy from
the policies topic, every event published to Kafka, an unbound upstream) under valgrind's
callgrind, one after the other. Each is warmed (every name cached), its counters zeroed
(``callgrind_control -z``), then asked ``--queries`` cached names by dnsperf as fast as it
answers (256 in flight, so datagrams arrive in batches as in ``bench.edge_qps``) and dumped:
instructions of the whole process (the event loop, the encoder, librdkafka's threads)
divided by the answered queries. Why instructions: wall-clock A/B runs on this shared 2-core
machine wander ±15 % between runs; counted instructions repeat closely, so a ±3 % budget can
be checked (``--rounds`` shows how closely). The base revision is checked out as a git
worktree in the work directory (both package layouts: top-level components before
issue #15, ``dnsflow.<component>`` after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.edge_qps import POLICY, TENANT_MAP, cpus, dnsperf, publish_policy
from harness.peers import Unbound, free_port, kafka_or_private, stop_process, wait_dns
from harness.report import print_summary
from harness.workdir import add_keep_option, finish_work_dir, make_work_dir

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("edge", "streams", "sinks", "policies", "console")


def log(msg: str) -> None:
    print(f"[edge_ab] {msg}", file=sys.stderr, flush=True)


def checkout(rev: str, work: Path) -> tuple[Path, dict[str, str]]:
    """A worktree of ``rev`` and the environment that imports it instead of this checkout."""
    tree = work / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    for name in COMPONENTS:  # the dnsflow.<component> layout maps folders in setup.py
        if (tree / name).is_dir() and not (tree / "dnsflow" / name).exists() and (
                "package_dir" in (tree / "setup.py").read_text()
                if (tree / "setup.py").exists() else False):
            (tree / "dnsflow" / name).symlink_to(f"../{name}")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return tree, env


def remove_worktree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                   capture_output=True, check=False)


def instructions(dump: Path) -> int:
    """The total of a callgrind dump (its ``summary:`` line, or the ``totals:`` line)."""
    text = dump.read_text(errors="replace")
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {dump}")
    return int(m.group(1))


class Run:
    """One edge under callgrind: start, warm, zero, load, dump, stop."""

    def __init__(self, label: str, cwd: Path, env: dict[str, str], work: Path) -> None:
        self.label, self.cwd, self.env, self.work = label, cwd, env, work
        self.out = work / f"callgrind.{label}"

    def measure(self, args: argparse.Namespace, ctx: dict[str, object]) -> tuple[int, float]:
        """(instructions, answered queries) of the measured stretch."""
        server_cpu, load_cpu = str(ctx["server_cpu"]), str(ctx["load_cpu"])
        port = free_port()
        tmap = self.work / "tenants.yaml"
        tmap.write_text(TENANT_MAP)
        cmd = ["taskset", "-c", server_cpu, "valgrind", "--tool=callgrind",
               f"--callgrind-out-file={self.out}.%p", sys.executable, "-m", "dnsflow", "edge",
               "--kafka", str(ctx["bootstrap"]), "--topic-prefix", str(ctx["prefix"]),
               "--home", str(self.work / f"home-{self.label}"), "--listen",
               f"127.0.0.1:{port}", "--upstream", f"udp://127.0.0.1:{ctx['upstream']}",
               "--tenant-map", str(tmap), "--name", f"ab-{self.label}",
               "--log-level", "WARNING"]
        logf = open(self.work / f"{self.label}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=self.cwd,
                                env=self.env)
        try:
            wait_dns(port, 600, proc)
            time.sleep(5)  # the policy subscription catches up (slowly, under callgrind)
            datafile = Path(str(ctx["datafile"]))
            names = int(str(ctx["names"]))
            warm = ("-c", "1", "-T", "1", "-q", "64", "-t", "5", "-Q", "1000", "-n", "1")
            dnsperf(port, datafile, names / 1000 * 3 + 30, load_cpu, warm)  # every name once
            # measured: as edge_qps asks (256 in flight), or capped at --rate
            flags = ("-c", "4", "-T", "1", "-q", "256", "-t", "10",
                     *(("-Q", str(args.rate)) if args.rate else ()))
            for dump in self.work.glob(f"callgrind.{self.label}.*"):
                dump.unlink()
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                           capture_output=True, timeout=120)
            passes = max(1, args.queries // names)
            r = dnsperf(port, datafile, args.queries / 500 + 120, load_cpu,
                        (*flags, "-n", str(passes)))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           capture_output=True, timeout=300)
            dumps = sorted(self.work.glob(f"callgrind.{self.label}.{proc.pid}.*"))
            if not dumps:
                raise RuntimeError(f"{self.label}: callgrind wrote no dump")
            total = instructions(dumps[-1])
            log(f"{self.label}: {total} instructions, {r['completed']:.0f} answered, "
                f"lost {r['lost']:.0f}")
            return total, r["completed"]
        finally:
            stop_process(proc, 120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.edge_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the revision to compare against")
    ap.add_argument("--head", help="compare this revision instead of the checkout as it is")
    ap.add_argument("--queries", type=int, default=20000, help="measured queries per edge")
    ap.add_argument("--rate", type=int, default=0,
                    help="cap the measured queries/s (default: as fast as the edge answers, "
                         "256 in flight, like bench.edge_qps: the batched hot path)")
    ap.add_argument("--names", type=int, default=2000, help="distinct (cached) names")
    ap.add_argument("--rounds", type=int, default=1, help="base/head pairs, alternating")
    ap.add_argument("--kafka", help="use this Kafka instead of starting a private one")
    add_keep_option(ap)
    args = ap.parse_args(argv)
    server_cpu, load_cpu = cpus()
    work = make_work_dir("bench-edge-ab-")
    head = args.head or subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True, check=True).stdout.strip()
    dirty = "" if args.head else subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "edge", "dnsflow",
         "policies"], capture_output=True, text=True, check=True).stdout.strip()
    tree = head_tree = None
    kafka = None
    try:
        tree, env = checkout(args.base, work)
        head_dir, head_env = ROOT, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if args.head:
            head_tree, head_env = checkout(args.head, work)
            head_dir = head_tree
        names = [f"host{i}.bench.test" for i in range(args.names)]
        local = [f"{n}. 3600 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
                 for i, n in enumerate(names)]
        datafile = work / "queries.txt"
        datafile.write_text("".join(f"{n} A\n" for n in names))
        bootstrap, kafka = kafka_or_private(args.kafka, work, load_cpu, log)
        prefix = f"ab{uuid.uuid4().hex[:8]}."
        asyncio.run(publish_policy(bootstrap, prefix, POLICY))
        with Unbound(local, workdir=work / "upstream", cpu=int(load_cpu)) as upstream:
            ctx: dict[str, object] = {
                "server_cpu": server_cpu, "load_cpu": load_cpu, "bootstrap": bootstrap,
                "prefix": prefix, "upstream": upstream.port, "datafile": datafile,
                "names": args.names}
            totals = {"base": [0, 0.0], "head": [0, 0.0]}
            for rnd in range(args.rounds):
                order = [("base", tree, env), ("head", head_dir, head_env)]
                for label, cwd, e in order if rnd % 2 == 0 else order[::-1]:
                    ins, done = Run(f"{label}{rnd}", cwd, e, work).measure(args, ctx)
                    totals[label][0] += ins
                    totals[label][1] += done
        per = {k: v[0] / v[1] if v[1] else 0.0 for k, v in totals.items()}
        change = (per["head"] / per["base"] - 1) * 100 if per["base"] else 0.0
        if dirty:
            log("note: the checkout has uncommitted changes under edge/ dnsflow/ policies/; "
                "'head' measured them")
        print_summary("edge_ab", {"base": args.base, "head": head,
                                  "queries": int(totals["head"][1]),
                                  "instructions_per_query_base": per["base"],
                                  "instructions_per_query_head": per["head"],
                                  "change_pct": change},
                      {"instructions_per_query_base": 0, "instructions_per_query_head": 0,
                       "change_pct": 2})
        return 0
    finally:
        if kafka is not None:
            kafka.stop()
        for made in (tree, head_tree):
            if made is not None:
                remove_worktree(made)
        finish_work_dir(work, args.keep, log)


if __name__ == "__main__":
    sys.exit(main())
