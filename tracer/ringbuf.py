"""Read a BPF ring buffer by copying whole committed spans.

Why not bcc's ring_buffer_poll? It calls back into Python once per record
and is woken by the kernel once per record: tracing redis-benchmark that is
~800k wake-ups and Python calls per run, and on a 2-core machine the
consumer's CPU comes straight out of the traced system's throughput
(measured: redis at ~0.5x of untraced). Here the kernel submits with
BPF_RB_NO_WAKEUP, and a thread copies everything committed so far with ONE
slice every few milliseconds; records are split only when decoded after the
run (redis at ~0.9x; see docs/performance.md).

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position (we
write it), page 1 the producer position, then the data area, mapped twice in
a row so that a record never wraps. Each record has an 8-byte header: its
length, with BUSY (not yet submitted) and DISCARD bits.
"""

from __future__ import annotations

import ctypes as ct
import mmap
import struct
from collections.abc import Iterator

_BUSY = 0x80000000
_DISCARD = 0x40000000
_LEN = 0x3FFFFFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingReader:
    def __init__(self, map_fd: int, pages: int) -> None:
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
        self._page = page

    def drain(self, into: list[bytes]) -> int:
        """Append the committed span to `into` and release it; return records seen."""
        data, page, mask = self._data, self._page, self.mask
        consumer = start = self._consumer_pos.value
        producer = _U64.unpack_from(data, 0)[0]
        records = 0
        while consumer < producer:
            length = _U32.unpack_from(data, page + (consumer & mask))[0]
            if length & _BUSY:  # reserved but not yet submitted: stop here
                break
            consumer += ((length & _LEN) + 15) & ~7  # header + data, 8-aligned
            records += 1
        if records:
            offset = page + (start & mask)
            into.append(self._view[offset:offset + (consumer - start)].tobytes())
            self._consumer_pos.value = consumer
        return records

    def caught_up(self) -> bool:
        return self._consumer_pos.value == _U64.unpack_from(self._data, 0)[0]

    def close(self) -> None:
        del self._consumer_pos  # a ctypes view pins the mmap open
        self._view.release()
        self._data.close()
        self._consumer.close()


def split_records(spans: list[bytes]) -> Iterator[bytes]:
    """The records of spans taken by RingReader.drain, in order, discards skipped."""
    for span in spans:
        offset, end = 0, len(span)
        while offset < end:
            length = _U32.unpack_from(span, offset)[0]
            size = length & _LEN
            if not length & _DISCARD:
                yield span[offset + 8:offset + 8 + size]
            offset += (size + 15) & ~7
