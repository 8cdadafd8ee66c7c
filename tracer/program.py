"""Load bpf/trace.bpf.c once per process and record one run at a time.

Compiling costs about a second, so a TraceProgram is built once and reused:
each run only puts its cgroup ids into the `cgroups` map (the kernel side
ignores every task outside them), drains the ring buffer every few
milliseconds while the run goes on (records are submitted without waking
us: see tracer/ringbuf.py), and takes the ids out again at the end.

    program = TraceProgram(payload_bytes=64)
    recording = program.record({cgroup_id: "server", ...})
    ...                                  # the run
    result = recording.stop()            # events, lost count
"""

from __future__ import annotations

import ctypes as ct
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer import btf
from tracer.decode import BPF_DIR, Decoder, H
from tracer.events import Event
from tracer.kernel import quiet_stderr
from tracer.ringbuf import RingReader, split_records

COUNTERS = ("lost_ringbuf", "lost_stash", "emitted", "payload_err", "lost_mmsg")
DRAIN_INTERVAL = 0.005  # s; 16 MiB of ring buffer lasts far longer at any rate we saw
_BPF_RB_NO_WAKEUP = 1


class TracerUnavailable(RuntimeError):
    """The tracer cannot load here; the message says why and how to fix it."""


@dataclass
class RecordedRun:
    events: list[Event]
    lost_events: int  # events not recorded: ring buffer full, stash full, mmsg past MMSG_MAX
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.lost_events == 0


class TraceProgram:
    def __init__(self, payload_bytes: int = 64, ringbuf_pages: int = 4096) -> None:
        if not 0 <= payload_bytes <= 4096:
            raise ValueError("payload_bytes must be between 0 and 4096")
        if ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError("ringbuf_pages must be a power of two")
        self.payload_bytes = payload_bytes
        started = time.perf_counter()
        self.bpf = _compile(payload_bytes, ringbuf_pages)
        self.load_seconds = time.perf_counter() - started
        self.ring = RingReader(self.bpf[b"events"].map_fd, ringbuf_pages)
        self._busy = threading.Lock()
        self._tc: Any = None

    def close(self) -> None:
        """Detach and unload every program and map (they also go when the
        process exits, however it exits)."""
        self.ring.close()
        self.bpf.cleanup()

    def __enter__(self) -> TraceProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tc_function(self) -> Any:
        """The fault injector's tc classifier (bpf/faults.bpf.c), loaded once."""
        if self._tc is None:
            from bcc import BPF

            with quiet_stderr():
                self._tc = self.bpf.load_func(b"fault_tc", BPF.SCHED_CLS)
        return self._tc

    def counters(self) -> dict[str, int]:
        table = self.bpf[b"counters"]
        return {name: sum(table[ct.c_int(i)]) for i, name in enumerate(COUNTERS)}

    def record(self, nodes: Mapping[int, str]) -> Recording:
        """Start recording the tasks of these cgroups (id -> node name)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this TraceProgram is already recording a run")
        try:
            return Recording(self, nodes)
        except BaseException:
            self._forget(nodes)
            self._release()
            raise

    def _forget(self, nodes: Mapping[int, str]) -> None:
        """Take the run's cgroups out of scope and drop per-run kernel state: a
        socket-owner entry left behind could attribute a later run's socket
        (same netns inode and port) to this run's cgroup."""
        scope = self.bpf[b"cgroups"]
        for cgroup_id in nodes:
            scope.pop(ct.c_uint64(cgroup_id), None)
        self.bpf[b"known_socks"].clear()
        self.bpf[b"listen_ports"].clear()

    def _release(self) -> None:
        self._busy.release()


