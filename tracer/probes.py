"""Kernel feature probes for `ldfi doctor`.

Each probe loads or attaches a tiny real program from bpf/probes.bpf.c and
checks an effect it can observe (a count in a map, a killed child, a dropped
ping), because kernel configs, version numbers and symbol tables do not tell
what a kernel will really let a program do. Every probe cleans up after itself
on every exit path; what it creates is named `ldfi-doctor-<pid>...` so that
`ldfi gc` can still find it if the process is killed mid-probe."""

from __future__ import annotations

import contextlib
import ctypes as ct
import errno
import mmap
import os
import platform
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tracer.kernel import BTF_VMLINUX, cgroup2_root, link_to_cgroup, quiet_stderr, tracefs_root

BPF_DIR = Path(__file__).resolve().parents[1] / "bpf"
PROBES_C = BPF_DIR / "probes.bpf.c"

# Mirrors of bpf/probes.h.
CFG_SELF_TGID, CFG_VICTIM_TGID, CFG_TCP_PORT, CFG_UDP_PORT = range(4)
(
    HIT_SYSCALL,
    HIT_SOCK,
    HIT_SIGNAL,
    HIT_TC_DROP,
    HIT_CGROUP_DROP,
    HIT_KPROBE,
    HIT_FENTRY,
    HIT_LSM,
    HIT_SOCK_SEND,
    HIT_SOCK_RECV,
    HIT_UDP_SOURCE,
    HIT_SOCK_CREATE,
    HIT_SOCK_RELEASE,
) = range(13)


@dataclass(frozen=True)
class ProbeResult:
    name: str
    title: str
    ok: bool
    detail: str
    required: bool
    loses: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Spec:
    title: str
    required: bool
    loses: str


SPECS: dict[str, _Spec] = {
    "root": _Spec(
        "root + capabilities",
        True,
        "everything: eBPF, network namespaces and cgroups need euid 0 with "
        "CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_BPF",
    ),
    "bpf_syscall": _Spec(
        "bpf() syscall", True, "everything eBPF: no tracing and no fault injection"
    ),
    "bcc": _Spec(
        "bcc + kernel headers",
        True,
        "every BPF program: the tracer compiles its BPF C with bcc at start",
    ),
    "btf": _Spec(
        "BTF (vmlinux)",
        True,
        "kernel struct offsets, so no exact socket 4-tuples from syscall tracepoints",
    ),
    "tracefs": _Spec(
        "tracefs", True, "attaching tracepoints: bcc finds their ids and formats in tracefs"
    ),
    "syscall_tracepoints": _Spec(
        "syscall tracepoints",
        True,
        "fault triggers on sends: a fault acts at the send's entry, before the data "
        "leaves (the trace itself needs no syscall tracepoint)",
    ),
    "sock_tracepoints": _Spec(
        "sock/tcp tracepoints",
        True,
        "TCP connection life cycle (connect/accept pairing, closes) in the lineage, "
        "and reads, writes and sends on sockets (sock_send_length/sock_recv_length)",
    ),
    "cgroup_sock": _Spec(
        "cgroup socket hooks",
        True,
        "socket, bind, connect (UDP) and close records, and the source address of "
        "UDP receives (so UDP messages could not be matched to their senders)",
    ),
    "record_slots": _Spec(
        "record slots (mmapable array + atomics)", True,
        "the event stream from the kernel programs to the tracer",
    ),
    "task_storage": _Spec(
        "task-local storage",
        True,
        "the tracer: each system call's entry arguments wait for its exit in "
        "task-local storage",
    ),
    "send_signal": _Spec(
        "bpf_send_signal",
        True,
        "exact crash and pause faults (a node killed or stopped at a traced event)",
    ),
    "netns_veth": _Spec(
        "network namespaces + veth",
        True,
        "the sandbox: one network namespace per node, joined by veth pairs",
    ),
    "tc_clsact": _Spec(
        "tc clsact + cls_bpf",
        True,
        "network faults: message loss, flow cuts, delays and partitions",
    ),
    "cgroup_skb": _Spec(
        "cgroup_skb",
        True,
        "per-node egress drops scoped by cgroup (the sender sees EPERM)",
    ),
    "kprobes": _Spec(
        "kprobes", False, "nothing the product needs: optional kernel-function tracing"
    ),
    "fentry": _Spec(
        "fentry", False, "nothing the product needs: optional cheaper kernel-function tracing"
    ),
    "bpf_lsm": _Spec(
        "BPF LSM",
        False,
        "nothing the product needs: optional faults that deny an operation (open, connect)",
    ),
}

ProbeFn = Callable[..., tuple[bool, str]]


