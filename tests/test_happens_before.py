"""Happens-before traces from hand-built event lists (ldfi.trace).

The builder `Run` writes events the way the eBPF tracer reports them: TCP
sends carry write_seq at exit, receives copied_seq at exit, in the sender's
sequence space. Every case asserts the exact messages and edges."""

from __future__ import annotations

import json
import time

import networkx as nx
import pytest

from ldfi.trace import (
    CycleError,
    Edge,
    MessageId,
    Topology,
    Trace,
    build_trace,
    concurrent,
    happens_before,
)
from ldfi.trace.wire import read_trace, trace_to_json, write_trace
from tracer.decode import H_FAULTS
from tracer.events import FAULT, FORK, SOCK, TCP_STATE, Event

ADDR = {"client": "198.18.0.1", "server": "198.18.0.2", "n2": "198.18.0.3"}
TOPO = Topology(addresses=dict(ADDR), cgroups={"client": 11, "server": 12, "n2": 13})
MOD = 1 << 32


class Run:
    """Builds one run's events. The offsets change everything a re-run changes
    (pids, tids, fds, ports, sk addresses, ISNs, times) and nothing else."""

    def __init__(self, *, off: int = 0, isn_off: int = 0, t0: int = 1_000_000) -> None:
        self.events: list[Event] = []
        self.off, self.isn_off, self.t = off, isn_off, t0 + off * 7919

    def add(self, node: str, tid: int, kind: str = SOCK, pid: int | None = None,
            **kw: object) -> int:
        self.t += 1000
        pid = tid if pid is None else pid
        seq = len(self.events)
        ts_enter = kw.pop("ts_enter", self.t if kw.get("exit_only") else self.t - 500)
        self.events.append(Event(seq=seq, kind=kind, ts=self.t, ts_enter=ts_enter,
                                 pid=pid + self.off, tid=tid + self.off, comm="p", node=node,
                                 **kw))  # type: ignore[arg-type]
        return seq

    def tcp(self, c: str, s: str, cport: int, sport: int = 80, *, ctid: int, stid: int,
            isn: tuple[int, int] = (1000, 900_000), sk: tuple[int, int] = (0xA0, 0xB0)
            ) -> Conn:
        return Conn(self, c, s, cport + self.off, sport + self.off, ctid, stid,
                    ((isn[0] + self.isn_off) % MOD, (isn[1] + 3 * self.isn_off) % MOD),
                    (sk[0] + self.off * 64, sk[1] + self.off * 64))

    def fork(self, node: str, tid: int, child: int, *, thread: bool, pid: int | None = None
             ) -> int:
        pid = tid if pid is None else pid
        return self.add(node, tid, FORK, pid=pid, ppid=pid + self.off,
                        child_pid=(pid if thread else child) + self.off,
                        child_tid=child + self.off, is_thread=thread)

    def udp_send(self, node: str, tid: int, lport: int, dst: str, dport: int, data: bytes, *,
                 sk: int = 0xC0, syscall: str = "sendto", exit_only: bool = False,
                 msg_idx: int = 0) -> int:
        return self.add(node, tid, syscall=syscall, proto="udp", family=4, fd=5 + self.off,
                        sk=sk + self.off, laddr="0.0.0.0", lport=lport + self.off,
                        raddr=ADDR[dst], rport=dport + self.off, ret=len(data),
                        count=len(data), payload=data, raddr_from_arg=True,
                        exit_only=exit_only, msg_idx=msg_idx)

    def udp_recv(self, node: str, tid: int, lport: int, src: str, sport: int, data: bytes, *,
                 laddr: str = "0.0.0.0", count: int = 2048) -> int:
        return self.add(node, tid, syscall="recvfrom", proto="udp", family=4, fd=6 + self.off,
                        sk=0xD0 + self.off, laddr=laddr, lport=lport + self.off,
                        raddr=ADDR[src], rport=sport + self.off, ret=len(data), count=count,
                        payload=data)

    def trace(self, **kw: object) -> Trace:
        trace = build_trace(self.events, TOPO, **kw)  # type: ignore[arg-type]
        assert nx.is_directed_acyclic_graph(trace.graph)
        return trace


