"""tracer/lifecycle.py: what the hooks could not see, filled in after the run.
Pure logic on hand-made events; tests/test_tracer.py runs it on real ones."""

from __future__ import annotations

from tracer.events import SOCK, TCP_STATE, Event
from tracer.lifecycle import complete

SERVER_SK, LISTEN_SK, CLIENT_SK = 0xA0, 0xB0, 0xC0


class Run:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def sock(self, syscall: str, sk: int, pid: int = 10, tid: int = 0, fd: int = -1,
             ret: int = 0, lport: int = 0, laddr: str = "10.0.0.1", **kw) -> Event:
        e = Event(seq=len(self.events), kind=SOCK, ts=len(self.events) * 10, pid=pid,
                  tid=tid or pid, comm="n", node="n", netns=7, syscall=syscall, fd=fd, ret=ret,
                  sk=sk, proto=kw.pop("proto", "tcp"), laddr=laddr, lport=lport, **kw)
        e.ts_enter = e.ts
        self.events.append(e)
        return e

    def state(self, sk: int, old: int, new: int, lport: int = 0, err: int = 0, **kw) -> Event:
        e = Event(seq=len(self.events), kind=TCP_STATE, ts=len(self.events) * 10, pid=0, tid=0,
                  comm="", node="", netns=7, sk=sk, proto="tcp", old_state=old, new_state=new,
                  lport=lport, ret=-err, **kw)
        self.events.append(e)
        return e


def test_socket_takes_the_fd_of_the_socks_next_record_in_its_process() -> None:
    run = Run()
    made = run.sock("socket", CLIENT_SK, ret=-1)
    run.sock("connect", CLIENT_SK, pid=99, fd=8)  # another process: not this socket()'s fd
    run.sock("write", CLIENT_SK, fd=5, ret=3)
    complete(run.events)
    assert made.ret == 5


def test_a_socket_never_used_keeps_an_unknown_fd() -> None:
    run = Run()
    made = run.sock("socket", CLIENT_SK, ret=-1)
    run.sock("socket", CLIENT_SK, ret=-1)  # the address reused by a new sock: not ours
    run.sock("close", CLIENT_SK, fd=4)
    complete(run.events)
    assert made.ret == -1


def test_connect_takes_its_local_port_and_result_from_the_socks_later_records() -> None:
    run = Run()
    ok = run.sock("connect", CLIENT_SK, fd=3, laddr="0.0.0.0", rport=80)
    run.state(CLIENT_SK, 7, 2)
    run.state(CLIENT_SK, 2, 1, lport=40000, laddr="10.0.0.1")
    refused = run.sock("connect", SERVER_SK, fd=4, rport=81)
    run.state(SERVER_SK, 7, 2, lport=40001)
    run.state(SERVER_SK, 2, 7, lport=40001, err=111)
    complete(run.events)
    assert (ok.lport, ok.laddr, ok.ret) == (40000, "10.0.0.1", 0)
    assert (refused.lport, refused.ret) == (40001, -111)


def test_udp_connect_keeps_result_zero() -> None:
    run = Run()
    udp = run.sock("connect", CLIENT_SK, fd=3, proto="udp")
    run.sock("close", CLIENT_SK, fd=3, proto="udp", lport=5000)
    complete(run.events)
    assert (udp.lport, udp.ret) == (5000, 0)


def test_accept_is_put_before_the_accepted_socks_first_use() -> None:
    run = Run()
    run.sock("listen", LISTEN_SK, fd=3, lport=80)
    run.sock("write", CLIENT_SK, pid=20, fd=6, ret=1)  # another sock meanwhile
    run.state(SERVER_SK, 3, 1, lport=80, raddr="10.0.0.2", rport=40000, laddr="10.0.0.1")
    other = run.sock("read", LISTEN_SK, tid=11, fd=9, ret=1)  # the server's thread, another sock
    first = run.sock("read", SERVER_SK, tid=12, fd=5, ret=4, lport=80)
    again = run.sock("write", SERVER_SK, tid=12, fd=5, ret=4, lport=80)
    out = complete(run.events)
    [acc] = [e for e in out if e.syscall == "accept"]
    assert out.index(acc) == out.index(first) - 1 and out.index(other) < out.index(acc)
    assert (acc.pid, acc.tid, acc.fd, acc.ret, acc.sk) == (10, 12, 3, 5, SERVER_SK)
    assert (acc.lport, acc.raddr, acc.rport) == (80, "10.0.0.2", 40000)
    assert acc.inferred and acc.payload == b"" and acc.seq_w is None
    assert [e.seq for e in out] == list(range(len(out)))
    assert again.syscall == "write" and not again.inferred


def test_no_accept_without_a_passive_open_or_a_use() -> None:
    run = Run()
    run.state(CLIENT_SK, 2, 1, lport=40000)  # an active open is no accept
    run.sock("write", CLIENT_SK, fd=3, ret=1)
    run.state(SERVER_SK, 3, 1, lport=80)  # accepted, never used by a traced task
    run.sock("close", SERVER_SK)  # released at exit: fd unknown
    out = complete(run.events)
    assert not [e for e in out if e.syscall == "accept"]


def test_an_accepted_sock_never_used_gives_no_accept_to_the_next_sock_at_its_address() -> None:
    """A connection left in the accept queue of a server that crashed: its
    sock is freed, and a new sock soon gets its address."""
    run = Run()
    run.state(SERVER_SK, 3, 1, lport=80, rport=40000)
    run.sock("socket", SERVER_SK, ret=-1)  # the restarted server's listener
    run.sock("bind", SERVER_SK, fd=3, lport=80)
    out = complete(run.events)
    assert not [e for e in out if e.syscall == "accept"]


def test_fills_stop_at_the_end_of_the_socks_life() -> None:
    run = Run()
    unused = run.sock("socket", CLIENT_SK, ret=-1)
    run.sock("close", CLIENT_SK, fd=3)  # released: the address is free again
    run.state(CLIENT_SK, 10, 3, lport=80)  # a listener's child gets it
    run.sock("read", CLIENT_SK, fd=7, ret=1)
    complete(run.events)
    assert unused.ret == 3  # its own close, not the child's read
