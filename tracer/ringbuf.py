"""Read a BPF ring buffer by copying whole committed spans.

Why not bcc's ring_buffer_poll? It calls back into Python once per record
and is woken by the kernel once per record: tracing redis-benchmark that is
~800k wake-ups and Python calls per run, and on a 2-core machine the
consumer's CPU comes straight out of the traced system's throughput
(measured: redis at ~0.5x of untraced). Here the kernel submits with
BPF_RB_NO_WAKEUP, and a thread copies everything committed so far with one
write into a memfd, only when a ring passes its high-water mark and when the
run ends (tracer/program.py drain_schedule); finding where the committed records end
takes a few slices per span (every record has the same size), and records
are split only when decoded after the run. See docs/performance.md.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we
write it), page 1 the producer position, then the data area, mapped twice in
a row so that a record never wraps. Each record has an 8-byte header: its
length, with BUSY (not yet submitted) and DISCARD bits.
"""

from __future__ import annotations

import ctypes as ct
import heapq
import mmap
import os
import struct
import threading
from collections.abc import Iterator

_BUSY = 0x80000000
_DISCARD = 0x40000000
_LEN = 0x3FFFFFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_POOL: list[int] = []  # memfds of read SpanBuffers, pages kept for the next run
_POOL_LOCK = threading.Lock()


class RingReader:
    """`record_size`: the size most records have (the kernel side reserves
    that one size for nearly everything). Runs of such records are checked
    with a few C-level slices instead of one Python step per record; any
    other record (a different size, busy, discarded) is stepped over alone."""

    def __init__(self, map_fd: int, pages: int, record_size: int = 0) -> None:
        page = mmap.PAGESIZE
        self.size = pages * page
        self.mask = self.size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The kernel reads this position concurrently: it must change in one
        # aligned 8-byte store. struct.pack_into copies bytes, and a torn
        # value made the kernel see a full ring and drop records.
        self._consumer_pos = ct.c_uint64.from_buffer(self._consumer)
        self._data = mmap.mmap(map_fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._view = memoryview(self._data)
        self._words = self._view.cast("I")  # the data area as u32s: header words
        self._page = page
        # a committed record of record_size: header word == record_size exactly
        self._stride = (record_size + 15) & ~7 if record_size else 0
        self._committed = _U32.pack(record_size) * (self.size // self._stride if record_size else 0)

    def drain(self, into: SpanBuffer | None) -> int:
        """Copy the committed span into `into` (None: drop it) and release it;
        return its size in bytes."""
        data, page, mask = self._data, self._page, self.mask
        consumer = start = self._consumer_pos.value
        producer = _U64.unpack_from(data, 0)[0]
        stride, step = self._stride, self._stride // 4
        while consumer < producer:
            if stride:
                # header words of the next n records, were they all of
                # record_size (the data area is mapped twice: no wrap here)
                n = (producer - consumer) // stride
                w = (page + (consumer & mask)) // 4
                run = _committed_run(self._words[w:w + n * step:step], self._committed)
                consumer += run * stride
                if consumer >= producer:
                    break
            # one record of another size, or not committed yet
            length = _U32.unpack_from(data, page + (consumer & mask))[0]
            if length & _BUSY:  # reserved but not yet submitted: stop here
                break
            consumer += ((length & _LEN) + 15) & ~7  # header + data, 8-aligned
        if consumer > start:
            if into is not None:
                offset = page + (start & mask)
                into.add(self._view[offset:offset + (consumer - start)])
            self._consumer_pos.value = consumer
        return consumer - start

    def filled(self) -> int:
        """Bytes between the consumer and the producer: records not yet drained."""
        return _U64.unpack_from(self._data, 0)[0] - self._consumer_pos.value

    def caught_up(self) -> bool:
        return self.filled() == 0

    def close(self) -> None:
        del self._consumer_pos  # a ctypes view pins the mmap open
        self._words.release()
        self._view.release()
        self._data.close()
        self._consumer.close()


class SpanBuffer:
    """Where drained spans are copied to, until the run is decoded: a memfd.

    Why not a bytes object per span: fresh user memory faults in one 4 KiB
    page at a time, and those faults were most of the reader's CPU (~22k of
    them for a 400k-record run; transparent huge pages are not granted on the
    project's VM). os.write() copies from the ring's mapping straight into
    the memfd's pages, allocated in the kernel without a fault: ~40% less CPU
    per record. The spans follow each other in the file, each ending at a
    record boundary, so the file reads back as one span.

    Allocating those pages is still half of the copy's cost (measured: ~90 ns
    per 224-byte record into fresh pages, ~40 ns into pages the file already
    has), so a buffer's memfd goes back to a small pool when the run is read,
    keeping up to KEEP_BYTES of its pages for the next run of this process
    (an engine records many runs in one process). Bytes past `size` are a
    previous run's and are never read."""

    KEEP_BYTES = 64 << 20
    POOL_MAX = 2

    def __init__(self) -> None:
        with _POOL_LOCK:
            fd = _POOL.pop() if _POOL else -1
        self._fd = fd if fd >= 0 else os.memfd_create("ldfi-trace", os.MFD_CLOEXEC)
        self.size = 0

    def add(self, span: memoryview) -> None:
        done = 0
        while done < len(span):
            done += os.pwrite(self._fd, span[done:], self.size + done)
        self.size += done

    def read(self) -> memoryview:
        """Everything added, as one span; the buffer is closed."""
        try:
            data = bytearray(self.size)
            view = memoryview(data)
            done = 0
            while done < self.size:
                got = os.preadv(self._fd, [view[done:]], done)
                if got <= 0:
                    raise OSError(f"trace spans: read {done} of {self.size} bytes")
                done += got
            return view
        finally:
            self.close()

    def close(self) -> None:
        """Give the memfd (and up to KEEP_BYTES of its pages) back to the pool."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            if os.fstat(fd).st_size > self.KEEP_BYTES:
                os.ftruncate(fd, self.KEEP_BYTES)
            with _POOL_LOCK:
                if len(_POOL) < self.POOL_MAX:
                    _POOL.append(fd)
                    return
        except OSError:
            pass
        os.close(fd)

    __del__ = close


def _committed_run(words: memoryview, committed: bytes) -> int:
    """How many of `words` (header words, in order) equal the committed
    record_size word before the first that does not: compared in C, halving."""
    raw = words.tobytes()
    n = len(raw) // 4
    if raw == committed[:4 * n]:
        return n
    lo, hi = 0, n  # raw[:4*lo] matches; raw[:4*hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if raw[:4 * mid] == committed[:4 * mid]:
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


def split_records(spans: list[memoryview]) -> Iterator[memoryview]:
    """The records of spans taken by RingReader.drain, in order, discards skipped."""
    for span in spans:
        offset, end = 0, len(span)
        while offset < end:
            length = _U32.unpack_from(span, offset)[0]
            size = length & _LEN
            if not length & _DISCARD:
                yield span[offset + 8:offset + 8 + size]
            offset += (size + 15) & ~7