def _result(name: str, ok: bool, detail: str) -> ProbeResult:
    spec = SPECS[name]
    return ProbeResult(name, spec.title, ok, detail, spec.required, spec.loses)


# Signals that arrived while probes ran; see _interrupts_deferred.
_pending_signals: list[int] = []


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM landing inside a bcc detach or a pyroute2 call leaves
    a half-closed object whose own clean-up then fails, so while probes run
    both only note the signal; the doctor stops at the next probe boundary,
    every clean-up done, and the caller sees KeyboardInterrupt as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    _pending_signals.clear()
    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: _pending_signals.append(signum))
        for sig in watched
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _stop_if_interrupted()


def _stop_if_interrupted() -> None:
    if _pending_signals:
        _pending_signals.clear()
        raise KeyboardInterrupt


def _run(name: str, probe: ProbeFn, *args: Any) -> ProbeResult:
    """One probe, its C-level chatter hidden; an unexpected error is a missing
    feature with the error as the detail, never a traceback for the user."""
    _stop_if_interrupted()
    try:
        with quiet_stderr():
            ok, detail = probe(*args)
    except Exception as err:
        ok, detail = False, f"probe failed: {_describe(err)}"
    return _result(name, ok, detail)


def _not_tried(name: str, because: str) -> ProbeResult:
    return _result(name, False, f"not tried: {because}")


def _errno_text(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno:
        return f"{err.strerror or err} [{errno.errorcode.get(err.errno, err.errno)}]"
    return str(err) or type(err).__name__


# ---------------------------------------------------------------- no BPF needed


_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_BPF": 39}


def _status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    return ""


def _user_namespace() -> str | None:
    """The uid map when running in a user namespace below the initial one,
    where capabilities look complete but the kernel ignores them for BPF."""
    uid_map = " ".join(Path("/proc/self/uid_map").read_text().split())
    return None if uid_map == "0 0 4294967295" else uid_map


def probe_root() -> tuple[bool, str]:
    euid = os.geteuid()
    cap_eff = int(_status_field("CapEff") or "0", 16)
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    # CAP_BPF exists from 5.8 on; before that CAP_SYS_ADMIN alone grants BPF.
    wanted = {cap: bit for cap, bit in _CAPS.items() if bit <= last_cap}
    missing = [cap for cap, bit in wanted.items() if not (cap_eff >> bit) & 1]
    caps = f"lacks {', '.join(missing)}" if missing else f"has {', '.join(wanted)}"
    detail = f"euid {euid}; CapEff {cap_eff:#x} {caps}"
    userns = _user_namespace()
    if userns is not None:
        detail += f"; but in a user namespace (uid_map {userns}), so they do not count for BPF"
    return euid == 0 and not missing and userns is None, detail


# bpf(2) numbers by machine; the raw syscall keeps this probe independent of
# bcc and the kernel headers, so "no BPF at all" and "bcc broken" read apart.
_BPF_NR = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_BPF_MAP_CREATE, _BPF_PROG_LOAD = 0, 5
_MAP_ARRAY, _PROG_SOCKET_FILTER = 2, 1
# r0 = 0; exit: the smallest program the verifier accepts.
_RET0 = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)


class _ProgLoadAttr(ct.Structure):
    _fields_ = [
        ("prog_type", ct.c_uint32),
        ("insn_cnt", ct.c_uint32),
        ("insns", ct.c_uint64),
        ("license", ct.c_uint64),
        ("log_level", ct.c_uint32),
        ("log_size", ct.c_uint32),
        ("log_buf", ct.c_uint64),
        ("kern_version", ct.c_uint32),
    ]


def _bpf_call(cmd: int, attr: ct.Array[ct.c_char] | ct.Structure) -> int:
    """The fd the bpf() syscall returns, or raise OSError with its errno."""
    nr = _BPF_NR.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"no bpf() syscall number known for {platform.machine()}")
    libc = ct.CDLL(None, use_errno=True)
    fd = libc.syscall(ct.c_long(nr), ct.c_int(cmd), ct.byref(attr), ct.c_uint(ct.sizeof(attr)))
    if fd < 0:
        code = ct.get_errno()
        raise OSError(code, os.strerror(code))
    return fd


_BPF_FIX = {
    errno.ENOSYS: "the kernel has no bpf() syscall (built without CONFIG_BPF_SYSCALL): "
    "use a kernel with BPF enabled",
    errno.EPERM: "the kernel refused bpf(): run as real root, not in a user namespace; "
    "in a container run it privileged; check seccomp and lockdown=confidentiality",
}


def _attr(data: bytes) -> ct.Array[ct.c_char]:
    return ct.create_string_buffer(data, len(data))


