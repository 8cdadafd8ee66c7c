"""tracer/ringbuf.py's pure parts: splitting drained spans into records and
merging the per-CPU rings by time; and when tracer/program.py copies a ring
out (drain_schedule). The rings themselves are exercised by
every traced test (tests/test_tracer.py)."""

from __future__ import annotations

import struct

from tracer.ringbuf import merge_by_time, split_records

_DISCARD = 0x40000000


def span(*records: tuple[int, bytes], discard: int = -1) -> memoryview:
    """A drained span as the kernel lays it out: an 8-byte header (length,
    flags) before each record, 8-byte aligned."""
    out = bytearray()
    for i, (ts, body) in enumerate(records):
        data = struct.pack("<Q", ts) + body
        out += struct.pack("<II", len(data) | (_DISCARD if i == discard else 0), 0)
        out += data + bytes(-len(data) % 8)
    return memoryview(bytes(out))


def times(records) -> list[int]:
    return [struct.unpack_from("<Q", r)[0] for r in records]


def test_split_skips_discarded_records() -> None:
    got = list(split_records([span((5, b"a" * 3), (7, b"b" * 8), (9, b"c"), discard=1)]))
    assert times(got) == [5, 9] and bytes(got[0][8:]) == b"aaa" and bytes(got[1][8:]) == b"c"


def test_rings_merge_by_time_keeping_each_ring_in_order() -> None:
    cpu0 = split_records([span((10, b"x"), (40, b"y"), (50, b"z"))])
    cpu1 = split_records([span((20, b"p"), (30, b"q"), (60, b"r"))])
    merged = list(merge_by_time([cpu0, cpu1]))
    assert times(merged) == [10, 20, 30, 40, 50, 60]
    assert [bytes(r[8:]) for r in merged] == [b"x", b"p", b"q", b"y", b"z", b"r"]


def test_one_ring_is_passed_through() -> None:
    assert times(merge_by_time([split_records([span((3, b""), (1, b""))])])) == [3, 1]


def test_a_ring_cannot_fill_between_two_looks_of_the_reader() -> None:
    """Whatever the ring's size (1 MiB, the smallest a CPU gets, and up):
    what arrives at FILL_RATE during one look's wait is at most half the
    ring, and a ring left at its high-water mark still has room for two
    such waits."""
    from tracer.program import DRAIN_MAX, FILL_RATE, RING_MIN_PAGES, drain_schedule

    for mib in (1, 2, 3, 4, 8, 16, 64, 128, 512):
        size = mib << 20
        assert size >= RING_MIN_PAGES * 4096
        wait, high_water = drain_schedule(size)
        assert 0 < wait <= DRAIN_MAX
        assert FILL_RATE * wait <= size / 2
        assert 0 <= high_water <= size - 2 * FILL_RATE * wait
    assert drain_schedule(2 << 20)[1] == 0  # small: copied at every look
    assert drain_schedule(1 << 20)[0] < drain_schedule(2 << 20)[0]  # and looked at sooner
    assert drain_schedule(128 << 20)[1] > (96 << 20)  # big: a long run stays in the ring