class Conn:
    """One TCP connection: "c" is the connecting side, "s" the accepting side."""

    def __init__(self, run: Run, c: str, s: str, cport: int, sport: int, ctid: int, stid: int,
                 isn: tuple[int, int], sk: tuple[int, int]) -> None:
        self.run = run
        self.end = {"c": (c, ctid, ADDR[c], cport, ADDR[s], sport, sk[0]),
                    "s": (s, stid, ADDR[s], sport, ADDR[c], cport, sk[1])}
        # next sequence number each side writes, and has read up to
        self.wseq = {"c": (isn[0] + 1) % MOD, "s": (isn[1] + 1) % MOD}
        self.rseq = {"c": self.wseq["s"], "s": self.wseq["c"]}

    def _add(self, side: str, syscall: str, **kw: object) -> int:
        node, tid, la, lp, ra, rp, sk = self.end[side]
        kw.setdefault("fd", 4 + self.run.off)
        return self.run.add(node, tid, syscall=syscall, proto="tcp", family=4, sk=sk,
                            laddr=la, lport=lp, raddr=ra, rport=rp, **kw)

    def connect(self, ret: int = 0) -> int:
        return self._add("c", "connect", ret=ret)

    def accept(self) -> int:
        return self._add("s", "accept4", fd=3 + self.run.off, ret=4 + self.run.off)

    def send(self, side: str, data: bytes | int, syscall: str = "write", ret: int | None = None
             ) -> int:
        data = b"x" * data if isinstance(data, int) else data
        n = len(data) if ret is None else ret
        if n > 0:
            self.wseq[side] = (self.wseq[side] + n) % MOD
        return self._add(side, syscall, ret=n, count=len(data), payload=data[:64],
                         seq_w=self.wseq[side])

    def recv(self, side: str, n: int, syscall: str = "read", ask: int = 4096) -> int:
        if n > 0:
            self.rseq[side] = (self.rseq[side] + n) % MOD
        return self._add(side, syscall, ret=n, count=ask, seq_r=self.rseq[side])


def kinds(trace: Trace, kind: str) -> set[tuple[int, int]]:
    return {(e.src, e.dst) for e in trace.edges if e.kind == kind}


def received(trace: Trace) -> dict[str, tuple[int, ...]]:
    return {str(m.id): m.recv_seqs for m in trace.messages}


def request_response(run: Run) -> tuple[Trace, list[int]]:
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    seqs = [conn.connect(), conn.accept(), conn.send("c", b"GET /"), conn.recv("s", 5),
            conn.send("s", b"OK"), conn.recv("c", 2)]
    return run.trace(meta={"scenario": "rr", "run": "1"}), seqs


# ------------------------------------------------------------------ TCP ----

def test_request_response_over_tcp() -> None:
    trace, (co, ac, snd, rcv, rsnd, rrcv) = request_response(Run())
    assert received(trace) == {"client->server:tcp0#0": (rcv,),
                               "server->client:tcp0#0": (rrcv,)}
    assert set(trace.edges) == {
        Edge(co, snd, "program"), Edge(snd, rrcv, "program"),
        Edge(ac, rcv, "program"), Edge(rcv, rsnd, "program"),
        Edge(co, ac, "connect"), Edge(snd, rcv, "message"), Edge(rsnd, rrcv, "message"),
    }
    req = trace.message("client->server:tcp0#0")
    assert (req.src, req.dst, req.channel, req.ordinal, req.proto) == (
        "client", "server", "tcp0", 0, "tcp")
    assert (req.byte_start, req.byte_end, req.size, req.payload, req.delivered) == (
        0, 5, 5, b"GET /", True)
    assert [str(m.id) for m in trace.messages_from("server")] == ["server->client:tcp0#0"]
    assert [str(m.id) for m in trace.messages_to("server")] == ["client->server:tcp0#0"]
    assert trace.complete


def test_one_large_send_read_in_several_reads() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    snd = conn.send("c", 100)
    reads = [conn.recv("s", 30), conn.recv("s", 30), conn.recv("s", 40)]
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": tuple(reads)}
    assert kinds(trace, "message") == {(snd, r) for r in reads}


def test_several_sends_read_in_one_read() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    sends = [conn.send("c", 10) for _ in range(3)]
    rd = conn.recv("s", 30)
    trace = run.trace()
    assert received(trace) == {f"client->server:tcp0#{i}": (rd,) for i in range(3)}
    assert [(m.byte_start, m.byte_end) for m in trace.messages] == [(0, 10), (10, 20), (20, 30)]
    assert kinds(trace, "message") == {(s, rd) for s in sends}


def test_partial_overlaps() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    s0, s1 = conn.send("c", 10), conn.send("c", 10)
    r0, r1, r2 = conn.recv("s", 5), conn.recv("s", 10), conn.recv("s", 5)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (r0, r1),
                               "client->server:tcp0#1": (r1, r2)}
    assert kinds(trace, "message") == {(s0, r0), (s0, r1), (s1, r1), (s1, r2)}


def test_unread_bytes_are_undelivered() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    conn.send("c", 10), conn.send("c", 10)
    r0 = conn.recv("s", 10)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (r0,), "client->server:tcp0#1": ()}
    assert not trace.message("client->server:tcp0#1").delivered


def test_zero_length_and_failed_calls_make_no_messages() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    seqs = [conn.connect(), conn.accept(), conn.send("c", b"abc", ret=-11),
            conn.recv("s", -11), conn.send("c", b"", ret=0), conn.recv("s", 0)]
    trace = run.trace()
    assert trace.messages == []
    assert kinds(trace, "message") == set()
    co, ac, s_fail, r_fail, s_zero, r_eof = seqs
    assert set(trace.edges) == {
        Edge(co, s_fail, "program"), Edge(s_fail, s_zero, "program"),
        Edge(ac, r_fail, "program"), Edge(r_fail, r_eof, "program"), Edge(co, ac, "connect"),
    }