def probe_bpf_syscall() -> tuple[bool, str]:
    try:
        map_fd = _bpf_call(_BPF_MAP_CREATE, _attr(struct.pack("<IIII", _MAP_ARRAY, 4, 4, 1)))
        os.close(map_fd)
        insns = ct.create_string_buffer(_RET0, len(_RET0))
        license_ = ct.create_string_buffer(b"GPL")
        attr = _ProgLoadAttr(
            prog_type=_PROG_SOCKET_FILTER,
            insn_cnt=len(_RET0) // 8,
            insns=ct.addressof(insns),
            license=ct.addressof(license_),
        )
        os.close(_bpf_call(_BPF_PROG_LOAD, attr))
    except OSError as err:
        code = err.errno or 0
        hint = _BPF_FIX.get(code, "")
        return False, f"bpf() failed with {_errno_text(code)}" + (f": {hint}" if hint else "")
    return True, "created an array map and loaded a 2-instruction program through bpf()"


def probe_btf() -> tuple[bool, str]:
    try:
        with open(BTF_VMLINUX, "rb") as f:
            header = f.read(8)
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        return (
            False,
            f"cannot read {BTF_VMLINUX}: {_describe(err)} (kernel without CONFIG_DEBUG_INFO_BTF)",
        )
    magic, version = struct.unpack_from("<HB", header)
    if magic != 0xEB9F:
        return False, f"{BTF_VMLINUX} is not BTF (magic {magic:#x})"
    return True, f"{BTF_VMLINUX}: BTF v{version}, {size / 1e6:.1f} MB"


def probe_tracefs() -> tuple[bool, str]:
    root = tracefs_root()
    if root is None:
        return False, "tracefs is not mounted: mount -t tracefs none /sys/kernel/tracing"
    syscalls = root / "events" / "syscalls"
    if not syscalls.is_dir():
        return False, f"{syscalls} missing (kernel without CONFIG_FTRACE_SYSCALLS)"
    count = sum(1 for entry in os.scandir(syscalls) if entry.name.startswith("sys_enter_"))
    return True, f"mounted at {root}; {count} syscall entry tracepoints"


# ---------------------------------------------------------------- bcc programs


def _bcc() -> Any:
    """bcc, imported late: it takes a while, and doctor must be able to say
    that it is missing instead of crashing on import."""
    import bcc

    return bcc


class _Kit:
    """The compiled probe programs, and the maps user space drives them with."""

    def __init__(self, bpf: Any) -> None:
        self.bcc = _bcc()
        self.bpf = bpf
        self.set(CFG_SELF_TGID, os.getpid())

    def load(self, fn_name: str, prog_type: int) -> Any:
        return self.bpf.load_func(fn_name.encode(), prog_type)

    def set(self, slot: int, value: int) -> None:
        self.bpf[b"config"][ct.c_int(slot)] = ct.c_uint32(value)

    def hits(self, slot: int) -> int:
        return int(self.bpf[b"hits"][ct.c_int(slot)].value)

    @contextlib.contextmanager
    def tracepoint(self, tp: str, fn_name: str) -> Iterator[None]:
        self.bpf.attach_tracepoint(tp=tp.encode(), fn_name=fn_name.encode())
        try:
            yield
        finally:
            self.bpf.detach_tracepoint(tp.encode())

    @contextlib.contextmanager
    def raw_tracepoint(self, event: str, fn_name: str) -> Iterator[None]:
        self.bpf.attach_raw_tracepoint(tp=event.encode(), fn_name=fn_name.encode())
        try:
            yield
        finally:
            self.bpf.detach_raw_tracepoint(tp=event.encode())

    def close(self) -> None:
        # Every probe detached its own programs; what is left (fds, the
        # module) goes with the process anyway, so a failure here is not news.
        with quiet_stderr(), contextlib.suppress(Exception):
            self.bpf.cleanup()


def _manual_bpf_class() -> type:
    """bcc's BPF, minus the attach-at-compile of kfunc__/lsm__ functions: that
    raises for the whole module when fentry or LSM is missing, and the doctor
    must report each one on its own row."""
    bcc = _bcc()

    class ManualBPF(bcc.BPF):
        def _trace_autoload(self) -> None:
            pass

    return ManualBPF


def _headers_dir() -> Path:
    return Path("/lib/modules") / platform.release() / "build"