def _compile(payload_bytes: int, ringbuf_pages: int):  # -> bcc.BPF
    try:
        from bcc import BPF
    except ImportError as err:
        raise TracerUnavailable(
            f"bcc is not importable ({err}): run 'make setup' (Debian's python3-bpfcc)"
        ) from None
    try:
        offsets = btf.offsets()
    except (OSError, KeyError, ValueError) as err:
        raise TracerUnavailable(
            f"cannot read kernel struct offsets from {btf.BTF_PATH} ({err}): "
            "the kernel needs CONFIG_DEBUG_INFO_BTF=y"
        ) from None
    cflags = [*btf.cflags(offsets), f"-I{BPF_DIR}", f"-DPAYLOAD_N={payload_bytes}",
              f"-DRINGBUF_PAGES={ringbuf_pages}", f"-DSELF_TGID={os.getpid()}",
              f"-DWAKEUP_FLAGS={_BPF_RB_NO_WAKEUP}"]
    try:
        with quiet_stderr():
            return BPF(text=program_source().encode(), cflags=cflags)
    except Exception as err:  # bcc raises bare Exception for compile/load/attach failures
        raise TracerUnavailable(
            f"loading bpf/trace.bpf.c failed ({err}); 'ldfi doctor' shows what is missing"
        ) from None


_INCLUDE_BPF_C = re.compile(r'^#include "(\w+\.bpf\.c)"$', re.M)


def program_source(path: Path = BPF_DIR / "trace.bpf.c") -> str:
    """trace.bpf.c with its `#include "x.bpf.c"` lines spliced in. bcc rewrites
    map method calls (`m.lookup(&k)`) in the main file only: left in an
    included file they compile into calls the verifier refuses."""

    text = path.read_text()

    def splice(match: re.Match[str]) -> str:
        part = path.parent / match.group(1)
        resume = text.count("\n", 0, match.end()) + 2
        return f'#line 1 "{part.name}"\n{part.read_text()}\n#line {resume} "{path.name}"'

    return _INCLUDE_BPF_C.sub(splice, text)


class Recording:
    """One run's recording: a thread copies committed spans out of the ring
    buffer every few milliseconds (so it cannot fill up); splitting and
    decoding the records waits until stop()."""

    def __init__(self, program: TraceProgram, nodes: Mapping[int, str]) -> None:
        self.program = program
        self.nodes = dict(nodes)
        self._stopping = threading.Event()
        program.ring.drain([])  # a previous run's stragglers go nowhere
        self._spans: list[bytes] = []
        self._before = program.counters()
        scope = program.bpf[b"cgroups"]
        for cgroup_id in self.nodes:
            scope[ct.c_uint64(cgroup_id)] = ct.c_uint32(1)
        self._thread = threading.Thread(target=self._consume, name="ldfi-trace", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        while not self._stopping.wait(DRAIN_INTERVAL):
            self.program.ring.drain(self._spans)

    def _drain_to_end(self, deadline: float = 0.05) -> int:
        """Drain until the reader has caught up with the producer; a record
        still being written when we stop would otherwise hold back everything
        after it. Returns 1 if it never caught up (at least one record lost)."""
        ring = self.program.ring
        give_up = time.monotonic() + deadline
        while True:
            ring.drain(self._spans)
            if ring.caught_up():
                return 0
            if time.monotonic() >= give_up:
                return 1
            time.sleep(0.001)

    def stop(self) -> RecordedRun:
        """Stop tracing these cgroups, drain what is left, decode, release the program."""
        try:
            self.program._forget(self.nodes)
        finally:
            self._stopping.set()  # whatever happened, the drain thread must end
            self._thread.join()
            try:
                behind = self._drain_to_end()
                after = self.program.counters()
            finally:
                self.program._release()
        delta = {name: after[name] - self._before[name] for name in COUNTERS}
        delta["lost_ringbuf"] += behind
        decoder = Decoder(self.nodes)
        records = split_records(self._spans)
        events = [e for e in map(decoder.decode, records) if e is not None]
        lost = sum(count for name, count in delta.items() if name.startswith("lost_"))
        return RecordedRun(events, lost, delta)


assert H["CNT_N"] == len(COUNTERS)