def test_writev_sendmsg_are_sends_and_readv_recvmsg_receives() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    s0, s1, s2 = (conn.send("c", 4, "writev"), conn.send("c", 4, "sendmsg"),
                  conn.send("c", 4, "sendto"))
    r0, r1 = conn.recv("s", 6, "readv"), conn.recv("s", 6, "recvmsg")
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (r0,), "client->server:tcp0#1": (r0, r1),
                               "client->server:tcp0#2": (r1,)}
    assert kinds(trace, "message") == {(s0, r0), (s1, r0), (s1, r1), (s2, r1)}


def test_peek_is_not_a_receive_but_sees_the_send() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    snd = conn.send("c", 8)
    peek = conn._add("s", "recvfrom", ret=8, count=8, msg_flags=0x2, seq_r=conn.rseq["s"])
    rd = conn.recv("s", 8)
    trace = run.trace()
    assert kinds(trace, "message") == {(snd, rd)}
    assert peek not in {r for m in trace.messages for r in m.recv_seqs}
    assert kinds(trace, "peek") == {(snd, peek)}
    assert happens_before(trace, snd, peek)


@pytest.mark.parametrize("exact", [True, False])
def test_a_peek_sees_the_bytes_past_what_was_read(exact: bool) -> None:
    """A peek covers [copied_seq, copied_seq + n): after a 3-byte read of a
    4-byte send, a 5-byte peek sees the rest of it and the next send. Without
    sequence numbers, cumulative counts say the same."""
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20, isn=(MOD - 5, 7))
    conn.connect(), conn.accept()
    s0, s1, s2 = conn.send("c", 4), conn.send("c", 4), conn.send("c", 4)
    r0 = conn.recv("s", 3)
    peek = conn._add("s", "recvmsg", ret=5, count=1, msg_flags=0x2, seq_r=conn.rseq["s"])
    r1 = conn.recv("s", 9)
    if not exact:
        for e in run.events:
            e.seq_w = e.seq_r = None
    trace = run.trace()
    assert kinds(trace, "peek") == {(s0, peek), (s1, peek)}
    assert kinds(trace, "message") == {(s0, r0), (s0, r1), (s1, r1), (s2, r1)}
    assert happens_before(trace, s1, peek) and not happens_before(trace, s2, peek)


def test_a_udp_peek_sees_the_datagram_the_next_receive_takes() -> None:
    run = Run()
    a = run.udp_send("client", 10, 5000, "server", 53, b"one")
    b = run.udp_send("client", 10, 5000, "server", 53, b"two")
    peek = run.add("server", 20, syscall="recvfrom", proto="udp", family=4, fd=6, sk=0xD0,
                   laddr="0.0.0.0", lport=53, raddr=ADDR["client"], rport=5000, ret=2,
                   count=2, payload=b"on", msg_flags=0x2)
    r0 = run.udp_recv("server", 20, 53, "client", 5000, b"one")
    r1 = run.udp_recv("server", 20, 53, "client", 5000, b"two")
    trace = run.trace()
    assert kinds(trace, "message") == {(a, r0), (b, r1)}
    assert kinds(trace, "peek") == {(a, peek)}


def test_100_short_connections_reusing_ports() -> None:
    """Ports cycle over 3 values and the sk address over 2; even the ISN is the same
    every time (worst case): connect/accept cut the 4-tuple's history apart."""
    run = Run()
    expected: dict[str, tuple[int, ...]] = {}
    for i in range(100):
        conn = run.tcp("client", "server", 40000 + i % 3, ctid=10, stid=20,
                       sk=(0xA0 + i % 2, 0xB0 + i % 2))
        conn.connect(), conn.accept()
        conn.send("c", f"req {i}".encode())
        expected[f"client->server:tcp{i}#0"] = (conn.recv("s", len(f"req {i}")),)
        conn.send("s", f"resp {i}".encode())
        expected[f"server->client:tcp{i}#0"] = (conn.recv("c", len(f"resp {i}")),)
    trace = run.trace()
    assert received(trace) == expected
    for i in range(100):
        assert trace.message(f"client->server:tcp{i}#0").payload == f"req {i}".encode()
    assert len(kinds(trace, "connect")) == 100


def test_reused_four_tuple_with_a_new_isn() -> None:
    run = Run()
    first = run.tcp("client", "server", 40000, ctid=10, stid=20, isn=(1000, 5000))
    first.connect(), first.accept()
    a = first.send("c", b"one")
    ra = first.recv("s", 3)
    second = run.tcp("client", "server", 40000, ctid=10, stid=20, isn=(77_000, 99_000))
    second.connect(), second.accept()
    b = second.send("c", b"two")
    rb = second.recv("s", 3)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (ra,), "client->server:tcp1#0": (rb,)}
    assert kinds(trace, "message") == {(a, ra), (b, rb)}