def compile_probes() -> tuple[_Kit | None, ProbeResult]:
    """Compile bpf/probes.bpf.c once."""
    try:
        bpf_class = _manual_bpf_class()
    except ImportError as err:
        return None, _result(
            "bcc", False, f"cannot import bcc ({err}): apt-get install python3-bpfcc"
        )
    start = time.monotonic()
    with quiet_stderr():
        try:
            bpf = bpf_class(text=PROBES_C.read_bytes(), cflags=[f"-I{BPF_DIR}"])
        except Exception:  # bcc raises bare Exception for compile/load failures
            return None, _result("bcc", False, _compile_failure_why())
    took = time.monotonic() - start
    detail = f"compiled {PROBES_C.name} in {took:.2f} s against {_headers_dir().resolve()}"
    return _Kit(bpf), _result("bcc", True, detail)


def _compile_failure_why() -> str:
    headers = _headers_dir()
    if not (headers / "include").exists():
        return f"no kernel headers at {headers}: run 'make setup' (links Debian's headers)"
    if tracefs_root() is None:
        # bcc builds tracepoint argument structs from tracefs format files.
        return "tracepoint formats unreadable: mount -t tracefs none /sys/kernel/tracing"
    return f"clang/bcc could not compile {PROBES_C} against {headers.resolve()}"


_TRIGGERS = 5


def probe_syscall_tracepoints(kit: _Kit) -> tuple[bool, str]:
    with kit.tracepoint("syscalls:sys_enter_getppid", "count_syscall"):
        for _ in range(_TRIGGERS):
            os.getppid()
    seen = kit.hits(HIT_SYSCALL)
    detail = (
        f"syscalls:sys_enter_getppid counted {seen} of {_TRIGGERS} getppid() calls "
        f"from pid {os.getpid()}"
    )
    return seen >= _TRIGGERS, detail


def probe_sock_tracepoints(kit: _Kit) -> tuple[bool, str]:
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        kit.set(CFG_TCP_PORT, port)
        with contextlib.ExitStack() as attached:
            attached.enter_context(kit.tracepoint("sock:inet_sock_set_state", "sock_state"))
            for event, fn_name in (("sock_send_length", "sock_send"),
                                   ("sock_recv_length", "sock_recv")):
                attached.enter_context(kit.raw_tracepoint(event, fn_name))
            client = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=2))
            accepted, _ = server.accept()
            stack.enter_context(accepted)
            client.sendall(b"ping")
            accepted.recv(4)
            client.close()
            accepted.close()
    seen = kit.hits(HIT_SOCK)
    sent, received = kit.hits(HIT_SOCK_SEND), kit.hits(HIT_SOCK_RECV)
    # A connect alone is CLOSE->SYN_SENT->ESTABLISHED on the client side.
    detail = (
        f"sock:inet_sock_set_state saw {seen} TCP state changes of a connect to "
        f"127.0.0.1:{port}; sock_send_length/sock_recv_length saw {sent}/{received} of 1/1"
    )
    return seen >= 2 and sent >= 1 and received >= 1, detail


_RECORD_SLOTS_C = r"""
/* the tracer's record rings (bpf/trace.bpf.c), in miniature: a program
 * claims a slot with a compare-and-swap on the head and commits it with a
 * store; user space reads the array through mmap */
struct ring { u64 head; u64 seq; u64 tgid; u64 cookie; };
BPF_F_TABLE("array", u32, struct ring, ring, 1, 1024 /* BPF_F_MMAPABLE */);
TRACEPOINT_PROBE(syscalls, sys_enter_getpgid) {
    u64 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid != SELF_TGID) return 0;
    u32 zero = 0;
    struct ring *r = ring.lookup(&zero);
    if (!r) return 0;
    u64 head = *(volatile u64 *)&r->head;
    if (__sync_val_compare_and_swap(&r->head, head, head + 1) != head) return 0;
    r->tgid = tgid;
    r->cookie = COOKIE;
    *(volatile u64 *)&r->seq = head + 1;
    return 0;
}
"""


