"""Labeled detection evaluation: published DGA families, tunneling tools, benign domains.

Generates a 70-minute tenant (``tests/data/labeled_traffic.py``: benign clients, clients
infected by six DGA families, clients running four tunneling tools, all with ordinary
background traffic) and replays it through the stream logic. Reports, per family, the
recall of infected clients; per kind the client-level precision; the share of benign
clients flagged; and the share of benign registered domains named by a dga/tunneling
anomaly. The peer is a naive per-query baseline (label entropy ≥ 3.5 bits and length ≥ 10
flags the client and the domain), measured on the same traffic.

    python -m bench.detect_eval [--seed N] [--minutes M]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_traffic() -> Any:
    spec = importlib.util.spec_from_file_location(
        "labeled_traffic", ROOT / "tests" / "data" / "labeled_traffic.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["labeled_traffic"] = mod
    spec.loader.exec_module(mod)
    return mod


def entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def baseline(events: list[dict[str, Any]], index: Any) -> tuple[set[str], set[str]]:
    """Per-query entropy threshold: the usual first attempt, as the peer."""
    clients: set[str] = set()
    domains: set[str] = set()
    for e in events:
        info = index.info(e["qname"])
        if not info.reg or info.kind != 0:
            continue
        longest = max([info.label, *info.sub.split(".")], key=len)
        if len(longest) >= 10 and entropy(longest) >= 3.5:
            clients.add(e["client_ip"])
            domains.add(info.reg)
    return clients, domains


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--minutes", type=int, default=70)
    ap.add_argument("--dga-interval", type=float, default=2.0,
                    help="seconds between an infected client's DGA queries")
    ap.add_argument("--dga-names", type=int, default=60,
                    help="DGA names each infected client tries")
    args = ap.parse_args(argv)

    lt = load_traffic()
    from dnsflow.streams.config import StreamsConfig
    from dnsflow.streams.domains import DomainIndex
    from dnsflow.streams.logic import StreamLogic

    events, truth = lt.scenario(seed=args.seed, minutes=args.minutes,
                                dga_interval_s=args.dga_interval, dga_names=args.dga_names)
    benign_domains = set(lt.benign_pool())
    logic = StreamLogic(StreamsConfig())
    flagged: dict[str, set[str]] = defaultdict(set)  # kind -> clients
    named: dict[str, set[str]] = defaultdict(set)    # kind -> registered domains
    index = DomainIndex()
    for e in events:
        logic.process(e)
    logic.flush()
    for o in logic.drain():
        if o.type != "anomaly":
            continue
        a = o.value
        if a["client_ip"]:
            flagged[a["kind"]].add(a["client_ip"])
        if a["kind"] in ("dga", "tunneling"):
            ev = a["evidence"]
            names = [a["domain"], *ev.get("domains", []), *ev.get("resolved", []),
                     *(index.registered(s) for s in ev.get("samples", []))]
            named[a["kind"]].update(n for n in names if n)

    queried = {index.registered(e["qname"]) for e in events} & benign_domains
    by_label: dict[str, set[str]] = defaultdict(set)
    for c, label in truth.items():
        by_label[label].add(c)
    expect = {"dga": "dga:", "tunneling": "tunnel:"}
    benign_clients = by_label["benign"]
    any_flag = set().union(*(flagged[k] for k in ("dga", "tunneling")))
    benign_flagged = len(benign_clients & any_flag)
    print(f"{'label':<22}{'clients':>8}{'recall':>8}{'precision':>11}   (dnsflow; precision "
          f"charges every flagged benign client to each family)")
    recalls: dict[str, float] = {}
    for label in sorted(by_label):
        if label == "benign":
            continue
        kind = "dga" if label.startswith("dga:") else "tunneling"
        clients = by_label[label]
        tp = len(clients & flagged[kind])
        recall = tp / len(clients)
        recalls[label] = recall
        prec = tp / (tp + benign_flagged) if tp + benign_flagged else 1.0
        print(f"{label:<22}{len(clients):>8}{recall:>8.3f}{prec:>11.3f}")
    precision = {}
    for kind, prefix in expect.items():
        got = flagged[kind]
        tp = sum(1 for c in got if truth.get(c, "").startswith(prefix))
        precision[kind] = tp / len(got) if got else 1.0
        print(f"precision {kind:<12}{precision[kind]:.3f} ({tp}/{len(got)} flagged clients)")
    benign_client_fp = benign_flagged / len(benign_clients)
    fp_domains = (named["dga"] | named["tunneling"]) & benign_domains
    benign_fp = len(fp_domains) / max(1, len(queried))
    other = {k: len(v & benign_clients) for k, v in flagged.items()
             if k not in ("dga", "tunneling")}
    print(f"benign clients flagged dga/tunneling: {len(benign_clients & any_flag)}/"
          f"{len(benign_clients)}; other kinds on benign clients: {other}")
    print(f"benign registered domains named by dga/tunneling: {len(fp_domains)}/"
          f"{len(queried)} {sorted(fp_domains)[:10]}")
    b_clients, b_domains = baseline(events, index)
    infected = {c for c, lab in truth.items() if lab != "benign"}
    b_recall = len(b_clients & infected) / len(infected)
    b_fp = len(b_domains & benign_domains) / max(1, len(queried))
    b_cfp = len(b_clients & benign_clients) / len(benign_clients)
    print(f"peer entropy-baseline: recall {b_recall:.3f}, benign clients flagged {b_cfp:.3f}, "
          f"benign domains flagged {b_fp:.4f}")
    dga_min = min(v for k, v in recalls.items() if k.startswith("dga:"))
    tun_min = min(v for k, v in recalls.items() if k.startswith("tunnel:"))
    print(f"bench detect_eval: events={len(events)} dga_recall_min={dga_min:.3f} "
          f"tunnel_recall_min={tun_min:.3f} precision_dga={precision['dga']:.3f} "
          f"precision_tunneling={precision['tunneling']:.3f} "
          f"benign_client_fp_rate={benign_client_fp:.4f} benign_domain_fp_rate={benign_fp:.4f} "
          f"baseline_recall={b_recall:.3f} baseline_benign_domain_fp_rate={b_fp:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