def test_reused_four_tuple_traced_without_connect_or_accept() -> None:
    """Tracing started late: the new socket (new sk address) still cuts the history."""
    run = Run()
    first = run.tcp("client", "server", 40000, ctid=10, stid=20, isn=(1000, 5000))
    a = first.send("c", b"one")
    ra = first.recv("s", 3)
    second = run.tcp("client", "server", 40000, ctid=10, stid=20, isn=(2000, 6000),
                     sk=(0xA8, 0xB8))
    b = second.send("c", b"two")
    rb = second.recv("s", 3)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (ra,), "client->server:tcp1#0": (rb,)}
    assert kinds(trace, "message") == {(a, ra), (b, rb)}
    assert kinds(trace, "connect") == set()


def test_concurrent_connections_interleaved() -> None:
    run = Run()
    c0 = run.tcp("client", "server", 40000, ctid=10, stid=20, sk=(0xA0, 0xB0))
    c1 = run.tcp("client", "server", 40001, ctid=11, stid=21, sk=(0xA1, 0xB1))
    c0.connect(), c1.connect(), c1.accept(), c0.accept()
    s1, s0 = c1.send("c", b"BBBB"), c0.send("c", b"AAAA")
    r0a, r1 = c0.recv("s", 2), c1.recv("s", 4)
    s0b = c0.send("c", b"CC")
    r0b = c0.recv("s", 4)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (r0a, r0b),
                               "client->server:tcp0#1": (r0b,),
                               "client->server:tcp1#0": (r1,)}
    assert kinds(trace, "message") == {(s0, r0a), (s0, r0b), (s0b, r0b), (s1, r1)}


def test_non_blocking_and_refused_connects() -> None:
    """EINPROGRESS then EISCONN is one attempt; a refused connect is no channel."""
    run = Run()
    refused = run.tcp("client", "server", 40000, ctid=10, stid=20)
    refused.connect(ret=-111)
    conn = run.tcp("client", "server", 40001, ctid=10, stid=20, sk=(0xA1, 0xB1))
    first, again = conn.connect(ret=-115), conn.connect(ret=-106)
    acc = conn.accept()
    conn.send("c", b"hi")
    rd = conn.recv("s", 2)
    trace = run.trace()
    assert received(trace) == {"client->server:tcp0#0": (rd,)}
    assert kinds(trace, "connect") == {(first, acc)}
    assert (first, again) in kinds(trace, "program")


def test_connect_accept_edges_and_sendmmsg() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    co, ac = conn.connect(), conn.accept()
    # one sendmmsg of two messages: the tracer reports write_seq at the call's exit
    end = (conn.wseq["c"] + 7) % MOD
    conn.wseq["c"] = end
    m0 = conn._add("c", "sendmmsg", ret=3, count=2, payload=b"abc", seq_w=end, msg_idx=0)
    run.t -= 1000  # same call: same exit time
    m1 = conn._add("c", "sendmmsg", ret=4, count=2, payload=b"defg", seq_w=end, msg_idx=1)
    r0, r1 = conn.recv("s", 3), conn.recv("s", 4)
    trace = run.trace()
    assert kinds(trace, "connect") == {(co, ac)}
    assert kinds(trace, "message") == {(m0, r0), (m1, r1)}


def test_cumulative_fallback_without_sequence_numbers() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    s0, s1 = conn.send("c", 6), conn.send("c", 6)
    r0, r1 = conn.recv("s", 4), conn.recv("s", 8)
    for e in run.events:
        e.seq_w = e.seq_r = None
    trace = run.trace()
    assert kinds(trace, "message") == {(s0, r0), (s0, r1), (s1, r1)}


def test_both_nodes_connecting_to_each_other_get_distinct_channels() -> None:
    run = Run()
    a = run.tcp("client", "server", 40000, ctid=10, stid=20)
    b = run.tcp("server", "client", 40001, 81, ctid=21, stid=11, sk=(0xE0, 0xF0))
    a.connect(), a.accept(), b.connect(), b.accept()
    a.send("s", b"x"), b.send("c", b"y")
    ra, rb = a.recv("c", 1), b.recv("s", 1)
    trace = run.trace()
    assert received(trace) == {"server->client:tcp0#0": (ra,),
                               "server->client:tcp0@server#0": (rb,)}


# ------------------------------------------------------------------ UDP ----

