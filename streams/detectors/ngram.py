"""Character trigram likelihood of a domain label under a model of benign names.

The model (``data/ngram.json.gz``) is built at build time by ``build_model.py`` from public
data shipped in packages (English words from ``english-words``, the registered domains of the
Public Suffix List's private section bundled with ``tldextract``); nothing is fetched at run
time. A label whose characters follow English-/brand-like transitions scores near 0; one
drawn uniformly at random (most DGAs) scores near 1.
"""

from __future__ import annotations

import gzip
import math
from functools import lru_cache
from importlib import resources

import orjson

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-"
SIZE = len(ALPHABET) + 2  # + boundary (0) + other (last)
OTHER = SIZE - 1
_CODE = {c: i + 1 for i, c in enumerate(ALPHABET)}
MODEL_FILE = "ngram.json.gz"


def encode(label: str) -> list[int]:
    """Boundary-padded codes: ``^^label$``."""
    get = _CODE.get
    return [0, 0, *(get(c, OTHER) for c in label), 0]


class NgramModel:
    """Scores labels; ``avg_logp`` is the mean natural-log probability per transition."""

    def __init__(self, table: list[float], center: float, scale: float) -> None:
        self.table = table
        self.center = center
        self.scale = scale
        self.score = lru_cache(maxsize=131_072)(self._score)

    @classmethod
    def load(cls) -> NgramModel:
        raw = resources.files(__package__).joinpath("data", MODEL_FILE).read_bytes()
        doc = orjson.loads(gzip.decompress(raw))
        table = [v / 1000.0 for v in doc["table"]]
        return cls(table, float(doc["center"]), float(doc["scale"]))

    def avg_logp(self, label: str) -> float:
        codes = encode(label)
        t = self.table
        total = 0.0
        for i in range(2, len(codes)):
            total += t[(codes[i - 2] * SIZE + codes[i - 1]) * SIZE + codes[i]]
        return total / (len(codes) - 2)

    def _score(self, label: str) -> float:
        """0 (benign-looking) .. 1 (random-looking); digits and length sharpen it."""
        if not label:
            return 0.0
        z = (self.center - self.avg_logp(label)) / self.scale
        # Short labels carry little evidence: shrink towards the middle.
        z *= min(1.0, len(label) / 10.0)
        return 1.0 / (1.0 + math.exp(-z))


@lru_cache(maxsize=1)
def default_model() -> NgramModel:
    return NgramModel.load()
