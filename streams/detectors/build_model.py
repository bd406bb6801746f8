"""Build ``data/ngram.json.gz``: the benign character trigram model for the DGA detector.

Run at build time (``python -m dnsflow.streams.detectors.build_model``), not at run time. Inputs are
public data shipped inside packages, so the build needs no network:

* English words from the ``english-words`` package (web2 list, lower case, letters only),
* registered labels of the Public Suffix List's private section (hosting companies and
  brands) from the snapshot bundled with ``tldextract``.

Smoothing interpolates trigram, bigram and unigram estimates so unseen transitions are
unlikely but never impossible. ``center``/``scale`` place the logistic score so a typical
benign label scores well below 0.5 and uniformly random letters well above it.
"""

from __future__ import annotations

import gzip
import math
import statistics
from collections.abc import Iterable
from pathlib import Path

import orjson

from dnsflow.streams.detectors.ngram import SIZE, encode

OUT = Path(__file__).parent / "data" / "ngram.json.gz"
LAMBDAS = (0.6, 0.3, 0.1)


def psl_private_registered() -> list[tuple[str, str]]:
    """(registered label, public suffix) of every PSL private-section entry in tldextract's
    bundled snapshot, e.g. ``("herokuapp", "com")``; IDN entries in their ACE form."""
    import tldextract

    path = Path(tldextract.__file__).parent / ".tld_set_snapshot"
    private = path.read_text().split("===BEGIN PRIVATE DOMAINS===", 1)[1]
    ext = tldextract.TLDExtract(suffix_list_urls=(), include_psl_private_domains=False)
    out: set[tuple[str, str]] = set()
    for line in private.splitlines():
        line = line.strip().lstrip("*.!")
        if not line or line.startswith("//"):
            continue
        try:
            line = line.encode("idna").decode()
        except UnicodeError:
            continue
        r = ext(line)
        if r.domain and r.suffix:
            out.add((r.domain, r.suffix))
    return sorted(out)


def psl_private_labels() -> list[str]:
    """Registered labels of the PSL private section (e.g. ``herokuapp`` of herokuapp.com)."""
    return sorted({d for d, _ in psl_private_registered() if not d.startswith("xn--")})


def english_words() -> list[str]:
    from english_words import get_english_words_set

    return sorted(get_english_words_set(["web2"], lower=True, alpha=True))


def train(corpus: Iterable[tuple[str, int]]) -> list[float]:
    tri = [0] * SIZE**3
    bi = [0] * SIZE**2
    uni = [0] * SIZE
    ctx2 = [0] * SIZE**2
    ctx1 = [0] * SIZE
    total = 0
    for word, weight in corpus:
        c = encode(word)
        for i in range(2, len(c)):
            a, b, x = c[i - 2], c[i - 1], c[i]
            tri[(a * SIZE + b) * SIZE + x] += weight
            ctx2[a * SIZE + b] += weight
            bi[b * SIZE + x] += weight
            ctx1[b] += weight
            uni[x] += weight
            total += weight
    l3, l2, l1 = LAMBDAS
    table = [0.0] * SIZE**3
    for a in range(SIZE):
        for b in range(SIZE):
            n2 = ctx2[a * SIZE + b]
            n1 = ctx1[b]
            for x in range(SIZE):
                p3 = tri[(a * SIZE + b) * SIZE + x] / n2 if n2 else 0.0
                p2 = bi[b * SIZE + x] / n1 if n1 else 0.0
                p1 = (uni[x] + 1) / (total + SIZE)
                table[(a * SIZE + b) * SIZE + x] = math.log(l3 * p3 + l2 * p2 + l1 * p1)
    return table


def avg_logp(table: list[float], label: str) -> float:
    c = encode(label)
    s = sum(table[(c[i - 2] * SIZE + c[i - 1]) * SIZE + c[i]] for i in range(2, len(c)))
    return s / (len(c) - 2)


def main() -> None:
    import random

    words = english_words()
    labels = psl_private_labels()
    # Domain labels weigh more: they carry the digits, hyphens and brand-style joins.
    corpus = [(w, 1) for w in words] + [(lab, 20) for lab in labels]
    table = train(corpus)
    benign = [avg_logp(table, lab) for lab in labels if len(lab) >= 6]
    rng = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rand = [
        avg_logp(table, "".join(rng.choice(letters) for _ in range(rng.randint(8, 16))))
        for _ in range(2000)
    ]
    mb, mr = statistics.median(benign), statistics.median(rand)
    center = (mb + mr) / 2
    scale = (mb - mr) / 6
    doc = {
        "about": "character trigram log-probabilities x1000, index (a*SIZE+b)*SIZE+c",
        "size": SIZE,
        "sources": {"english-words web2": len(words), "psl private labels": len(labels)},
        "center": round(center, 4),
        "scale": round(scale, 4),
        "table": [round(v * 1000) for v in table],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(orjson.dumps(doc), 9, mtime=0))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): benign median {mb:.3f}, "
          f"random median {mr:.3f}, center {center:.3f}, scale {scale:.3f}")


if __name__ == "__main__":
    main()