def probe_record_slots() -> tuple[bool, str]:
    """Compiled on its own, so that a kernel without mmapable arrays or BPF
    atomics fails this row only."""
    cookie = secrets.randbits(62) | 1
    try:
        with quiet_stderr():
            bpf = _bcc().BPF(text=_RECORD_SLOTS_C,
                             cflags=[f"-DSELF_TGID={os.getpid()}", f"-DCOOKIE={cookie}ULL"])
    except Exception as err:  # bcc raises bare Exception on compile/load/attach
        return False, f"a program claiming an mmapable array slot did not load: {_describe(err)}"
    try:
        try:
            mapped = mmap.mmap(bpf[b"ring"].map_fd, mmap.PAGESIZE, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as err:
            return False, f"mmap of a BPF_F_MMAPABLE array failed ({err.strerror})"
        with mapped:
            for _ in range(_TRIGGERS):
                os.getpgid(0)
            head, seq, tgid, got = struct.unpack_from("<QQQQ", mapped, 0)
    finally:
        with quiet_stderr(), contextlib.suppress(Exception):
            bpf.cleanup()
    ok = head == seq == _TRIGGERS and tgid == os.getpid() and got == cookie
    return ok, (f"{_TRIGGERS} getpgid() calls claimed {head} slot(s), committed up to {seq}, "
                f"read back through mmap {'with' if got == cookie else 'without'} our cookie")


_TASK_STORAGE_C = r"""
struct val { u64 pid; };
BPF_TASK_STORAGE(store, struct val);
BPF_ARRAY(seen, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getsid) {
    u64 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != SELF_TGID) return 0;
    struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
    struct val *v = store.task_storage_get(t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (v) v->pid = pid;
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_getsid) {
    struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
    struct val *v = store.task_storage_get(t, 0, 0);
    if (!v || v->pid != SELF_TGID) return 0;
    v->pid = 0;
    int k = 0;
    u64 *n = seen.lookup(&k);
    if (n) (*n)++;
    return 0;
}
"""


def probe_task_storage() -> tuple[bool, str]:
    """Compiled on its own, so that a kernel without it fails this row only."""
    try:
        with quiet_stderr():
            bpf = _bcc().BPF(text=_TASK_STORAGE_C, cflags=[f"-DSELF_TGID={os.getpid()}"])
    except Exception as err:  # bcc raises bare Exception on compile/load/attach
        return False, f"a BPF_TASK_STORAGE program did not load: {_describe(err)}"
    try:
        for _ in range(_TRIGGERS):
            os.getsid(0)
        seen = int(bpf[b"seen"][ct.c_int(0)].value)
    finally:
        with quiet_stderr(), contextlib.suppress(Exception):
            bpf.cleanup()
    detail = (f"a value stored at sys_enter_getsid was read back at sys_exit in "
              f"{seen} of {_TRIGGERS} calls")
    return seen >= _TRIGGERS, detail


def _fork(body: Callable[[], int]) -> int:
    """Fork a child that runs body and exits with its code. The child never
    returns into the caller's code, whatever happens."""
    pid = os.fork()
    if pid == 0:
        code = 250
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


def _reap(pid: int, timeout: float) -> int | None:
    """The child's wait status, or None after SIGKILLing it at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _yield_after_go(go_read: int, go_write: int) -> int:
    # Without the write end, the child sees EOF (and ends) if the doctor dies.
    os.close(go_write)
    os.read(go_read, 1)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        os.sched_yield()
    return 0


def probe_cgroup_sock(kit: _Kit) -> tuple[bool, str]:
    root = cgroup2_root()
    if root is None:
        return False, "cgroup v2 is not mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
    bcc = kit.bcc
    hooks = [(b"sock_create", bcc.BPF.CGROUP_SOCK, bcc.BPFAttachType.CGROUP_INET_SOCK_CREATE),
             (b"udp_source", bcc.BPF.CGROUP_SOCK_ADDR, bcc.BPFAttachType.CGROUP_UDP4_RECVMSG),
             (b"sock_release", bcc.BPF.CGROUP_SOCK, bcc.BPFAttachType.CGROUP_INET_SOCK_RELEASE)]
    links: list[int] = []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, prog_type, attach_type in hooks:
            fn = kit.bpf.load_func(name, prog_type, attach_type=attach_type)
            try:
                links.append(link_to_cgroup(fn.fd, fd, attach_type))
            except OSError as err:
                return False, f"linking {name.decode()} to {root} failed: {_describe(err)}"
        _udp_exchange(kit)
    finally:
        for link in links:
            os.close(link)
        os.close(fd)
    created, sources, released = (kit.hits(h) for h in
                                  (HIT_SOCK_CREATE, HIT_UDP_SOURCE, HIT_SOCK_RELEASE))
    detail = (f"programs linked to {root} saw {created} of 2 UDP socket() calls, the "
              f"sender's port in {sources} of {_TRIGGERS} recvfrom() calls, and {released} "
              "of 2 last closes")
    return created >= 2 and sources >= _TRIGGERS and released >= 2, detail


def _udp_exchange(kit: _Kit) -> None:
    """Two UDP sockets: _TRIGGERS datagrams from one to the other, then both closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2.0)  # a lost datagram must not hang the doctor
        tx.bind(("127.0.0.1", 0))
        kit.set(CFG_UDP_PORT, tx.getsockname()[1])
        for _ in range(_TRIGGERS):
            tx.sendto(b"ldfi-doctor", rx.getsockname())
            rx.recvfrom(64)


