"""Load bpf/trace.bpf.c once per process and record one run at a time.

Compiling costs about a second, so a TraceProgram is built once and reused:
each run only puts its cgroup ids into the `cgroups` map (the kernel side
ignores every task outside them), leaves the records in the per-CPU ring
buffers while the run goes on unless one reaches its mark (then the kernel
side wakes the reader: see Recording), and takes the ids out again and
copies the records out at the end.

    program = TraceProgram(payload_bytes=64)
    recording = program.record({cgroup_id: "server", ...})
    ...                                  # the run
    result = recording.stop()            # events, lost count
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import mmap
import os
import re
import select
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer import btf, lifecycle
from tracer.decode import BPF_DIR, Decoder, H
from tracer.events import Event
from tracer.kernel import cgroup2_root, link_to_cgroup, quiet_stderr
from tracer.ringbuf import RingReader, SpanBuffer, merge_by_time, split_records

COUNTERS = ("lost_ringbuf", "lost_stash", "emitted", "payload_err", "lost_mmsg")
# The reader sleeps until a ring reaches its mark (ring_mark): the program
# whose claim finds the ring there wakes it (bpf/trace.bpf.c, ring_marks).
# So a run that stays under the mark is not touched by the reader until it
# ends, a long run is copied out in big spans, and an idle reader costs
# nothing. The rest of the ring is left for the reader to wake up and copy:
# at the 2.2M records/s of bench/syscall_cost.py's loop on the faster of our
# hosts (one core doing nothing but traced UDP sends and receives), 5.25 MiB
# of a default 7 MiB ring fill in ~11 ms; a 1 MiB ring (what each CPU gets
# by default on a host of 16 or more CPUs) leaves ~1.7 ms. Beyond that a
# late reader loses records (counted: lost_ringbuf). The reader also looks
# every LOOK_EVERY s, a safety net that keeps it alive but cannot save a
# ring filling at such rates, and again after RETRY_AFTER s when a drain
# stopped at a record still being written (the programs send nothing more
# for the same tail).
LOOK_EVERY, RETRY_AFTER = 0.1, 0.001
SMALL_RING_BYTES = 4 << 20
RING_MIN_PAGES = 256  # 1 MiB: the smallest ring a CPU gets
_BPF_PSEUDO_KFUNC_CALL = 2
# Loaded with the rest but attached only for runs that arm send triggers
# (send_syscalls): otherwise sends are recorded by the socket layer's program,
# at no syscall tracepoint at all (bpf/trace.bpf.c, "socket-layer data path").
SEND_SYSCALLS = (*(f"syscalls:sys_enter_{call}".encode()
                   for call in ("write", "writev", "sendto", "sendmsg", "sendmmsg")),
                 *(f"syscalls:sys_exit_{call}".encode()
                   for call in ("write", "writev", "sendto", "sendmsg", "sendmmsg")))


# The cgroup programs of bpf/trace.bpf.c ("socket life cycle", "UDP receive
# sources"), linked to the cgroup v2 root while the program lives:
# (function, bpf_prog_type, bpf_attach_type).
_CGROUP_SOCK, _CGROUP_SOCK_ADDR = 9, 18
CGROUP_HOOKS = (
    (b"cgroup_sock_create", _CGROUP_SOCK, 2),          # INET_SOCK_CREATE
    (b"cgroup_post_bind4", _CGROUP_SOCK, 12),          # INET4_POST_BIND
    (b"cgroup_post_bind6", _CGROUP_SOCK, 13),          # INET6_POST_BIND
    (b"cgroup_connect4", _CGROUP_SOCK_ADDR, 10),       # INET4_CONNECT
    (b"cgroup_connect6", _CGROUP_SOCK_ADDR, 11),       # INET6_CONNECT
    (b"cgroup_udp4_recvmsg", _CGROUP_SOCK_ADDR, 19),   # UDP4_RECVMSG
    (b"cgroup_udp6_recvmsg", _CGROUP_SOCK_ADDR, 20),   # UDP6_RECVMSG
    (b"cgroup_sock_release", _CGROUP_SOCK, 34),        # INET_SOCK_RELEASE
)


def ring_mark(ring_slots: int, slot_size: int) -> int:
    """The fill, in slots, at which a ring wakes the reader: a quarter of the
    ring, a sixteenth of a small one (under SMALL_RING_BYTES), whose rest
    would fill too soon for a reader that comes late."""
    fraction = 16 if ring_slots * slot_size < SMALL_RING_BYTES else 4
    return max(1, ring_slots // fraction)


def record_size(payload_bytes: int) -> int:
    """The size of (nearly) every record: struct ev_sock's (trace.bpf.c RECORD_SIZE)."""
    return (H["EV_SOCK_SIZE_BASE"] + payload_bytes + 7) & ~7


