"""The fast LowCardinality dictionary writes exactly what clickhouse-connect's own does."""

from __future__ import annotations

import random

import pytest
from clickhouse_connect.datatypes.base import ClickHouseType
from clickhouse_connect.datatypes.registry import get_from_name

from dnsflow.sinks.lowcard import fast_dictionary, speed_up

_LIBRARY = ClickHouseType._build_lc_dictionary  # the library's own, unpatched


@pytest.mark.parametrize("column", [
    [],
    ["a"],
    ["b", "a", "b", "", "c", "a", ""],
    [f"tenant-{random.Random(i).randint(0, 30)}" for i in range(5000)],
    ["ü.example", "U.example", "u.example", "ü.example"],
])
def test_same_index_and_keys_as_the_library(column):
    lc = get_from_name("LowCardinality(String)")
    assert fast_dictionary(column) == _LIBRARY(lc, column, None)


def test_sped_up_types_serialise_byte_for_byte_like_the_library():
    rng = random.Random(7)
    names = [f"n{rng.randint(0, 300)}.example.com" for _ in range(3000)]
    answers = [[f"192.0.2.{rng.randint(0, 9)}"] * rng.randint(0, 3) for _ in range(3000)]
    lc = get_from_name("LowCardinality(String)")
    arr = get_from_name("Array(LowCardinality(String))")

    def written() -> tuple[bytes, bytes]:
        a, b = bytearray(), bytearray()
        lc.write_column(names, a, _Ctx())
        arr.write_column(answers, b, _Ctx())
        return bytes(a), bytes(b)

    before = written()
    speed_up([lc, arr])
    assert "_build_lc_dictionary" in vars(lc)
    assert written() == before
    nullable = get_from_name("LowCardinality(Nullable(String))")
    speed_up([nullable])  # the nullable variant keeps the library's (None handling)
    assert "_build_lc_dictionary" not in vars(nullable)


class _Ctx:
    column_name = "c"
    encoding = None