def probe_send_signal(kit: _Kit) -> tuple[bool, str]:
    go_read, go_write = os.pipe()
    child = _fork(lambda: _yield_after_go(go_read, go_write))
    os.close(go_read)
    reaped = False
    try:
        kit.set(CFG_VICTIM_TGID, child)
        with kit.tracepoint("syscalls:sys_enter_sched_yield", "kill_victim"):
            start = time.monotonic()
            os.write(go_write, b"x")
            status = _reap(child, timeout=4.0)
            reaped = True
            took_ms = (time.monotonic() - start) * 1e3
    finally:
        os.close(go_write)
        kit.set(CFG_VICTIM_TGID, 0)
        if not reaped:
            _reap(child, timeout=0)
    if status is None:
        return False, f"child {child} kept calling sched_yield() for 4 s; no signal arrived"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
        return (
            True,
            f"child {child} calling sched_yield() was SIGKILLed by the program ({took_ms:.0f} ms)",
        )
    return False, f"child {child} ended with wait status {status:#x}, not SIGKILL"


# ---------------------------------------------------------------- network


# The last /24 of the sandbox range (198.18.0.0/15), kept out of the run slots.
_ADDR_A, _ADDR_B, _PREFIX = "198.19.255.1", "198.19.255.2", 30
_VETH_A, _VETH_B = "ldfi-doc-a", "ldfi-doc-b"


@dataclass
class VethPair:
    """Two throwaway network namespaces joined by a veth; a's end is index_a."""

    ns_a: str
    ns_b: str
    index_a: int = 0
    leftovers: list[str] = field(default_factory=list)


def ping(ns: str, addr: str, wait: float) -> bool:
    """One ping from inside ns; True when it got a reply within wait seconds."""
    cmd = ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", "1", "-W", f"{wait:g}", addr]
    done = subprocess.run(cmd, capture_output=True, timeout=wait + 5, check=False)
    return done.returncode == 0


def _remove_netns(name: str) -> None:
    from pyroute2 import netns

    if name in netns.listnetns():
        netns.remove(name)


def _set_up_end(ns: str, ifname: str, address: str) -> int:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.addr("add", index=index, address=address, prefixlen=_PREFIX)
        ipr.link("set", index=index, state="up")
    return index


@contextlib.contextmanager
def veth_pair(pair: VethPair) -> Iterator[VethPair]:
    """Create pair's two namespaces joined by a veth, and remove both on every
    exit path (removing a namespace deletes its end of the veth too). What
    could not be removed goes to pair.leftovers for the caller to report."""
    from pyroute2 import IPRoute, netns

    try:
        netns.create(pair.ns_a)
        netns.create(pair.ns_b)
        with IPRoute(netns=pair.ns_a) as ipr:
            ipr.link(
                "add",
                ifname=_VETH_A,
                kind="veth",
                peer={"ifname": _VETH_B, "net_ns_fd": pair.ns_b},
            )
        pair.index_a = _set_up_end(pair.ns_a, _VETH_A, _ADDR_A)
        _set_up_end(pair.ns_b, _VETH_B, _ADDR_B)
        yield pair
    finally:
        for ns in (pair.ns_a, pair.ns_b):
            try:
                _remove_netns(ns)
            except Exception as err:
                pair.leftovers.append(f"{ns} ({_describe(err)})")


def probe_netns(pair: VethPair) -> tuple[bool, str]:
    if not ping(pair.ns_a, _ADDR_B, wait=2):
        return False, f"created {pair.ns_a} and {pair.ns_b} but ping {_ADDR_A} -> {_ADDR_B} failed"
    return True, f"created {pair.ns_a} + {pair.ns_b} joined by a veth; ping across works"


_EGRESS = "ffff:fff3"


def probe_tc(kit: _Kit, pair: VethPair) -> tuple[bool, str]:
    from pyroute2 import IPRoute

    fn = kit.load("tc_drop", kit.bcc.BPF.SCHED_CLS)
    with IPRoute(netns=pair.ns_a) as ipr:
        ipr.tc("add", "clsact", pair.index_a)
        try:
            ipr.tc(
                "add-filter",
                "bpf",
                pair.index_a,
                ":1",
                fd=fn.fd,
                name=fn.name.decode(),
                parent=_EGRESS,
                classid=1,
                direct_action=True,
            )
            # A short wait is enough: the drop counter, not the timeout, is the evidence.
            replied_while_attached = ping(pair.ns_a, _ADDR_B, wait=0.3)
        finally:
            ipr.tc("del", "clsact", pair.index_a)
    drops = kit.hits(HIT_TC_DROP)
    replied_after = ping(pair.ns_a, _ADDR_B, wait=2)
    detail = (
        f"ping {_ADDR_A} -> {_ADDR_B} with the egress drop program attached: "
        f"{'replied' if replied_while_attached else 'lost'} ({drops} packets dropped); "
        f"after detach: {'replied' if replied_after else 'lost'}"
    )
    return (not replied_while_attached and drops > 0 and replied_after), detail


