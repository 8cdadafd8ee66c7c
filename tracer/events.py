"""Decoded trace events: what the tracer hands to the rest of the engine.

One flat record type, because every consumer (happens-before matching,
protobuf export, reports) reads a handful of fields and filters on `kind`.
Times are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
"""

from __future__ import annotations

from dataclasses import dataclass

# kind
SOCK = "sock"  # one socket system call (or one message of sendmmsg/recvmmsg)
FORK = "fork"  # a process or thread was created
EXEC = "exec"
EXIT = "exit"
TCP_STATE = "tcp_state"  # sock:inet_sock_set_state
FAULT = "fault"  # an armed fault fired here (bpf/faults.bpf.c)

SEND_CALLS = frozenset({"write", "writev", "sendto", "sendmsg", "sendmmsg", "sendfile", "splice",
                        "send_other"})
RECV_CALLS = frozenset({"read", "readv", "recvfrom", "recvmsg", "recvmmsg", "recv_other"})
# sends recorded once their bytes had left, from the socket layer alone: no
# payload captured, and no fault trigger can fire at them (bpf/trace.bpf.c)
UNSEEN_SENDS = frozenset({"sendfile", "splice", "send_other"})

MSG_PEEK = 0x2


@dataclass(slots=True)
class Event:
    seq: int  # position in the trace (by record time: the per-CPU rings merged)
    kind: str
    ts: int  # ns, when recorded (in the socket layer after the I/O; at a hook; at exit)
    pid: int  # tgid
    tid: int
    comm: str
    node: str  # node name from the cgroup ("client" for workload/check, "" unknown)
    cgroup: int = 0
    netns: int = 0
    # -- sock ------------------------------------------------------------
    syscall: str = ""  # socket, bind, listen, connect, accept (inferred), read, write, ...
    ts_enter: int = 0  # ns, at syscall entry; = ts for calls recorded without it (exit_only)
    exit_only: bool = False  # no entry program saw it: recorded at exit or in the socket layer
    fd: int = -1  # the fd argument (accept: the listening fd; the new fd is ret)
    ret: int = 0  # return value (-errno on failure); for one mmsg message: its length;
    # tcp_state: the sock's pending error then (-errno, 0 if none)
    count: int = 0  # bytes asked for (len), or vlen/backlog/how/type, per syscall
    sk: int = 0  # kernel sock address: a socket's identity while it lives
    proto: str = ""  # "tcp" | "udp" | ""
    family: int = 0  # 4 or 6 (0: unknown)
    laddr: str = ""
    lport: int = 0
    raddr: str = ""
    rport: int = 0
    state: int = 0  # TCP state when recorded (listen, connect: the one before their change)
    msg_flags: int = 0
    seq_w: int | None = None  # TCP: write_seq at exit: a send covers [seq_w - ret, seq_w)
    seq_r: int | None = None  # TCP: copied_seq at exit: a recv covers [seq_r - ret, seq_r)
    msg_idx: int = 0  # sendmmsg/recvmmsg: which message of the call
    payload: bytes = b""  # the first N bytes (N = the tracer's snoop length)
    raddr_from_arg: bool = False  # remote endpoint from the sockaddr argument (UDP sendto)
    inferred: bool = False  # not recorded but rebuilt from later records (accept: lifecycle.py)
    # -- fork / exec / exit -----------------------------------------------
    ppid: int = 0  # fork: parent tgid
    child_pid: int = 0
    child_tid: int = 0
    is_thread: bool = False  # fork: CLONE_THREAD
    exit_code: int = 0  # exit: wait status
    filename: str = ""  # exec
    # -- tcp_state ----------------------------------------------------------
    old_state: int = 0
    new_state: int = 0
    # -- fault (also uses sk, ts_enter: the triggering send's, and seq_w) -----
    fault_slot: int = -1  # index of the fault in the run's plan
    fault_action: int = 0  # FA_* of bpf/faults.h

    @property
    def ok(self) -> bool:
        return self.ret >= 0

    @property
    def is_send(self) -> bool:
        return self.kind == SOCK and self.syscall in SEND_CALLS and self.ret > 0

    @property
    def is_recv(self) -> bool:
        return (self.kind == SOCK and self.syscall in RECV_CALLS and self.ret > 0
                and not self.msg_flags & MSG_PEEK)

    @property
    def is_peek(self) -> bool:
        """A receive with MSG_PEEK that returned bytes: it saw them without taking them."""
        return (self.kind == SOCK and self.syscall in RECV_CALLS and self.ret > 0
                and bool(self.msg_flags & MSG_PEEK))
