"""Read the tracer's per-CPU record rings by copying whole committed spans.

The kernel side (bpf/trace.bpf.c, "Records go to one ring of fixed-size
slots per CPU") writes records into an mmapable array: one ring of
RING_SLOTS slots per CPU, each slot a u64 `seq` and one record. The record
at ring position p is committed once its slot's seq reads p's lap,
p // RING_SLOTS + 1. A control array holds each ring's head (claimed by the
programs) and tail (ours: the first position not yet read); the programs
never claim more than a ring's worth of slots past the tail.

Why not bcc's ring_buffer_poll, or a BPF ring buffer at all? The poll calls
back into Python once per record and is woken once per record (redis at
~0.5x of untraced), and a BPF ring buffer's reserve and submit cost ~25 ns
more per record in the kernel than this ring's compare-and-swap and store.
Here a record wakes nobody: a thread copies everything committed so far into
pooled memory (SpanBuffer), only when the kernel side says a ring reached
its mark and when the run ends (tracer/program.py, ring_mark); finding where the
committed records end takes a few C-level comparisons per span, and records
are split only when decoded after the run. See docs/performance.md.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import heapq
import mmap
import struct
import threading
from collections.abc import Iterator

_U64 = struct.Struct("<Q")
_POOL: list[mmap.mmap] = []  # chunks of closed SpanBuffers, kept for the next run
_ANON_POPULATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
_POOL_LOCK = threading.Lock()
CTL_SIZE = 128  # struct ring_ctl: head and tail on cache lines of their own
# Slots are released to the programs after each chunk copied, not after a
# whole span: copying a full ring takes milliseconds, while it keeps filling.
CHUNK_BYTES = 1 << 20
_TAIL_OFFSET = 64


class RingReader:
    """One CPU's ring: `slots` is its part of the mmapped slot array (read
    only), `ctl` the mmapped control array, `cpu` its index there."""

    def __init__(self, slots: memoryview, ctl: memoryview, cpu: int, slot_size: int) -> None:
        if slot_size % 8 or len(slots) % slot_size:
            raise ValueError("slots must be whole 8-byte aligned slots")
        self.slot_size = slot_size
        self.nslots = len(slots) // slot_size
        if self.nslots & (self.nslots - 1):
            raise ValueError("a ring's slot count must be a power of two")
        self.size = len(slots)
        self._slots = slots
        self._seqs = slots.cast("Q")[::slot_size // 8]  # every slot's seq word
        # The programs read the tail concurrently: it must change in one
        # aligned 8-byte store (a torn value once made the kernel side see a
        # full ring), which a ctypes u64 gives and struct.pack_into does not.
        self._head = ct.c_uint64.from_buffer(ctl, cpu * CTL_SIZE)
        self._tail = ct.c_uint64.from_buffer(ctl, cpu * CTL_SIZE + _TAIL_OFFSET)

    def drain(self, into: SpanBuffer | None) -> int:
        """Copy the committed records past the tail into `into` (None: drop
        them) and release their slots; return the bytes taken."""
        start = tail = self._tail.value
        head = self._head.value
        chunk = max(1, CHUNK_BYTES // self.slot_size)
        while tail < head:
            first = tail & (self.nslots - 1)
            n = min(head - tail, self.nslots - first, chunk)  # not past the end of the slots
            lap = tail // self.nslots + 1  # every slot of [first, first + n) is in it
            done = _committed_run(self._seqs[first:first + n], lap)
            if done and into is not None:
                into.add(self._slots[first * self.slot_size:(first + done) * self.slot_size])
            tail += done
            self._tail.value = tail  # each chunk's slots go back to the programs at once
            if done < n:
                break  # a slot still being written: the rest waits for the next look
        return (tail - start) * self.slot_size

    def pending(self) -> int:
        """Records claimed past the tail: not yet drained."""
        return self._head.value - self._tail.value

    def filled(self) -> int:
        """Bytes of the records not yet drained."""
        return self.pending() * self.slot_size

    def caught_up(self) -> bool:
        return self.pending() == 0

    def close(self) -> None:
        del self._head, self._tail  # ctypes views pin their buffer
        self._seqs.release()
        self._slots.release()


class SpanBuffer:
    """Where drained spans are copied to, until the run is decoded: chunks of
    anonymous memory, taken from and given back to a pool that the runs of
    this process share (an engine records many runs in one process).

    Why a pool: fresh user memory faults in one 4 KiB page at a time, and
    those faults were most of the reader's CPU (~22k of them for a
    400k-record run; transparent huge pages are not granted on the project's
    VM). A new chunk is populated by the kernel in one go (MAP_POPULATE), and
    a reused one is already there: a 224-byte record then costs ~25 ns to
    copy, against ~48 ns with os.pwrite into a memfd's existing pages (the
    previous design) and ~90 ns into fresh ones. The chunks are decoded
    where they are, with no copy into one buffer after the run. Each chunk
    holds whole slots only, so no record is split between two.

    How many are kept: an engine runs one workload again and again, so the
    pool keeps what the process's biggest run took, up to KEEP_CHUNKS, for
    the process's life. Kept at 16 (64 MiB), a 400k-record redis run (90 MB)
    populated 6 fresh chunks per run, ~1.4 ms each: a quarter of the
    reader's CPU (docs/performance.md, "Seventh session"). Marking kept
    chunks MADV_FREE, so that the kernel could take them back at any time,
    cost nearly all of that gain: writing into such a page again was ~3x
    slower than into a kept one."""

    CHUNK_BYTES = 4 << 20
    KEEP_CHUNKS = 64  # at most 256 MiB kept for the next run

    def __init__(self, slot_size: int) -> None:
        self._usable = self.CHUNK_BYTES // slot_size * slot_size
        self._chunks: list[mmap.mmap] = []
        self._views: list[memoryview] = []
        self._fill = self._usable  # of the last chunk: none yet
        self.size = 0

    def add(self, span: memoryview) -> None:
        done = 0
        while done < len(span):
            if self._fill == self._usable:
                self._new_chunk()
            n = min(len(span) - done, self._usable - self._fill)
            self._views[-1][self._fill:self._fill + n] = span[done:done + n]
            self._fill += n
            done += n
        self.size += done

    def _new_chunk(self) -> None:
        with _POOL_LOCK:
            chunk = _POOL.pop() if _POOL else None
        if chunk is None:
            chunk = mmap.mmap(-1, self.CHUNK_BYTES, flags=_ANON_POPULATE)
        self._chunks.append(chunk)
        self._views.append(memoryview(chunk))
        self._fill = 0

    def read(self) -> list[memoryview]:
        """Everything added, as spans (valid until close())."""
        ends = [self._usable] * (len(self._views) - 1) + [self._fill] * bool(self._views)
        return [view[:end] for view, end in zip(self._views, ends, strict=True)]

    def close(self, reuse: bool = True) -> None:
        """Give the chunks back to the pool (the rest to the kernel).
        `reuse=False` when views of them may still be alive (a decode that
        failed half-way): they are then left to the garbage collector."""
        chunks, self._chunks = self._chunks, []
        for view in self._views:
            view.release()
        self._views = []
        for chunk in chunks:
            if reuse:
                with _POOL_LOCK:
                    if len(_POOL) < self.KEEP_CHUNKS:
                        _POOL.append(chunk)
                        continue
            with contextlib.suppress(BufferError):  # a record still viewed: GC closes it
                chunk.close()

    __del__ = close


def _committed_run(seqs: memoryview, lap: int) -> int:
    """How many of `seqs` (slots' seq words, in ring order) read `lap`
    before the first that does not: compared in C, halving."""
    raw = seqs.tobytes()
    expected = _U64.pack(lap) * len(seqs)
    if raw == expected:
        return len(seqs)
    lo, hi = 0, len(seqs)  # raw[:8*lo] matches; raw[:8*hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if raw[:8 * mid] == expected[:8 * mid]:
            lo = mid
        else:
            hi = mid
    return lo


def merge_by_time(rings: list[Iterator[memoryview]]) -> Iterator[memoryview]:
    """The records of several rings (one per CPU) as one stream, by their
    time (every record starts with its u64 bpf_ktime_get_ns()). A thread's
    records keep their order: it takes their times one after another, on
    whichever CPU it runs."""
    if len(rings) == 1:
        return rings[0]
    return heapq.merge(*rings, key=_record_time)


def _record_time(record: memoryview) -> int:
    return _U64.unpack_from(record, 0)[0]


def split_records(spans: list[memoryview], slot_size: int) -> Iterator[memoryview]:
    """The records of spans taken by RingReader.drain, in order (each slot
    is its seq word, then the record)."""
    for span in spans:
        for offset in range(0, len(span) - slot_size + 1, slot_size):
            yield span[offset + 8:offset + slot_size]