# ---------------------------------------------------------------- cgroup


_UDP_TARGET = ("127.0.0.1", 9)  # discard port: nothing needs to listen
_JOIN_FAILED = 200


def _send_udp_from(cgroup: Path) -> int:
    """In a forked child: join cgroup, then sendto; exit 0 or the errno."""

    def body() -> int:
        try:
            (cgroup / "cgroup.procs").write_text("0")
        except OSError:
            return _JOIN_FAILED
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"ldfi-doctor", _UDP_TARGET)
            except OSError as err:
                return err.errno or 255
        return 0

    status = _reap(_fork(body), timeout=3.0)
    if status is None or not os.WIFEXITED(status):
        return -1
    return os.WEXITSTATUS(status)


def _rmdir(path: Path) -> None:
    """rmdir a cgroup; right after its last process is reaped it can still be
    busy for a moment."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
            time.sleep(0.02)
    path.rmdir()


def _send_outcome(code: int) -> str:
    if code == 0:
        return "sent"
    if code == _JOIN_FAILED:
        return "could not join the cgroup"
    if code < 0:
        return "child did not finish"
    return errno.errorcode.get(code, f"errno {code}")


def probe_cgroup_skb(kit: _Kit, name: str) -> tuple[bool, str]:
    root = cgroup2_root()
    if root is None:
        return False, "cgroup v2 is not mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
    bpf_class = kit.bcc.BPF
    egress = kit.bcc.BPFAttachType.CGROUP_INET_EGRESS
    fn = kit.load("cgroup_drop", bpf_class.CGROUP_SKB)
    cgroup = root / name
    cgroup.mkdir()
    try:
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            bpf_class.attach_func(fn, fd, egress)
            try:
                attached = _send_udp_from(cgroup)
            finally:
                bpf_class.detach_func(fn, fd, egress)
            detached = _send_udp_from(cgroup)
        finally:
            os.close(fd)
    finally:
        _rmdir(cgroup)
    drops = kit.hits(HIT_CGROUP_DROP)
    detail = (
        f"UDP sendto from a process in {cgroup}: with the egress drop program "
        f"{_send_outcome(attached)} ({drops} dropped); after detach {_send_outcome(detached)}"
    )
    return attached == errno.EPERM and drops > 0 and detached == 0, detail


# ---------------------------------------------------------------- optional extras


def _load_error(what: str) -> str:
    """bcc reports EPERM as 'Need super-user privileges', even for root; the
    errno it saw is still in ctypes' copy, and is the honest answer."""
    code = ct.get_errno()
    return f"loading {what} failed: {_errno_text(code) if code else 'unknown error'}"


def _fires(kit: _Kit, slot: int, trigger: Callable[[], object], label: str) -> tuple[bool, str]:
    for _ in range(_TRIGGERS):
        trigger()
    seen = kit.hits(slot)
    return seen >= _TRIGGERS, f"{label}: counted {seen} of {_TRIGGERS} calls"


def _kprobe_absent_why(tracefs: Path | None) -> str:
    pmu = Path("/sys/bus/event_source/devices/kprobe").exists()
    events = tracefs is not None and (tracefs / "kprobe_events").exists()
    if not pmu and not events:
        return "no kprobe PMU and no kprobe_events in tracefs: kernel built without CONFIG_KPROBES"
    return "the kernel refused the kprobe"


def probe_kprobes(kit: _Kit) -> tuple[bool, str]:
    event = kit.bpf.get_syscall_fnname(b"getppid")
    try:
        kit.bpf.attach_kprobe(event=event, fn_name=b"on_kprobe")
    except Exception:
        why = _kprobe_absent_why(tracefs_root())
        return False, f"attaching a kprobe to {event.decode()} failed: {why}"
    try:
        return _fires(kit, HIT_KPROBE, os.getppid, f"kprobe on {event.decode()}")
    finally:
        kit.bpf.detach_kprobe(event)


_FENTRY_TARGET = "__do_sys_getppid"


def probe_fentry(kit: _Kit) -> tuple[bool, str]:
    # No bcc.BPF.support_kfunc() shortcut: it checks symbols, and says yes on
    # kernels that refuse the load (and no on arm64, which has trampolines).
    try:
        kit.load(f"kfunc__{_FENTRY_TARGET}", kit.bcc.BPF.TRACING)
    except Exception:
        return False, _load_error(f"a fentry program on {_FENTRY_TARGET}")
    kit.bpf.attach_kfunc(fn_name=_FENTRY_TARGET.encode())
    try:
        return _fires(kit, HIT_FENTRY, os.getppid, f"fentry on {_FENTRY_TARGET}")
    finally:
        kit.bpf.detach_kfunc(fn_name=_FENTRY_TARGET.encode())


