"""Labeled detection evaluation: published DGA families, tunneling tools, benign domains.

Generates a 70-minute tenant (``tests/data/labeled_traffic.py``: benign clients, clients
infected by six DGA families, clients running four tunneling tools, all with ordinary
background traffic) and replays it through the stream logic. Reports, per family, the
recall of infected clients; per kind the client-level precision; the share of benign
clients flagged; and the share of benign registered domains named by a dga/tunneling
anomaly. The peer is a naive per-query baseline (label entropy ≥ 3.5 bits and length ≥ 10
flags the client and the domain), measured on the same traffic.

A published DGA classifier is the second peer (``--peer dgaintel``, the default when its
venv can be made; ``bench/dga_peer.py``): it scores every distinct registered domain queried,
and its verdicts are counted in dnsflow's units beside dnsflow's own DGA verdicts — per
client (a client with one name at or over the peer's threshold is flagged) and per
registered domain (DGA names caught, benign-pool domains flagged).

    python -m bench.detect_eval [--seed N] [--minutes M] [--peer auto|dgaintel|none]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dga_peer

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


@dataclass
class Labeled:
    """The ground truth both DGA columns are judged on."""

    truth: dict[str, str]        # client -> benign | dga:<family> | tunnel:<tool>
    regs: dict[str, set[str]]    # client -> registered domains it queried (not internal ones)
    dga_names: dict[str, str]    # DGA registered domain queried -> dga:<family>
    benign_names: set[str]       # benign-pool registered domains queried


def labeled(events: list[dict[str, Any]], truth: dict[str, str], index: Any,
            dga_names: dict[str, str], benign: set[str]) -> Labeled:
    regs: dict[str, set[str]] = defaultdict(set)
    for e in events:
        reg = index.registered(e["qname"])
        if reg:
            regs[e["client_ip"]].add(reg)
    queried = set().union(*regs.values())
    return Labeled(truth, dict(regs), {n: f for n, f in dga_names.items() if n in queried},
                   benign & queried)


def generated_dga(lt: Any, index: Any, seed: int, names: int) -> dict[str, str]:
    """The DGA registered domains the scenario's infected clients walk (its own seeding),
    with their family."""
    per = inspect.signature(lt.scenario).parameters["infected_per_family"].default
    return {index.registered(n): f"dga:{fam}" for fam in lt.DGA_FAMILIES for k in range(per)
            for n in lt.dga_family(fam, seed * 1000 + k, names)}


def clients_of(lab: Labeled, names: set[str]) -> set[str]:
    """Clients that queried one of ``names``: a per-name verdict as a per-client one."""
    return {c for c, regs in lab.regs.items() if regs & names}


def _share(hits: dict[str, list[bool]]) -> dict[str, float]:
    return {k: sum(v) / len(v) for k, v in sorted(hits.items())}


def dga_figures(lab: Labeled, clients: set[str], names: set[str]) -> dict[str, float]:
    """One detector's DGA verdicts (flagged ``clients``, named ``names``) against the truth:
    per client as dnsflow's figures count, and per registered domain."""
    by_client: dict[str, list[bool]] = defaultdict(list)
    by_name: dict[str, list[bool]] = defaultdict(list)
    benign = [c for c, label in lab.truth.items() if label == "benign"]
    for c, label in lab.truth.items():
        if label.startswith("dga:"):
            by_client[label].append(c in clients)
    covered = set().union(*(lab.regs.get(c, set()) for c in clients))
    for n, label in lab.dga_names.items():
        by_name[label].append(n in names)
    client_recall, name_recall = _share(by_client), _share(by_name)
    out = {f"recall {k}": v for k, v in client_recall.items()}
    out["dga_recall_min"] = min(client_recall.values())
    out["dga_recall"] = sum(map(sum, by_client.values())) / sum(map(len, by_client.values()))
    out["benign_client_fp_rate"] = sum(c in clients for c in benign) / max(1, len(benign))
    out |= {f"name recall {k}": v for k, v in name_recall.items()}
    n_dga = max(1, len(lab.dga_names))
    out["dga_name_recall"] = len(names & lab.dga_names.keys()) / n_dga
    out["dga_name_covered"] = len(covered & lab.dga_names.keys()) / n_dga
    out["benign_domain_fp_rate"] = len(names & lab.benign_names) / max(1, len(lab.benign_names))
    return out