def test_udp_ping_pong_with_duplicate_and_drop() -> None:
    run = Run()
    p1 = run.udp_send("client", 10, 5000, "server", 7000, b"ping")
    p2 = run.udp_send("client", 10, 5000, "server", 7000, b"ping")  # retried: same bytes
    q1 = run.udp_recv("server", 20, 7000, "client", 5000, b"ping")
    q2 = run.udp_recv("server", 20, 7000, "client", 5000, b"ping")
    pong = run.udp_send("server", 20, 7000, "client", 5000, b"pong", sk=0xC8)
    lost = run.udp_send("client", 10, 5000, "server", 7000, b"bye")  # dropped
    got = run.udp_recv("client", 10, 5000, "server", 7000, b"pong")
    trace = run.trace()
    assert received(trace) == {"client->server:udp0#0": (q1,), "client->server:udp0#1": (q2,),
                               "server->client:udp0#0": (got,), "client->server:udp0#2": ()}
    assert kinds(trace, "message") == {(p1, q1), (p2, q2), (pong, got)}
    ping1, ping2 = trace.message("client->server:udp0#0"), trace.message("client->server:udp0#1")
    assert ping1.payload_hash == ping2.payload_hash != trace.message(
        "client->server:udp0#2").payload_hash
    assert not trace.message("client->server:udp0#2").delivered
    assert trace.message("client->server:udp0#2").send_seq == lost
    assert ping1.byte_start is None


def test_udp_datagram_dropped_by_a_fault_is_not_taken_by_a_receive() -> None:
    """Retries of one request look the same. The fault's record names the
    send it dropped (its sock and entry time), so the receive goes to the
    retry, not to the dropped first try that FIFO alone would pick."""
    run = Run()
    first = run.udp_send("client", 10, 5000, "server", 7000, b"req")
    run.add("client", 10, FAULT, sk=run.events[first].sk, ts_enter=run.events[first].ts_enter,
            fault_slot=0, fault_action=H_FAULTS["FA_DROP_MSG"])
    retry = run.udp_send("client", 10, 5000, "server", 7000, b"req")
    got = run.udp_recv("server", 20, 7000, "client", 5000, b"req")
    trace = run.trace()
    assert kinds(trace, "message") == {(retry, got)}
    assert [m.delivered for m in trace.messages] == [False, True]


def test_a_dropped_datagram_to_its_own_node_still_arrives() -> None:
    """The classifier sits on eth0: a datagram a node sends itself never
    meets it, so a DropMessage there drops nothing and the receive takes it."""
    run = Run()
    send = run.udp_send("server", 20, 5000, "server", 7000, b"self")
    run.add("server", 20, FAULT, sk=run.events[send].sk, ts_enter=run.events[send].ts_enter,
            fault_slot=0, fault_action=H_FAULTS["FA_DROP_MSG"])
    got = run.udp_recv("server", 21, 7000, "server", 5000, b"self")
    assert kinds(run.trace(), "message") == {(send, got)}


def test_a_recv_other_is_never_taken_for_a_cut_datagram() -> None:
    """recv_other records no payload and its count is a call number: it must
    not take a longer datagram it cannot be compared with."""
    run = Run()
    run.udp_send("client", 10, 5000, "server", 7000, b"longer one")
    run.add("server", 20, syscall="recv_other", proto="udp", family=4, fd=-1, sk=0xD0,
            laddr="0.0.0.0", lport=7000, raddr=ADDR["client"], rport=5000, ret=3, count=3,
            payload=b"")
    assert kinds(run.trace(), "message") == set()


def test_sends_nobody_saw_the_content_of_are_not_retransmissions() -> None:
    """Two sendfiles of one size share the empty payload: keyed by their ids,
    not by it, or the lineage would take one for a copy of the other."""
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    for _ in range(2):
        seq = conn.send("c", b"12345678")
        run.events[seq].syscall, run.events[seq].payload = "sendfile", b""
    a, b = run.trace().messages
    assert a.payload_hash != b.payload_hash


def test_udp_send_recorded_at_exit_after_its_receive() -> None:
    """A send recorded at exit alone (no fault trigger armed) may be emitted
    after the receive of its datagram returned (loopback delivers inside
    sendto). It began no later than its thread's previous record: a receive
    after that can be its datagram's, a receive before it cannot."""
    run = Run()
    run.add("client", 10, syscall="bind", proto="udp", ret=0)
    got = run.udp_recv("server", 20, 7000, "client", 5000, b"a")
    sent = run.udp_send("client", 10, 5000, "server", 7000, b"a", exit_only=True)
    early = run.udp_recv("server", 20, 7000, "client", 5000, b"b")  # not from this client
    run.add("client", 10, syscall="bind", proto="udp", ret=0)
    late = run.udp_send("client", 10, 5000, "server", 7000, b"b", exit_only=True)
    trace = run.trace()
    assert received(trace) == {"client->server:udp0#0": (got,), "client->server:udp0#1": ()}
    assert kinds(trace, "message") == {(sent, got)}
    assert trace.message("client->server:udp0#1").send_seq == late
    assert early not in {s for m in trace.messages for s in m.recv_seqs}