class TracerUnavailable(RuntimeError):
    """The tracer cannot load here; the message says why and how to fix it."""


@dataclass
class RecordedRun:
    events: list[Event]
    lost_events: int  # events not recorded: ring full, stash full, mmsg past MMSG_MAX
    counters: dict[str, int] = field(default_factory=dict)
    reader_cpu: float = 0.0  # s of CPU the drain thread used while the run went on
    ring_bytes: list[int] = field(default_factory=list)  # drained from each CPU's ring
    final_drain_cpu: float = 0.0  # s of CPU copying what the rings held when it ended
    reader_looks: int = 0  # times the reader looked at the rings while the run went on:
    #                        woken by a ring at its mark, on its LOOK_EVERY timer, or retrying

    @property
    def complete(self) -> bool:
        return self.lost_events == 0


class TraceProgram:
    """`ring_pages`: the memory of all record rings together, in pages (one
    ring per CPU, each at least RING_MIN_PAGES; each holds a power of two of
    record slots, as many as fit)."""

    def __init__(self, payload_bytes: int = 64, ring_pages: int = 4096) -> None:
        if not 0 <= payload_bytes <= 4096:
            raise ValueError("payload_bytes must be between 0 and 4096")
        if ring_pages <= 0 or ring_pages & (ring_pages - 1):
            raise ValueError("ring_pages must be a power of two")
        self.payload_bytes = payload_bytes
        _require_bcc()
        from bcc.utils import get_possible_cpus

        nr_rings = len(get_possible_cpus())
        cpu_pages = max(RING_MIN_PAGES, ring_pages >> (nr_rings - 1).bit_length())
        ring_bytes = cpu_pages * mmap.PAGESIZE
        self.slot_size = record_size(payload_bytes) + 8
        ring_slots = 1 << (ring_bytes // self.slot_size).bit_length() - 1  # a power of two
        mark_slots = ring_mark(ring_slots, self.slot_size)
        self.mark_bytes = mark_slots * self.slot_size
        started = time.perf_counter()
        self.bpf, self.typed_loads = _compile(payload_bytes, ring_slots, mark_slots, nr_rings)
        self.load_seconds = time.perf_counter() - started
        self._maps: list[tuple[mmap.mmap, memoryview]] = []
        self.rings: list[RingReader] = []
        self._links: list[int] = []
        self._marks: select.epoll | None = None
        self._marks_fd = -1
        self._interrupt = -1  # an eventfd: see wake_reader
        self._recording: Recording | None = None
        try:
            self._link_cgroup_hooks()
            slots = self._map_array(b"slots", mmap.PROT_READ)
            ctl = self._map_array(b"ring_ctl", mmap.PROT_READ | mmap.PROT_WRITE)
            stride = ring_slots * self.slot_size
            self.rings = [RingReader(slots[cpu * stride:(cpu + 1) * stride], ctl, cpu,
                                     self.slot_size) for cpu in range(nr_rings)]
            del slots, ctl
            self._marks = self._watch_marks()
        except OSError as err:
            self.close()
            raise TracerUnavailable(f"cannot map the record rings ({err.strerror}): "
                                    "'ldfi doctor' shows what is missing") from None
        except BaseException:
            self.close()
            raise
        self._busy = threading.Lock()
        self._generation = 0  # of the scope (see _scope)
        self._tc: Any = None
        self.send_syscalls_attached = False

    def _link_cgroup_hooks(self) -> None:
        """Link the cgroup hooks to the cgroup v2 root, so that they see the
        run's tasks wherever the sandbox puts them. A link, unlike an
        attachment, goes when its fd closes: a tracer that dies leaves no
        program attached to the root."""
        root = cgroup2_root()
        if root is None:
            raise TracerUnavailable("cgroup v2 is not mounted: "
                                    "mount -t cgroup2 none /sys/fs/cgroup/unified")
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise TracerUnavailable(f"cannot open the cgroup v2 root {root} ({err.strerror}): "
                                    "'ldfi doctor' shows what is missing") from None
        try:
            for name, _, attach_type in CGROUP_HOOKS:
                try:
                    self._links.append(link_to_cgroup(self.bpf.funcs[name].fd, fd, attach_type))
                except OSError as err:  # also: no libbpf.so.1 (then without a strerror)
                    raise TracerUnavailable(
                        f"cannot link {name.decode()} to the cgroup v2 root {root} "
                        f"({err.strerror or err}): 'ldfi doctor' shows what is missing") from None
        finally:
            os.close(fd)

    def _watch_marks(self) -> select.epoll:
        """An epoll that wakes the reader when a ring reaches its mark (the
        ring_marks buffer has a notification) or when wake_reader() is called."""
        marks = self.bpf[b"ring_marks"]
        marks.open_ring_buffer(lambda ctx, data, size: 0)  # what counts is being woken
        self._marks_fd = marks.map_fd
        self._interrupt = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        watch = select.epoll()
        try:
            watch.register(self._marks_fd, select.EPOLLIN)
            watch.register(self._interrupt, select.EPOLLIN)
        except BaseException:
            watch.close()
            raise
        return watch

    def wait_for_marks(self, timeout: float) -> None:
        """Sleep until a ring reaches its mark, wake_reader() is called, or
        `timeout` s pass."""
        if self._marks_ready(timeout):
            self.bpf.ring_buffer_consume()  # the notifications, so that epoll sleeps again
            if self._marks_ready(0):
                # a notification reserved but not yet committed (its program
                # was preempted): polling again at once would spin
                time.sleep(RETRY_AFTER)
        self._quiet_interrupt()

    def _marks_ready(self, timeout: float) -> bool:
        """Whether ring_marks holds a notification (waiting up to `timeout`
        s, or until wake_reader())."""
        assert self._marks is not None, "the program is closed"
        return any(fd == self._marks_fd for fd, _ in self._marks.poll(timeout))

    def _quiet_interrupt(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._interrupt)

    def _quiet_marks(self) -> None:
        """Forget wake-ups left from an earlier recording."""
        self.bpf.ring_buffer_consume()
        self._quiet_interrupt()

    def wake_reader(self) -> None:
        if self._interrupt >= 0:  # else closed: no reader to wake
            os.eventfd_write(self._interrupt, 1)

    def _map_array(self, name: bytes, prot: int) -> memoryview:
        """An mmapable array's values, mapped shared (bpf/trace.bpf.c's rings)."""
        table = self.bpf[name]
        size = table.max_entries * ct.sizeof(table.Leaf)
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        mapped = mmap.mmap(table.map_fd, size, mmap.MAP_SHARED, prot)
        view = memoryview(mapped)
        self._maps.append((mapped, view))
        return view

    def close(self) -> None:
        """Detach and unload every program and map (they also go when the
        process exits, however it exits). A recording still going on is
        stopped first (its reader thread must not outlive the maps)."""
        if getattr(self, "_recording", None) is not None:
            self._recording._halt_reader()
        for ring in self.rings:
            ring.close()
        self.rings = []
        for mapped, view in getattr(self, "_maps", []):
            view.release()
            mapped.close()
        self._maps = []
        for link in self._links:
            os.close(link)
        self._links = []
        if getattr(self, "_marks", None) is not None:
            self._marks.close()
            self._marks = None
        if getattr(self, "_interrupt", -1) >= 0:
            os.close(self._interrupt)
            self._interrupt = -1
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

    def send_syscalls(self, attached: bool) -> None:
        """Attach (or detach) the sends' syscall entry and exit programs.
        Fault triggers run at the entry, before the data leaves, and a send
        recorded there has its true entry time; runs that arm a send trigger
        need them. Other runs have their sends recorded by the socket layer's
        program, at no syscall tracepoint, which costs far less."""
        if attached == self.send_syscalls_attached:
            return
        if not attached:
            self.send_syscalls_attached = False
            for tp in SEND_SYSCALLS:
                self.bpf.detach_tracepoint(tp)
            return
        done = []
        try:
            for tp in SEND_SYSCALLS:
                self.bpf.attach_tracepoint(tp=tp, fn_name=_tracepoint_function(tp))
                done.append(tp)
        except Exception:  # bcc raises bare Exception: leave none attached
            for tp in done:
                self.bpf.detach_tracepoint(tp)
            raise
        self.send_syscalls_attached = True

    def counters(self) -> dict[str, int]:
        table = self.bpf[b"counters"]
        return {name: sum(table[ct.c_int(i)]) for i, name in enumerate(COUNTERS)}

    def record(self, nodes: Mapping[int, str], send_syscalls: bool = False) -> Recording:
        """Start recording the tasks of these cgroups (id -> node name).
        `send_syscalls`: the run will arm send triggers (see send_syscalls()).
        They are attached or detached here, before the run's nodes start, and
        left so after it: detaching waits for RCU grace periods (tens of ms),
        and a fault run's end is no place for a delay (a node that a fault
        silenced would be heard again once the faults are disarmed)."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this TraceProgram is already recording a run")
        try:
            self.send_syscalls(send_syscalls)
            self._recording = Recording(self, nodes)
            return self._recording
        except BaseException:
            self._forget(nodes)
            self._release()
            raise

    def _scope(self, nodes: Mapping[int, str], traced: bool) -> None:
        """Put the run's cgroups in scope or take them out. The kernel side
        caches, per thread, that it was in scope at the current generation:
        bumping the generation (after the change) voids those verdicts."""
        scope = self.bpf[b"cgroups"]
        for cgroup_id in nodes:
            if traced:
                scope[ct.c_uint64(cgroup_id)] = ct.c_uint32(1)
            else:
                scope.pop(ct.c_uint64(cgroup_id), None)
        bits = 0  # the kernel side's first filter: maybe_in_scope
        for key in scope:  # the ids in scope now
            bits |= 1 << (key.value & 63)
        self.bpf[b"scope_bits"][ct.c_int(0)] = ct.c_uint64(bits)
        self._generation += 1
        self.bpf[b"scope_gen"][ct.c_int(0)] = ct.c_uint64(self._generation)

    def _forget(self, nodes: Mapping[int, str]) -> None:
        """Take the run's cgroups out of scope and drop per-run kernel state: a
        socket-owner entry left behind could attribute a later run's socket
        (same netns inode and port) to this run's cgroup."""
        self._scope(nodes, traced=False)
        self.bpf[b"known_socks"].clear()
        self.bpf[b"listen_ports"].clear()

    def _release(self) -> None:
        self._recording = None
        self._busy.release()


def _require_bcc() -> None:
    try:
        import bcc  # noqa: F401  (only whether it imports)
    except ImportError as err:
        raise TracerUnavailable(
            f"bcc is not importable ({err}): run 'make setup' (Debian's python3-bpfcc)"
        ) from None


def _compile(payload_bytes: int, ring_slots: int, mark_slots: int,
             nr_rings: int) -> tuple[Any, bool]:
    """(bcc.BPF, whether its kernel reads are typed loads rather than helper calls)"""
    try:
        types = btf.BTF()
        offsets = btf.offsets(types)
        kernel = _kernel_types(types)
    except (OSError, KeyError, ValueError) as err:
        raise TracerUnavailable(
            f"cannot read kernel struct offsets from {btf.BTF_PATH} ({err}): "
            "the kernel needs CONFIG_DEBUG_INFO_BTF=y"
        ) from None
    cflags = [*btf.cflags(offsets), *btf.cflags(kernel), f"-I{BPF_DIR}",
              f"-DPAYLOAD_N={payload_bytes}", f"-DRING_SLOTS={ring_slots}",
              f"-DMARK_SLOTS={mark_slots}",
              f"-DNR_RINGS={nr_rings}", f"-DSELF_TGID={os.getpid()}"]
    source = program_source().encode()
    bpf_class = _bpf_class()
    bpf_class.kfunc_ids = frozenset(v for k, v in kernel.items() if k.startswith("BTF_FUNC_") and v)
    # Typed kernel loads first; a kernel whose verifier refuses them (no
    # bpf_rdonly_cast kfunc, or an older pointer model) gets helper reads.
    failure = None
    for kfunc_cast in ("1", "0") if kernel["BTF_FUNC_RDONLY_CAST"] else ("0",):
        try:
            with quiet_stderr():
                bpf = bpf_class(text=source, cflags=[*cflags, f"-DKFUNC_CAST={kfunc_cast}"])
        except Exception as err:  # bcc raises bare Exception for compile/load/attach failures
            failure = err
            continue
        try:
            with quiet_stderr():
                for name, prog_type, attach_type in CGROUP_HOOKS:
                    bpf.load_func(name, prog_type, attach_type=attach_type)
            return bpf, kfunc_cast == "1"
        except Exception as err:
            bpf.cleanup()
            failure = err
    raise TracerUnavailable(
        f"loading bpf/trace.bpf.c failed ({failure}); 'ldfi doctor' shows what is missing"
    ) from None


# What the typed loads of trace.bpf.c (CAST, LD) need beyond btf.NEEDED's
# offsets: the BTF ids of the types it casts addresses to, and the kfunc's
_TYPES = {"BTF_T_TASK": "task_struct", "BTF_T_FILE": "file", "BTF_T_SOCKET": "socket",
          "BTF_T_SOCK": "sock", "BTF_T_INET_SOCK": "inet_sock", "BTF_T_TCP_SOCK": "tcp_sock"}


def _kernel_types(types: btf.BTF) -> dict[str, int]:
    out = {name: types.find_struct(struct_name) for name, struct_name in _TYPES.items()}
    out["BTF_FUNC_RDONLY_CAST"] = types.find_func("bpf_rdonly_cast")
    return out


def _bpf_class() -> type:
    """bcc's BPF, plus two things bcc 0.26 lacks:

    - kfunc calls: bcc cannot declare one, so the C calls a helper whose
      number is the kfunc's BTF id (`(void *)BTF_FUNC_RDONLY_CAST`); before
      loading, such a `call` instruction is marked BPF_PSEUDO_KFUNC_CALL
      (src_reg 2), which tells the kernel the number is a BTF id. No helper
      has a number anywhere near a vmlinux BTF id.
    - all-or-nothing autoload: every program is loaded (verified) before any
      is attached, so a program the verifier refuses leaves nothing attached
      and the caller can retry with other flags."""
    from bcc import BPF, lib

    class KfuncBPF(BPF):
        kfunc_ids: frozenset[int] = frozenset()

        def load_func(self, func_name, prog_type, device=None, attach_type=-1):
            name = func_name if isinstance(func_name, bytes) else func_name.encode()
            start = lib.bpf_function_start(self.module, name)
            if name not in self.funcs and start and self.kfunc_ids:
                size = lib.bpf_function_size(self.module, name)
                code = (ct.c_uint8 * size).from_address(start)
                for at in range(0, size - 7, 8):
                    # BPF_JMP|BPF_CALL, dst 0, src 0 (helper), imm = kfunc BTF id
                    if code[at] == 0x85 and code[at + 1] == 0 and int.from_bytes(
                            bytes(code[at + 4:at + 8]), "little") in self.kfunc_ids:
                        code[at + 1] = _BPF_PSEUDO_KFUNC_CALL << 4
            return super().load_func(func_name, prog_type, device, attach_type)

        def _trace_autoload(self) -> None:
            kinds = ((b"tracepoint__", BPF.TRACEPOINT), (b"raw_tracepoint__", BPF.RAW_TRACEPOINT))
            loaded = []
            try:
                for i in range(lib.bpf_num_functions(self.module)):
                    name = lib.bpf_function_name(self.module, i)
                    for prefix, prog_type in kinds:
                        if name.startswith(prefix):
                            loaded.append((prefix, self.load_func(name, prog_type)))
                for prefix, fn in loaded:
                    event = fn.name[len(prefix):]
                    if prefix == b"tracepoint__":
                        tp = event.replace(b"__", b":")
                        if tp not in SEND_SYSCALLS:  # see TraceProgram.send_syscalls
                            self.attach_tracepoint(tp=tp, fn_name=fn.name)
                    else:
                        self.attach_raw_tracepoint(tp=event, fn_name=fn.name)
            except Exception:
                self.cleanup()
                raise

    return KfuncBPF


def _tracepoint_function(tp: bytes) -> bytes:
    """bcc's name for TRACEPOINT_PROBE(category, event)'s function."""
    return b"tracepoint__" + tp.replace(b":", b"__")


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
    """One run's recording: a thread sleeps until the kernel side says a ring
    reached its mark (ring_mark), and copies committed spans out of it
    then, so that a run that stays under it is not disturbed by copying at
    all; the rest is copied, and the records split, merged and decoded, in
    stop()."""

    def __init__(self, program: TraceProgram, nodes: Mapping[int, str]) -> None:
        self.program = program
        self.nodes = dict(nodes)
        self._stopping = threading.Event()
        for ring in program.rings:
            ring.drain(None)  # a previous run's stragglers go nowhere
        program._quiet_marks()  # and so do wake-ups left from it
        self._spans = [SpanBuffer(program.slot_size) for _ in program.rings]
        self._reader_cpu = 0.0
        self.looks = 0  # times the reader looked at the rings (RecordedRun.reader_looks)
        self._before = program.counters()
        program._scope(self.nodes, traced=True)
        self._thread = threading.Thread(target=self._consume, name="ldfi-trace", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        started = time.thread_time()
        rings = list(zip(self.program.rings, self._spans, strict=True))
        mark = self.program.mark_bytes
        timeout = LOOK_EVERY
        while True:
            self.program.wait_for_marks(timeout)
            if self._stopping.is_set():
                break
            self.looks += 1
            timeout = LOOK_EVERY
            for ring, spans in rings:
                if ring.filled() >= mark:
                    ring.drain(spans)
                    if ring.filled() >= mark:  # stopped at a record still being written
                        timeout = RETRY_AFTER
        self._reader_cpu = time.thread_time() - started

    def _halt_reader(self) -> None:
        self._stopping.set()
        self.program.wake_reader()
        self._thread.join()

    @property
    def copied_bytes(self) -> int:
        """Bytes the reader has copied out of the rings so far."""
        return sum(spans.size for spans in self._spans)

    def _drain_to_end(self, deadline: float = 0.05) -> int:
        """Drain until the reader has caught up with the producer; a record
        still being written when we stop would otherwise hold back everything
        after it. Returns how many records were claimed but not taken when it
        gave up (lost to this run)."""
        give_up = 0.0  # counted from the end of the first pass, which may copy a whole run
        while True:
            for ring, spans in zip(self.program.rings, self._spans, strict=True):
                ring.drain(spans)
            if all(ring.caught_up() for ring in self.program.rings):
                return 0
            give_up = give_up or time.monotonic() + deadline
            if time.monotonic() >= give_up:
                return sum(ring.pending() for ring in self.program.rings)
            time.sleep(0.001)

    def stop(self) -> RecordedRun:
        """Stop tracing these cgroups, drain what is left, decode, release the program."""
        try:
            self.program._forget(self.nodes)
        finally:
            self._halt_reader()  # whatever happened, the drain thread must end
            try:
                started = time.thread_time()
                behind = self._drain_to_end()
                final_drain_cpu = time.thread_time() - started
                after = self.program.counters()
            finally:
                self.program._release()
        delta = {name: after[name] - self._before[name] for name in COUNTERS}
        delta["lost_ringbuf"] += behind
        decoder = Decoder(self.nodes)
        ring_bytes = [spans.size for spans in self._spans]
        decoded = False
        try:
            records = merge_by_time([split_records(spans.read(), self.program.slot_size)
                                     for spans in self._spans])
            events = [e for e in map(decoder.decode, records) if e is not None]
            del records  # its generators hold views of the chunks
            decoded = True
        finally:
            for spans in self._spans:
                spans.close(reuse=decoded)  # the decoded events copied what they keep
        events = lifecycle.complete(events)
        lost = sum(count for name, count in delta.items() if name.startswith("lost_"))
        return RecordedRun(events, lost, delta, self._reader_cpu, ring_bytes,
                           final_drain_cpu=final_drain_cpu, reader_looks=self.looks)


assert H["CNT_N"] == len(COUNTERS)
