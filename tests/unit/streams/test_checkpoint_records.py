"""Checkpoints as faust table records: large ones are split, stale pieces deleted, and a
checkpoint with a missing piece is not half-restored."""

import os

from dnsflow.streams.checkpoint_records import MANIFEST, assemble, checkpoint_key, to_records


def apply(table: dict[str, bytes], records) -> None:
    for key, value in records:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value


def test_small_checkpoint_is_one_record():
    value = b"\x04\x22\x4d\x18" + os.urandom(100)
    assert to_records(3, value, 1) == [(checkpoint_key(3), value)]
    assert assemble(to_records(3, value, 1)) == {3: value}


def test_large_checkpoint_is_split_and_reassembled_per_partition():
    big, small = os.urandom(2500), os.urandom(10)
    table: dict[str, bytes] = {}
    apply(table, to_records(0, big, 7, limit=1000))
    apply(table, to_records(1, small, 7, limit=1000))
    assert len(table) == 5  # three pieces, a manifest, one plain checkpoint
    assert all(len(v) <= 1000 for v in table.values())
    assert table[checkpoint_key(0)].startswith(MANIFEST)
    assert assemble(table.items()) == {0: big, 1: small}
    assert assemble(table.items(), partitions={1}) == {1: small}


def test_new_generation_deletes_the_previous_pieces():
    table: dict[str, bytes] = {}
    apply(table, to_records(2, os.urandom(2500), 1, limit=1000))
    newer = os.urandom(1500)
    apply(table, to_records(2, newer, 2, previous=table[checkpoint_key(2)], limit=1000))
    assert sorted(table) == [checkpoint_key(2), "logic:2:2:0", "logic:2:2:1"]
    assert assemble(table.items()) == {2: newer}
    smaller = os.urandom(10)
    apply(table, to_records(2, smaller, 3, previous=table[checkpoint_key(2)], limit=1000))
    assert table == {checkpoint_key(2): smaller}


def test_checkpoint_with_a_missing_piece_is_not_restored(caplog):
    table: dict[str, bytes] = {}
    apply(table, to_records(4, os.urandom(2500), 1, limit=1000))
    del table["logic:4:1:1"]
    assert assemble(table.items()) == {}
    assert "missing 1 of its 3 pieces" in caplog.text