def test_udp_sendmmsg_recorded_at_exit_after_its_receives() -> None:
    """The messages of one sendmmsg are all recorded at its exit, after the
    receives of the first ones may have returned: each began no later than
    the thread's record before the call, not before the call's message 0."""
    run = Run()
    run.add("client", 10, syscall="bind", proto="udp", ret=0)
    got = [run.udp_recv("server", 20, 7000, "client", 5000, b"m%d" % i) for i in range(3)]
    sent = [run.udp_send("client", 10, 5000, "server", 7000, b"m%d" % i, syscall="sendmmsg",
                         exit_only=True, msg_idx=i) for i in range(3)]
    trace = run.trace()
    assert kinds(trace, "message") == set(zip(sent, got, strict=True))


def test_udp_receiver_bound_to_wildcard_and_own_address() -> None:
    run = Run()
    s0 = run.udp_send("client", 10, 5000, "server", 7000, b"a")
    r0 = run.udp_recv("server", 20, 7000, "client", 5000, b"a", laddr="0.0.0.0")
    s1 = run.udp_send("client", 10, 5000, "server", 7000, b"b")
    r1 = run.udp_recv("server", 20, 7000, "client", 5000, b"b", laddr=ADDR["server"])
    trace = run.trace()
    assert kinds(trace, "message") == {(s0, r0), (s1, r1)}


def test_udp_channels_are_sending_sockets() -> None:
    run = Run()
    run.udp_send("client", 10, 5000, "server", 7000, b"a", sk=0xC0)
    run.udp_send("client", 10, 5001, "server", 7000, b"b", sk=0xC1)
    run.udp_send("client", 10, 5000, "server", 7000, b"c", sk=0xC0)
    run.udp_send("client", 10, 5000, "n2", 7000, b"d", sk=0xC0)
    trace = run.trace()
    assert [str(m.id) for m in trace.messages] == [
        "client->server:udp0#0", "client->server:udp1#0", "client->server:udp0#1",
        "client->n2:udp0#0"]


def test_udp_does_not_match_a_receive_before_the_send() -> None:
    run = Run()
    early = run.udp_recv("server", 20, 7000, "client", 5000, b"x")
    run.udp_send("client", 10, 5000, "server", 7000, b"x")
    trace = run.trace()
    assert trace.messages[0].recv_seqs == ()
    assert early not in {d for _, d in kinds(trace, "message")}


def test_udp_receive_without_its_source_is_matched_among_senders_to_its_port() -> None:
    """recv() on an unconnected socket records no source (rport 0): it takes
    the oldest untaken send to its port with its content, whoever sent it."""
    run = Run()
    a = run.udp_send("client", 10, 5000, "server", 7000, b"from-c")
    b = run.udp_send("n2", 30, 6000, "server", 7000, b"from-n2")
    c = run.udp_send("client", 10, 5000, "server", 7000, b"from-c")
    other = run.udp_send("client", 10, 5000, "server", 7001, b"from-n2")  # another port
    blind = [run.add("server", 20, syscall="recvfrom", proto="udp", family=4, fd=6, sk=0xD0,
                     laddr="0.0.0.0", lport=7000, raddr="0.0.0.0", rport=0, ret=len(data),
                     count=2048, payload=data) for data in (b"from-n2", b"from-c", b"from-c")]
    trace = run.trace()
    assert kinds(trace, "message") == {(b, blind[0]), (a, blind[1]), (c, blind[2])}
    assert [m.delivered for m in trace.messages if m.send_seq == other] == [False]


def test_ipv6_channels_are_numbered_apart_from_ipv4_ones() -> None:
    """Fault triggers number IPv4 channels only: an IPv6 connection opened
    first must not take the IPv4 one's number."""
    from ldfi.trace.ids import channel_names
    from ldfi.trace.matching import ChannelRef

    v6, v4, v6b = (ChannelRef("tcp", "client", "server", order, ipv6)
                   for order, ipv6 in ((1, True), (2, False), (3, True)))
    assert channel_names([v6, v4, v6b]) == {v6: "tcp6.0", v4: "tcp0", v6b: "tcp6.1"}


# ------------------------------------------------------ threads, clocks ----

