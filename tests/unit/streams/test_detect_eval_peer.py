"""bench.detect_eval's published-DGA-classifier peer, with a fake peer script (no TensorFlow):
the peer's JSON lines are read strictly, and its per-name verdicts are counted in the same
units as dnsflow's (per client, per registered domain) beside dnsflow's."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

from bench import detect_eval, dga_peer

FAKE = """\
import json, sys
names = [x.strip() for x in sys.stdin if x.strip()]
print(json.dumps({"peer": "fakepeer", "version": "0.1", "tensorflow": "none",
                  "threshold": 0.5}))
for n in names:
    p = 0.9 if n.startswith("x") else 0.1
    print(json.dumps({"name": n, "p": p, "dga": p >= 0.5}))
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    script = tmp_path / "fake_peer.py"
    script.write_text(FAKE)
    return script


def _lab() -> detect_eval.Labeled:
    truth = {"b1": "benign", "b2": "benign", "b3": "benign", "b4": "benign",
             "d1": "dga:ramnit", "d2": "dga:ramnit", "d3": "dga:suppobox", "t1": "tunnel:iodine"}
    regs = {
        "b1": {"google.com", "wiki.org"},
        "b2": {"google.com", "xerox.com"},      # benign name the fake peer calls DGA
        "b3": {"wiki.org"},
        "b4": {"goigle.com"},                   # a typo: neither DGA nor benign-pool
        "d1": {"xqzjw.com", "xkfpa.com", "google.com"},
        "d2": {"qpwoe.com"},                    # missed by the fake peer
        "d3": {"xapplebanker.net"},
        "t1": {"abcdefgh-relay.net"},
    }
    dga = {"xqzjw.com": "dga:ramnit", "xkfpa.com": "dga:ramnit", "qpwoe.com": "dga:ramnit",
           "xapplebanker.net": "dga:suppobox"}
    return detect_eval.Labeled(truth, regs, dga, {"google.com", "wiki.org", "xerox.com"})


def test_score_reads_the_fake_peers_json_lines(fake: Path) -> None:
    names = ["xqzjw.com", "google.com"]
    res = dga_peer.score(sys.executable, names, script=fake, timeout=60)
    assert res.meta["peer"] == "fakepeer" and res.meta["threshold"] == 0.5
    assert res.p == {"xqzjw.com": 0.9, "google.com": 0.1}
    assert res.flagged == {"xqzjw.com"}


def test_parse_refuses_missing_repeated_and_unasked_names() -> None:
    def line(n: str) -> str:
        return json.dumps({"name": n, "p": 0.2, "dga": False})

    with pytest.raises(dga_peer.PeerError, match="unanswered"):
        dga_peer.parse([line("a.com")], ["a.com", "b.com"])
    with pytest.raises(dga_peer.PeerError, match="twice"):
        dga_peer.parse([line("a.com"), line("a.com")], ["a.com"])
    with pytest.raises(dga_peer.PeerError, match="not asked"):
        dga_peer.parse([line("a.com"), line("c.com")], ["a.com"])


def test_a_failing_peer_is_a_peer_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sys; sys.stderr.write('no model\\n'); sys.exit(3)\n")
    with pytest.raises(dga_peer.PeerError, match="exited 3: no model"):
        dga_peer.score(sys.executable, ["a.com"], script=bad, timeout=60)


def test_side_by_side_counts_the_peer_in_dnsflows_units(fake: Path) -> None:
    lab = _lab()
    res = dga_peer.score(sys.executable, sorted(set().union(*lab.regs.values())),
                         script=fake, timeout=60)
    peer = detect_eval.dga_figures(lab, detect_eval.clients_of(lab, res.flagged), res.flagged)
    # per client: d1 and d3 have an x-name, d2 none; b2 is flagged by xerox.com
    assert peer["recall dga:ramnit"] == 0.5 and peer["recall dga:suppobox"] == 1.0
    assert peer["dga_recall_min"] == 0.5 and peer["dga_recall"] == pytest.approx(2 / 3)
    assert peer["benign_client_fp_rate"] == 0.25
    # per name: 3 of 4 DGA names, 1 of 3 benign-pool names (the typo is neither)
    assert peer["dga_name_recall"] == 0.75 and peer["dga_name_covered"] == 0.75
    assert peer["name recall dga:ramnit"] == pytest.approx(2 / 3)
    assert peer["name recall dga:suppobox"] == 1.0
    assert peer["benign_domain_fp_rate"] == pytest.approx(1 / 3)
    # dnsflow's verdicts: clients d1, d2 flagged, one name in its evidence
    ours = detect_eval.dga_figures(lab, {"d1", "d2"}, {"qpwoe.com"})
    assert ours["dga_recall_min"] == 0.0 and ours["recall dga:ramnit"] == 1.0
    assert ours["benign_client_fp_rate"] == 0.0 and ours["benign_domain_fp_rate"] == 0.0
    assert ours["dga_name_recall"] == 0.25 and ours["dga_name_covered"] == 0.75
    table = detect_eval.side_by_side(ours, peer, "fakepeer 0.1")
    assert "fakepeer 0.1" in table[0]
    row = next(x for x in table if x.startswith("per client: benign clients flagged"))
    assert row.split()[-2:] == ["0.0000", "0.2500"]
    row = next(x for x in table if x.startswith("per name: recall dga:ramnit"))
    assert row.split()[-2:] == ["0.3333", "0.6667"]


def test_run_peer_keys_and_skip(fake: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    lab = _lab()
    ours = detect_eval.dga_figures(lab, {"d1", "d2"}, {"qpwoe.com"})
    monkeypatch.setattr(dga_peer, "ensure_venv", lambda: Path(sys.executable))
    monkeypatch.setattr(dga_peer, "score", functools.partial(dga_peer.score, script=fake))
    keys = detect_eval.run_peer("auto", lab, ours)
    assert keys is not None
    kv = dict(x.split("=") for x in keys.split())
    assert kv["peer"] == "fakepeer" and kv["peer_dga_recall_min"] == "0.500"
    assert kv["peer_benign_client_fp_rate"] == "0.2500" and kv["dga_name_recall"] == "0.250"

    def broken() -> Path:
        raise dga_peer.PeerError("pip exited 1")

    monkeypatch.setattr(dga_peer, "ensure_venv", broken)
    assert detect_eval.run_peer("auto", lab, ours) == " peer=none"
    assert detect_eval.run_peer("dgaintel", lab, ours) is None
    assert "not run (pip exited 1)" in capsys.readouterr().out


def test_a_ready_venv_is_reused_without_pip(tmp_path: Path) -> None:
    venv = tmp_path / "dga-venv"
    venv.mkdir()
    (venv / dga_peer.MARKER).write_text(json.dumps(dga_peer._want(dga_peer.pins())))
    assert dga_peer.ensure_venv(venv) == venv / "bin" / "python"
    assert "tf-keras==2.21.0" in dga_peer.pins()