def probe_lsm(kit: _Kit) -> tuple[bool, str]:
    bpf_class = kit.bcc.BPF
    try:
        kit.load("lsm__task_getsid", bpf_class.LSM)
    except Exception:
        return False, _load_error("an LSM program on task_getsid")
    kit.bpf.attach_lsm(fn_name=b"task_getsid")
    try:
        ok, detail = _fires(kit, HIT_LSM, lambda: os.getsid(os.getpid()), "LSM task_getsid")
    finally:
        kit.bpf.detach_lsm(fn_name=b"task_getsid")
    if not ok:
        detail += " (attached but not run: is 'bpf' in the lsm= boot parameter?)"
    return ok, detail


# ---------------------------------------------------------------- all together


_BPF_PROBES: list[tuple[str, Callable[[_Kit], tuple[bool, str]]]] = [
    ("syscall_tracepoints", probe_syscall_tracepoints),
    ("sock_tracepoints", probe_sock_tracepoints),
    ("cgroup_sock", probe_cgroup_sock),
    ("send_signal", probe_send_signal),
]
_OPTIONAL_PROBES: list[tuple[str, Callable[[_Kit], tuple[bool, str]]]] = [
    ("kprobes", probe_kprobes),
    ("fentry", probe_fentry),
    ("bpf_lsm", probe_lsm),
]


def _network_probes(kit: _Kit | None, no_kit_because: str) -> list[ProbeResult]:
    prefix = f"ldfi-doctor-{os.getpid()}"
    pair = VethPair(f"{prefix}-a", f"{prefix}-b")
    net: ProbeResult | None = None
    tc: ProbeResult | None = None
    try:
        with veth_pair(pair):
            net = _run("netns_veth", probe_netns, pair)
            if kit is None:
                tc = _not_tried("tc_clsact", no_kit_because)
            elif not net.ok:
                tc = _not_tried("tc_clsact", "no working namespace pair to test in")
            else:
                tc = _run("tc_clsact", probe_tc, kit, pair)
    except Exception as err:
        net = _result("netns_veth", False, f"creating {prefix}-a/-b failed: {_describe(err)}")
        tc = _not_tried("tc_clsact", "could not create a namespace pair to test in")
    if pair.leftovers:
        net = _result("netns_veth", False, f"could not remove {', '.join(pair.leftovers)}")
    assert net is not None and tc is not None
    return [net, tc]


def _bpf_probes(kit: _Kit | None, because: str) -> list[ProbeResult]:
    if kit is None:
        return [_not_tried(name, because) for name, _ in _BPF_PROBES]
    return [_run(name, probe, kit) for name, probe in _BPF_PROBES]


def _cgroup_probe(kit: _Kit | None, because: str) -> ProbeResult:
    if kit is None:
        return _not_tried("cgroup_skb", because)
    return _run("cgroup_skb", probe_cgroup_skb, kit, f"ldfi-doctor-{os.getpid()}")


def _optional_probes(kit: _Kit | None, because: str) -> list[ProbeResult]:
    if kit is None:
        return [_not_tried(name, because) for name, _ in _OPTIONAL_PROBES]
    return [_run(name, probe, kit) for name, probe in _OPTIONAL_PROBES]


def run_probes() -> list[ProbeResult]:
    """Every probe, in the order SPECS lists them."""
    with _interrupts_deferred():
        results = _all_probes()
    order = list(SPECS)
    return sorted(results, key=lambda r: order.index(r.name))


def _all_probes() -> list[ProbeResult]:
    results = [_run("root", probe_root), _run("bpf_syscall", probe_bpf_syscall)]
    kit: _Kit | None = None
    if results[-1].ok:
        kit, compiled = compile_probes()
        because = "bcc could not compile the probe programs (see 'bcc + kernel headers')"
    else:
        compiled = _not_tried("bcc", "the bpf() syscall is unusable")
        because = "the bpf() syscall is unusable"
    results += [compiled, _run("btf", probe_btf), _run("tracefs", probe_tracefs)]
    if kit is None:
        results += [_not_tried(name, because) for name in ("record_slots", "task_storage")]
    else:
        results += [_run("record_slots", probe_record_slots),
                    _run("task_storage", probe_task_storage)]
    try:
        results += _bpf_probes(kit, because)
        results += _network_probes(kit, because)
        results.append(_cgroup_probe(kit, because))
        results += _optional_probes(kit, because)
    finally:
        if kit is not None:
            kit.close()
    return results