def test_multi_threaded_server_program_order_and_fork_edges() -> None:
    run = Run()
    lst = run.add("server", 20, syscall="listen", fd=3)
    f1 = run.fork("server", 20, 21, thread=True)
    f2 = run.fork("server", 20, 22, thread=True)
    c1 = run.tcp("client", "server", 40000, ctid=10, stid=21, sk=(0xA0, 0xB0))
    c2 = run.tcp("client", "server", 40001, ctid=10, stid=22, sk=(0xA1, 0xB1))
    co1, co2 = c1.connect(), c2.connect()
    # both workers' accepts run in threads of pid 20
    ac2 = c2._add("s", "accept4", ret=6)
    ac1 = c1._add("s", "accept4", ret=5)
    for e in run.events[ac2], run.events[ac1]:
        e.pid = 20
    s1, s2 = c1.send("c", b"one"), c2.send("c", b"two")
    r2, r1 = c2.recv("s", 3), c1.recv("s", 3)
    run.events[r2].pid = run.events[r1].pid = 20
    trace = run.trace()
    assert kinds(trace, "fork") == {(f1, ac1), (f2, ac2)}
    assert kinds(trace, "program") == {(lst, f1), (f1, f2), (co1, co2), (co2, s1), (s1, s2),
                                       (ac1, r1), (ac2, r2)}
    assert kinds(trace, "connect") == {(co1, ac1), (co2, ac2)}
    assert kinds(trace, "message") == {(s1, r1), (s2, r2)}
    assert trace.vector_clocks[r1] == {"server/20/20": 2, "server/20/21": 2, "client/10/10": 3}
    assert concurrent(trace, r1, r2)


def test_process_fork_then_child_events() -> None:
    run = Run()
    ex = run.add("server", 30, kind="exec", filename="/bin/srv")
    fk = run.fork("server", 30, 31, thread=False)
    child = run.add("server", 31, syscall="socket", ret=3)
    parent = run.add("server", 30, syscall="socket", ret=3)
    trace = run.trace()
    assert set(trace.edges) == {Edge(ex, fk, "program"), Edge(fk, child, "fork"),
                                Edge(fk, parent, "program")}
    assert concurrent(trace, child, parent)
    assert happens_before(trace, ex, child)


def test_vector_clocks_agree_with_reachability() -> None:
    run = Run()
    a = run.tcp("client", "server", 40000, ctid=10, stid=20)
    b = run.tcp("n2", "server", 41000, ctid=30, stid=21, sk=(0xA4, 0xB4))
    a.connect(), a.accept(), b.connect(), b.accept()
    a.send("c", b"a1"), b.send("c", b"b1")
    a.recv("s", 2), b.recv("s", 2)
    a.send("s", b"r1")
    a.recv("c", 2)
    b.send("c", b"b2"), a.send("c", b"a2")
    b.recv("s", 2), a.recv("s", 2)
    trace = run.trace()
    g = trace.graph
    clocks = trace.vector_clocks
    for x in g:
        below = nx.descendants(g, x)
        for y in g:
            vc_less = x != y and all(clocks[y].get(k, 0) >= v for k, v in clocks[x].items())
            assert (y in below) == vc_less == happens_before(trace, x, y), (x, y)
    # the two clients never talk to each other: their sends are concurrent
    client_sends = [m.send_seq for m in trace.messages_from("client")]
    n2_sends = [m.send_seq for m in trace.messages_from("n2")]
    assert concurrent(trace, client_sends[0], n2_sends[0])
    assert all(isinstance(k, str) and k.count("/") == 2 for k in clocks[0])


def test_tcp_state_changes_are_ordered_only_by_their_edges() -> None:
    """A state change runs in softirq (pid and tid 0): it must not share a
    clock component with the node's other state changes, or two of them
    would each happen before the other."""
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    first = run.add("server", 0, TCP_STATE, pid=0, sk=0xB0, old_state=1, new_state=8)
    conn.send("c", b"x1")
    second = run.add("server", 0, TCP_STATE, pid=0, sk=0xB0, old_state=8, new_state=7)
    trace = run.trace()
    assert not happens_before(trace, first, second)
    assert not happens_before(trace, second, first)
    assert concurrent(trace, first, second)
    g = trace.graph
    for x in g:
        for y in g:
            assert (y in nx.descendants(g, x)) == happens_before(trace, x, y), (x, y)


def test_cycle_is_reported() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    # the server "receives" bytes before it sends the bytes the client receives first:
    # inconsistent events (a matching bug would look like this)
    r = conn.recv("s", 2)
    conn.send("s", b"zz")
    conn.recv("c", 2)
    conn.send("c", b"yy")
    run.events[r].ts = run.events[-1].ts
    with pytest.raises(CycleError):
        build_trace(run.events, TOPO)


# ------------------------------------------------------- ids across runs ----

def _workload(run: Run) -> Trace:
    for i in range(3):
        conn = run.tcp("client", "server", 40000 + i, ctid=10, stid=20 + i,
                       sk=(0xA0 + i, 0xB0 + i))
        conn.connect(), conn.accept()
        conn.send("c", f"put {i}".encode()), conn.recv("s", 5)
        conn.send("s", b"ok"), conn.recv("c", 2)
    run.udp_send("server", 20, 7000, "n2", 7000, b"gossip")
    run.udp_recv("n2", 30, 7000, "server", 7000, b"gossip")
    return run.trace()


def _logical(trace: Trace) -> list[tuple[str, tuple[str, ...], bytes]]:
    """Messages by id, with receives named by the message ids... (as event indexes)."""
    index = {e.seq: i for i, e in enumerate(trace.events)}
    return [(str(m.id), tuple(str(index[r]) for r in m.recv_seqs), m.payload_hash.encode())
            for m in trace.messages]


