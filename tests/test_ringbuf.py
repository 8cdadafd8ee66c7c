"""tracer/ringbuf.py's pure parts, on a slot array laid out as the kernel
side writes it (bpf/trace.bpf.c, "Records go to one ring of fixed-size
slots per CPU"): which records the reader takes, where it stops, how it
releases slots; splitting drained spans and merging the per-CPU rings by
time. The real rings, and when the reader is woken to copy one out, are
exercised by the traced tests (tests/test_tracer.py)."""

from __future__ import annotations

import struct

from tracer import ringbuf
from tracer.ringbuf import CTL_SIZE, RingReader, SpanBuffer, merge_by_time, split_records

SLOT = 32  # u64 seq + a 24-byte record: u64 time, then 16 bytes
PENDING = 1 << 63


class FakeRing:
    """One CPU's slots and control words, written the way the programs do."""

    def __init__(self, nslots: int = 8, cpu: int = 1) -> None:
        self.nslots, self.cpu = nslots, cpu
        self.slots = bytearray(nslots * SLOT)
        self.ctl = bytearray(2 * CTL_SIZE)
        self.reader = RingReader(memoryview(self.slots), memoryview(self.ctl), cpu, SLOT)

    def claim(self) -> int:
        pos = self.head
        assert pos - self.tail < self.nslots, "the programs never claim past a ring's worth"
        struct.pack_into("<Q", self.ctl, self.cpu * CTL_SIZE, pos + 1)
        struct.pack_into("<Q", self.slots, (pos % self.nslots) * SLOT, self.lap(pos) | PENDING)
        return pos

    def lap(self, pos: int) -> int:
        return pos // self.nslots + 1

    def commit(self, pos: int, ts: int) -> None:
        at = (pos % self.nslots) * SLOT
        struct.pack_into("<QQ", self.slots, at, self.lap(pos), ts)

    def write(self, *times: int) -> None:
        for ts in times:
            self.commit(self.claim(), ts)

    @property
    def head(self) -> int:
        return struct.unpack_from("<Q", self.ctl, self.cpu * CTL_SIZE)[0]

    @property
    def tail(self) -> int:
        return struct.unpack_from("<Q", self.ctl, self.cpu * CTL_SIZE + 64)[0]


class Spans:
    def __init__(self) -> None:
        self.data = bytearray()

    def add(self, span: memoryview) -> None:
        self.data += span

    def times(self) -> list[int]:
        return times(split_records([memoryview(bytes(self.data))], SLOT))


def span(*stamps: int) -> memoryview:
    """A drained span: each slot its seq word (lap 1), then the record."""
    return memoryview(b"".join(struct.pack("<QQ16x", 1, ts) for ts in stamps))


def times(records) -> list[int]:
    return [struct.unpack_from("<Q", r)[0] for r in records]


def test_the_reader_takes_committed_records_and_releases_their_slots() -> None:
    ring, out = FakeRing(), Spans()
    ring.write(10, 20, 30)
    assert ring.reader.filled() == 3 * SLOT and ring.reader.pending() == 3
    assert ring.reader.drain(out) == 3 * SLOT
    assert out.times() == [10, 20, 30]
    assert ring.tail == 3 and ring.reader.caught_up()
    assert ring.reader.drain(out) == 0


def test_the_reader_stops_at_a_slot_still_being_written() -> None:
    ring, out = FakeRing(), Spans()
    ring.write(1)
    busy = ring.claim()
    ring.write(3)  # committed after a slot that is not: it waits too
    assert ring.reader.drain(out) == SLOT
    assert out.times() == [1] and ring.tail == 1
    ring.commit(busy, 2)
    ring.reader.drain(out)
    assert out.times() == [1, 2, 3] and ring.reader.caught_up()


def test_the_reader_follows_the_ring_around_its_end() -> None:
    ring, out = FakeRing(nslots=4), Spans()
    ring.write(1, 2, 3)
    ring.reader.drain(None)  # dropped, released
    ring.write(4, 5, 6, 7)  # positions 3..6: slots 3, 0, 1, 2
    assert ring.reader.drain(out) == 4 * SLOT
    assert out.times() == [4, 5, 6, 7] and ring.tail == 7