ROWS = {
    "dga_recall_min": "per client: recall, lowest family",
    "dga_recall": "per client: recall, all DGA clients",
    "benign_client_fp_rate": "per client: benign clients flagged",
    "dga_name_recall": "per name: DGA domains named, all",
    "dga_name_covered": "per name: DGA domains of flagged clients",
    "benign_domain_fp_rate": "per name: benign domains flagged",
}


def side_by_side(ours: dict[str, float], peer: dict[str, float], peer_title: str) -> list[str]:
    """The table: one row per figure, dnsflow's DGA detector beside the peer."""
    lines = [f"{'DGA, same traffic':<44}{'dnsflow':>9}   {peer_title}"]
    for k in ours:
        label = ROWS.get(k) or (f"per client: {k}" if k.startswith("recall ")
                                else f"per name: {k.removeprefix('name ')}")
        lines.append(f"{label:<44}{ours[k]:>9.4f}   {peer[k]:.4f}")
    return lines


def run_peer(mode: str, lab: Labeled, ours: dict[str, float]) -> str | None:
    """The dgaintel column and its final-line keys; ``peer=none`` when it could not run in
    ``auto`` mode (the reason printed), None when it was asked for by name and could not."""
    try:
        python = dga_peer.ensure_venv()
        names = sorted(set().union(*lab.regs.values()))
        t = time.monotonic()
        res = dga_peer.score(python, names)
        took = time.monotonic() - t
    except dga_peer.PeerError as e:
        print(f"peer {dga_peer.PEER}: not run ({e})")
        return None if mode == dga_peer.PEER else " peer=none"
    meta = res.meta
    peer = dga_figures(lab, clients_of(lab, res.flagged), res.flagged)
    print(f"peer {meta.get('peer')} {meta.get('version')} (tensorflow {meta.get('tensorflow')}, "
          f"p >= {meta.get('threshold')} is DGA): {len(names)} registered domains scored in "
          f"{took:.1f} s; a client is flagged by one such name; {len(lab.dga_names)} DGA and "
          f"{len(lab.benign_names)} benign-pool domains queried")
    for line in side_by_side(ours, peer, f"{meta.get('peer')} {meta.get('version')}"):
        print(line)
    fp = sorted(res.flagged & lab.benign_names, key=lambda n: (-res.p[n], n))
    print(f"benign-pool domains {meta.get('peer')} calls DGA: {len(fp)}/{len(lab.benign_names)} "
          f"{fp[:10]}")
    return (f" peer={meta.get('peer')} dga_name_recall={ours['dga_name_recall']:.3f}"
            f" peer_dga_recall_min={peer['dga_recall_min']:.3f}"
            f" peer_dga_recall={peer['dga_recall']:.3f}"
            f" peer_benign_client_fp_rate={peer['benign_client_fp_rate']:.4f}"
            f" peer_dga_name_recall={peer['dga_name_recall']:.3f}"
            f" peer_benign_domain_fp_rate={peer['benign_domain_fp_rate']:.4f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--minutes", type=int, default=70)
    ap.add_argument("--dga-interval", type=float, default=2.0,
                    help="seconds between an infected client's DGA queries")
    ap.add_argument("--dga-names", type=int, default=60,
                    help="DGA names each infected client tries")
    ap.add_argument("--peer", choices=("auto", dga_peer.PEER, "none"), default="auto",
                    help=f"published DGA classifier beside dnsflow (auto: {dga_peer.PEER} if "
                         "its venv can be made, else skipped with the reason)")
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
    peer_keys = ""
    if args.peer != "none":
        lab = labeled(events, truth, index, generated_dga(lt, index, args.seed, args.dga_names),
                      benign_domains)
        ours = dga_figures(lab, flagged["dga"], named["dga"])
        keys = run_peer(args.peer, lab, ours)
        if keys is None:
            return 1
        peer_keys = keys
    print(f"bench detect_eval: events={len(events)} dga_recall_min={dga_min:.3f} "
          f"tunnel_recall_min={tun_min:.3f} precision_dga={precision['dga']:.3f} "
          f"precision_tunneling={precision['tunneling']:.3f} "
          f"benign_client_fp_rate={benign_client_fp:.4f} benign_domain_fp_rate={benign_fp:.4f} "
          f"baseline_recall={b_recall:.3f} baseline_benign_domain_fp_rate={b_fp:.4f}{peer_keys}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