def test_logical_ids_identical_across_runs() -> None:
    one = _workload(Run())
    two = _workload(Run(off=1234, isn_off=3_000_000_000, t0=99_000_000_000))
    assert [e.pid for e in one.events] != [e.pid for e in two.events]
    assert [e.lport for e in one.events] != [e.lport for e in two.events]
    assert _logical(one) == _logical(two)
    assert [(m.byte_start, m.byte_end) for m in one.messages] == [
        (m.byte_start, m.byte_end) for m in two.messages]
    assert str(one.messages[-1].id) == "server->n2:udp0#0"


def test_id_does_not_depend_on_unrelated_traffic() -> None:
    quiet = Run()
    conn = quiet.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept(), conn.send("c", b"x"), conn.recv("s", 1)
    busy = Run()
    other = busy.tcp("n2", "server", 45000, ctid=30, stid=21, sk=(0xA9, 0xB9))
    other.connect(), other.accept(), other.send("c", b"noise"), other.recv("s", 5)
    busy.udp_send("client", 10, 5000, "n2", 7000, b"udp noise")
    conn = busy.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept(), conn.send("c", b"x"), conn.recv("s", 1)
    assert quiet.trace().has_message("client->server:tcp0#0")
    assert busy.trace().message("client->server:tcp0#0").payload == b"x"
    assert MessageId.parse("client->server:tcp0#0") == MessageId("client", "server", "tcp0", 0)


# --------------------------------------------------------- wire formats ----

def test_protobuf_round_trip(tmp_path) -> None:
    trace = _workload(Run())
    trace.meta["scenario"] = "rr"
    trace.lost_events = 3
    path = tmp_path / "run.pb"
    write_trace(trace, path)
    back = read_trace(path)
    assert back == trace
    assert back.events == trace.events and back.messages == trace.messages
    assert dict(back.vector_clocks) == dict(trace.vector_clocks)
    assert back.topology == TOPO
    assert not back.complete and back.lost_events == 3
    assert back.events[2].seq_r is None and back.events[2].seq_w is not None
    last = back.messages[-1].recv_seqs[0]
    assert happens_before(back, back.messages[-1].send_seq, last)


def test_lost_events_make_trace_incomplete() -> None:
    trace = Run().trace(lost_events=2)
    assert not trace.complete and trace.lost_events == 2
    assert trace_to_json(trace)["complete"] is False


def test_json_export() -> None:
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    conn.send("c", b"GET /\r\n\x00\\")
    conn.recv("s", 9)
    out = trace_to_json(run.trace(meta={"scenario": "rr"}))
    json.dumps(out)  # serializable as is
    assert out["format"] == "bopbpf.trace/2" and out["meta"] == {"scenario": "rr"}
    assert out["nodes"][0] == {"name": "client", "address": "198.18.0.1", "address6": None,
                                "cgroup": 11}
    msg = out["messages"][0]
    assert msg["id"] == "client->server:tcp0#0"
    assert msg["payload"] == "GET /\\r\\n\\x00\\\\"
    assert msg["bytes"] == [0, 9] and msg["recv_seqs"] == [3] and msg["delivered"] is True
    assert {"src": 2, "dst": 3, "kind": "message"} in out["edges"]
    ev = out["events"][2]
    assert ev["syscall"] == "write" and ev["vc"] == {"client/10/10": 2}
    assert "child_pid" not in ev and ev["payload"] == msg["payload"]


# ------------------------------------------------------------ performance ----

def test_builds_large_trace_quickly() -> None:
    run = Run()
    conns = [run.tcp("client", "server", 40000 + i, ctid=10 + i, stid=100 + i,
                     sk=(0x1000 + i, 0x2000 + i)) for i in range(20)]
    for c in conns:
        c.connect(), c.accept()
    for _ in range(1000):
        for c in conns:
            c.send("c", 100), c.recv("s", 60), c.recv("s", 40), c.send("s", 10), c.recv("c", 10)
    start = time.perf_counter()
    trace = build_trace(run.events, TOPO)
    elapsed = time.perf_counter() - start
    assert len(trace.messages) == 40_000 and all(m.delivered for m in trace.messages)
    assert elapsed < 10, elapsed


def test_receive_emitted_before_its_send_returns() -> None:
    """On a veth the receiver can return before the sender's write does: the
    message edge points backwards in emission order and clocks still follow it."""
    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect(), conn.accept()
    rd = conn.recv("s", 5)
    snd = conn.send("c", b"hello")
    after = conn.send("s", b"k")
    trace = run.trace()
    assert kinds(trace, "message") == {(snd, rd)}
    assert happens_before(trace, snd, rd) and happens_before(trace, snd, after)
    assert not happens_before(trace, rd, snd)