def test_many_laps_in_uneven_batches_lose_and_repeat_nothing() -> None:
    ring, out = FakeRing(nslots=4), Spans()
    stamp = 0
    for batch in (1, 3, 4, 2, 4, 1, 1, 3, 4, 4):
        ring.write(*range(stamp, stamp + batch))
        stamp += batch
        ring.reader.drain(out)
    assert out.times() == list(range(stamp)) and ring.reader.caught_up()


def test_a_previous_laps_record_is_not_taken_for_a_new_one() -> None:
    ring, out = FakeRing(nslots=4), Spans()
    ring.write(1, 2, 3, 4)
    ring.reader.drain(None)
    ring.claim()  # position 4 reuses slot 0, whose old record (position 0) is still there
    struct.pack_into("<Q", ring.slots, 0, 1)  # lap 1's: as if the pending mark were not written yet
    assert ring.reader.drain(out) == 0 and ring.tail == 4


def test_slots_go_back_to_the_programs_after_each_chunk_copied(monkeypatch) -> None:
    monkeypatch.setattr(ringbuf, "CHUNK_BYTES", 2 * SLOT)
    ring = FakeRing(nslots=8)
    ring.write(*range(7))
    tails = []

    class Watch(Spans):
        def add(self, span: memoryview) -> None:
            tails.append(ring.tail)  # as the copy of this chunk begins
            super().add(span)

    out = Watch()
    ring.reader.drain(out)
    assert tails == [0, 2, 4, 6] and out.times() == list(range(7)) and ring.tail == 7


def test_span_buffer_keeps_whole_slots_per_chunk_and_reuses_chunks(monkeypatch) -> None:
    monkeypatch.setattr(SpanBuffer, "CHUNK_BYTES", 3 * SLOT + 5)  # room for 3 slots
    monkeypatch.setattr(ringbuf, "_POOL", [])
    buffer = SpanBuffer(SLOT)
    buffer.add(span(*range(5)))
    buffer.add(span(5, 6))
    spans = buffer.read()
    assert [len(s) for s in spans] == [3 * SLOT, 3 * SLOT, SLOT]
    assert times(split_records(spans, SLOT)) == list(range(7)) and buffer.size == 7 * SLOT
    chunks = list(buffer._chunks)
    del spans
    buffer.close()
    assert chunks == ringbuf._POOL
    again = SpanBuffer(SLOT)
    again.add(span(9))
    assert again._chunks[0] in chunks and times(split_records(again.read(), SLOT)) == [9]
    again.close(reuse=False)  # views may be alive: not pooled
    assert len(ringbuf._POOL) == 2


def test_split_takes_every_slot_of_a_span() -> None:
    got = list(split_records([span(5, 7), span(9)], 32))
    assert times(got) == [5, 7, 9] and all(len(r) == 24 for r in got)


def test_rings_merge_by_time_keeping_each_ring_in_order() -> None:
    cpu0 = split_records([span(10, 40, 50)], SLOT)
    cpu1 = split_records([span(20, 30, 60)], SLOT)
    assert times(merge_by_time([cpu0, cpu1])) == [10, 20, 30, 40, 50, 60]


def test_one_ring_is_passed_through() -> None:
    assert times(merge_by_time([split_records([span(3, 1)], SLOT)])) == [3, 1]


def test_a_ring_leaves_most_of_itself_for_a_late_reader() -> None:
    """The mark at which a ring wakes the reader leaves three quarters of it
    free (fifteen sixteenths of a small ring, where that is little time at
    millions of records a second), and is never 0: an empty ring wakes
    nobody."""
    from tracer.program import SMALL_RING_BYTES, ring_mark

    slot = 232
    for mib in (1, 2, 3, 4, 7, 8, 16, 64, 512):
        slots = 1 << ((mib << 20) // slot).bit_length() - 1
        mark = ring_mark(slots, slot)
        assert mark >= 1
        free = slots - mark
        if slots * slot < SMALL_RING_BYTES:
            assert free >= slots * 15 // 16
        else:
            assert free >= slots * 3 // 4 and mark >= slots // 4  # big rings: big spans
    assert ring_mark(4, 232) == 1
