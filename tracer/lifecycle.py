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
import itertools
from collections.abc import Iterable, Iterator

from tracer.events import SOCK, TCP_STATE, Event

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_CLOSE, TCP_LISTEN = 1, 2, 3, 7, 10
_WILDCARD = ("", "0.0.0.0", "::")


def complete(events: list[Event]) -> list[Event]:
    """`events` (in record order) with socket fds, connect ports and errors
    filled in and the accepts put in; renumbered."""
    chains = _chains(events)
    for e in events:
        if e.kind == SOCK and e.sk and e.syscall in ("socket", "connect"):
            _fill(e, _rest_of_life(chains[e.sk], e))
    out = list(_with_accepts(events))
    for seq, e in enumerate(out):
        e.seq = seq
    return out


def _chains(events: list[Event]) -> dict[int, tuple[list[Event], dict[int, int]]]:
    """Per sock address: its records in order, and where each one is."""
    chains: dict[int, tuple[list[Event], dict[int, int]]] = {}
    for e in events:
        if e.sk and e.kind in (SOCK, TCP_STATE):
            chain, where = chains.setdefault(e.sk, ([], {}))
            where[id(e)] = len(chain)
            chain.append(e)
    return chains


def _new_life(e: Event) -> bool:
    """A record that starts a new sock at an address (a freed sock's
    address is soon a new sock's): a socket(), or a child sock of a
    listener getting its SYN."""
    if e.kind == SOCK:
        return e.syscall == "socket"
    return e.old_state == TCP_LISTEN and e.new_state == TCP_SYN_RECV


def _rest_of_life(chain: tuple[list[Event], dict[int, int]], e: Event) -> Iterator[Event]:
    """The records of e's sock after e, until the sock's last close or a
    new sock at its address."""
    records, where = chain
    for later in itertools.islice(records, where[id(e)] + 1, None):
        if _new_life(later):
            return
        yield later
        if later.kind == SOCK and later.syscall == "close":
            return


def _fill(e: Event, later: Iterator[Event]) -> None:
    """socket(): the fd of the sock's next record in its process. connect():
    the local port (and a wildcard local address) from the next record
    that has one; for TCP, 0, or -errno when the attempt ended in CLOSE
    before ESTABLISHED. Stops reading as soon as it knows."""
    want_port = e.syscall == "connect" and (not e.lport or e.laddr in _WILDCARD)
    want_result = e.syscall == "connect" and e.proto == "tcp"
    for x in later:
        if e.syscall == "socket":
            if x.kind == SOCK and x.pid == e.pid and x.fd >= 0:
                e.ret = x.fd
                return
            continue
        if want_port and x.lport:
            e.lport = e.lport or x.lport
            if e.laddr in _WILDCARD and x.laddr not in _WILDCARD:
                e.laddr = x.laddr
            want_port = False
        if want_result and x.kind == TCP_STATE and x.new_state in (TCP_ESTABLISHED, TCP_CLOSE):
            e.ret = 0 if x.new_state == TCP_ESTABLISHED else x.ret
            want_result = False
        if not (want_port or want_result):
            return


def _with_accepts(events: list[Event]) -> Iterable[Event]:
    listening: dict[tuple[int, int], int] = {}  # (netns, port) -> listening fd
    accepted: dict[int, Event] = {}  # sk -> its SYN_RECV -> ESTABLISHED change, not yet used
    for e in events:
        if e.kind == TCP_STATE and e.old_state == TCP_SYN_RECV \
                and e.new_state == TCP_ESTABLISHED:
            accepted[e.sk] = e
        elif _new_life(e) or (e.kind == TCP_STATE and e.old_state == TCP_CLOSE):
            accepted.pop(e.sk, None)  # never used, freed, and its address taken again
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
