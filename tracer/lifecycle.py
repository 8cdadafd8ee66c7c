"""Finish the socket life-cycle records that the kernel side could not.

The tracer attaches no syscall tracepoint (bpf/trace.bpf.c, "socket life
cycle": any one of them puts every system call of the host on the slow
path). Its cgroup hooks and TCP state changes see socket, bind, listen,
connect, shutdown and close in the calling task, but some facts only come
later, and accept is seen by nothing at all:

- socket: the new fd is installed after the hook ran. It is the fd of the
  sock's next record in the same process.
- connect: the local port is chosen after the record (TCP: after SYN_SENT;
  UDP: inside the connect). It, and a wildcard local address, come from the
  sock's next record that has them. A TCP connect whose sock went from
  SYN_SENT to CLOSE without reaching ESTABLISHED failed, with the error the
  sock held then (the state change records it).
- accept: a TCP sock that went SYN_RECV -> ESTABLISHED was accepted. Its
  accept is put right before the sock's first record in a process (the
  accepted fd's first use), marked `inferred`; its fd is the one that
  listened on that port in that network namespace, if a traced task did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from tracer.events import SOCK, TCP_STATE, Event

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE = 1, 2, 3, 7


def complete(events: list[Event]) -> list[Event]:
    """`events` (in record order) with socket fds, connect ports and errors
    filled in and the accepts put in; renumbered."""
    _fill_socket_fds(events)
    _fill_connects(events)
    out = list(_with_accepts(events))
    for seq, e in enumerate(out):
        e.seq = seq
    return out


def _later_by_sock(events: list[Event]) -> dict[int, list[Event]]:
    by_sock: dict[int, list[Event]] = {}
    for e in events:
        if e.sk and e.kind in (SOCK, TCP_STATE):
            by_sock.setdefault(e.sk, []).append(e)
    return by_sock


def _after(chain: list[Event], e: Event) -> Iterable[Event]:
    """The records of e's sock after e, up to the next socket() of that
    address (a freed sock's address can be a new sock's)."""
    start = next(i for i, x in enumerate(chain) if x is e)
    for later in chain[start + 1:]:
        if later.kind == SOCK and later.syscall == "socket":
            return
        yield later


def _fill_socket_fds(events: list[Event]) -> None:
    by_sock = _later_by_sock(events)
    for e in events:
        if e.kind == SOCK and e.syscall == "socket" and e.ret < 0 and e.sk:
            fd = next((x.fd for x in _after(by_sock[e.sk], e)
                       if x.kind == SOCK and x.pid == e.pid and x.fd >= 0), None)
            if fd is not None:
                e.ret = fd


def _fill_connects(events: list[Event]) -> None:
    by_sock = _later_by_sock(events)
    for e in events:
        if e.kind != SOCK or e.syscall != "connect" or not e.sk:
            continue
        later = list(_after(by_sock[e.sk], e))
        if not e.lport:
            port = next((x for x in later if x.lport), None)
            if port is not None:
                e.lport = port.lport
                if e.laddr in ("", "0.0.0.0", "::"):
                    e.laddr = port.laddr
        if e.proto == "tcp":
            e.ret = _connect_result(later)


def _connect_result(later: list[Event]) -> int:
    """0, or -errno when the attempt ended in CLOSE before ESTABLISHED."""
    for x in later:
        if x.kind != TCP_STATE:
            continue
        if x.new_state == TCP_ESTABLISHED:
            return 0
        if x.new_state == TCP_CLOSE:
            return x.ret
    return 0


def _with_accepts(events: list[Event]) -> Iterable[Event]:
    listening: dict[tuple[int, int], int] = {}  # (netns, port) -> listening fd
    accepted: dict[int, Event] = {}  # sk -> its SYN_RECV -> ESTABLISHED change, not yet used
    for e in events:
        if e.kind == TCP_STATE and e.old_state == TCP_SYN_RECV \
                and e.new_state == TCP_ESTABLISHED:
            accepted[e.sk] = e
        elif e.kind == SOCK and e.sk in accepted and e.proto == "tcp" and e.fd >= 0:
            yield _accept(e, accepted.pop(e.sk), listening)
        if e.kind == SOCK and e.syscall == "listen":
            listening[(e.netns, e.lport)] = e.fd
        yield e


def _accept(first_use: Event, established: Event,
            listening: dict[tuple[int, int], int]) -> Event:
    e = first_use
    listener = listening.get((e.netns, established.lport), -1)
    return dataclasses.replace(
        e, syscall="accept", fd=listener, ret=e.fd, count=0, msg_flags=0, msg_idx=0,
        payload=b"", seq_w=None, seq_r=None, raddr_from_arg=False, inferred=True,
        ts=e.ts_enter, exit_only=True, laddr=established.laddr, lport=established.lport,
        raddr=established.raddr, rport=established.rport)
