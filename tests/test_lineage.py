"""The lineage of a good outcome (ldfi.lineage): causal past, message facts,
retransmission groups, outcome specs. Traces are built by hand (Trace from
events, messages and edges) except one end-to-end case through build_trace."""

from __future__ import annotations

import time

import pytest

from ldfi.errors import UserError
from ldfi.lineage import Outcome, Support, causal_past, lineage
from ldfi.trace.ids import payload_hash
from ldfi.trace.model import Edge, Message, MessageId, Topology, Trace
from tracer.events import Event

NODES = ("client", "a", "b", "c")


class Hand:
    """A trace written event by event: one thread per (node, tid), program
    edges in the order events are added, ts = 1000 * (seq + 1)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.messages: list[Message] = []
        self.edges: list[Edge] = []
        self.last: dict[tuple[str, int], int] = {}
        self.ordinals: dict[tuple[str, str, str], int] = {}

    def event(self, node: str, tid: int = 1, **kw: object) -> int:
        seq = len(self.events)
        ts = 1000 * (seq + 1)
        self.events.append(Event(seq=seq, kind="sock", ts=ts, ts_enter=ts - 10, pid=tid,
                                 tid=tid, comm="p", node=node, **kw))  # type: ignore[arg-type]
        key = (node, tid)
        if key in self.last:
            self.edges.append(Edge(self.last[key], seq, "program"))
        self.last[key] = seq
        return seq

    def send(self, src: str, dst: str, channel: str = "tcp0", payload: bytes = b"x",
             tid: int = 1) -> Message:
        proto = channel[:3]
        seq = self.event(src, tid, syscall="write", ret=len(payload), proto=proto,
                         payload=payload)
        key = (src, dst, channel)
        n = self.ordinals.get(key, 0)
        self.ordinals[key] = n + 1
        m = Message(MessageId(src, dst, channel, n), proto, seq, (), len(payload), payload,
                    payload_hash(payload, len(payload)), False)
        self.messages.append(m)
        return m

    def recv(self, node: str, m: Message, tid: int = 1) -> int:
        seq = self.event(node, tid, syscall="read", ret=m.size, proto=m.proto, payload=m.payload)
        m.recv_seqs = (*m.recv_seqs, seq)
        m.delivered = True
        self.edges.append(Edge(m.send_seq, seq, "message"))
        return seq

    def trace(self, run: str = "r1", lost: int = 0) -> Trace:
        topo = Topology(addresses={n: f"198.18.0.{i + 1}" for i, n in enumerate(NODES)})
        return Trace({"run": run}, topo, self.events, self.messages, sorted(self.edges), {},
                     lost)


def ids(support: Support) -> list[list[str]]:
    return [[str(m.id) for m in g] for g in support.groups]


def replicated_write() -> tuple[Hand, dict[str, Message]]:
    """client -> a; a -> b (replicate), b -> a (ack); a -> c (gossip, after the
    reply: not in the outcome's past); a -> client (reply)."""
    h = Hand()
    m = {}
    m["req"] = h.send("client", "a", payload=b"PUT")
    h.recv("a", m["req"])
    m["rep"] = h.send("a", "b", payload=b"APPEND")
    h.recv("b", m["rep"])
    m["ack"] = h.send("b", "a", payload=b"ACK")
    h.recv("a", m["ack"])
    m["ok"] = h.send("a", "client", payload=b"OK")
    h.recv("client", m["ok"])
    m["gossip"] = h.send("a", "c", "udp0", payload=b"G")
    h.recv("c", m["gossip"])
    return h, m


def test_the_outcome_needs_exactly_the_messages_in_its_causal_past() -> None:
    h, _ = replicated_write()
    lin = lineage(h.trace())
    assert ids(lin.support) == [["client->a:tcp0#0"], ["a->b:tcp0#0"], ["b->a:tcp0#0"],
                                ["a->client:tcp0#0"]]
    assert lin.outcome == (7,)  # the client's receive, which is also its last event
    gossip_recv = h.messages[-1].recv_seqs[0]
    assert gossip_recv not in lin and 0 in lin and 7 in lin
    assert lin.events == 8 and lin.support.run == "r1" and lin.support.complete


def test_message_facts_count_sends_the_way_the_kernel_does() -> None:
    h = Hand()
    x = h.send("a", "b", "udp0")  # a's send #0
    y = h.send("a", "c", "tcp0")  # a's send #1 (node-wide: across channels and peers)
    h.recv("c", y)
    h.send("b", "c")  # b's send #0
    h.send("b", "c")  # b's send #1
    h.recv("b", x)  # b has completed 2 sends when x arrives
    z = h.send("b", "client")
    h.recv("client", z)
    facts = {str(f.id): f for f in lineage(h.trace()).messages}
    assert set(facts) == {"a->b:udp0#0", "b->client:tcp0#0"}
    fx = facts["a->b:udp0#0"]
    assert (fx.send_index, fx.recv_sends_before, fx.proto) == (0, 2, "udp")
    assert fx.send_ts == h.events[x.send_seq].ts_enter and fx.recv_ts == h.events[5].ts
    fz = facts["b->client:tcp0#0"]
    assert (fz.send_index, fz.recv_sends_before) == (2, 0)


def test_a_message_read_in_parts_counts_its_last_part_the_outcome_needed() -> None:
    h = Hand()
    m = h.send("a", "b")
    first = h.recv("b", m)
    r = h.send("b", "client")
    h.recv("client", r)
    second = h.recv("b", m)  # read after the reply: the outcome did not need it
    lin = lineage(h.trace())
    fact = next(f for f in lin.messages if f.id == m.id)
    assert fact.recv_ts == h.events[first].ts and second not in lin


def test_a_message_the_outcome_saw_only_by_a_peek_is_in_its_lineage() -> None:
    """b peeks at a's message and replies before it reads it: the reply is
    caused by what the peek saw, so the message is in the lineage."""
    h = Hand()
    m = h.send("a", "b", payload=b"GET")
    peek = h.event("b", syscall="recvfrom", ret=3, proto="tcp", payload=b"GET", msg_flags=2)
    m.peek_seqs = (peek,)
    h.edges.append(Edge(m.send_seq, peek, "peek"))
    r = h.send("b", "client")
    h.recv("client", r)
    late = h.recv("b", m)  # taken after the reply: not what the outcome needed
    lin = lineage(h.trace())
    assert ids(lin.support) == [["a->b:tcp0#0"], ["b->client:tcp0#0"]]
    fact = next(f for f in lin.messages if f.id == m.id)
    assert fact.recv_ts == h.events[peek].ts and late not in lin


def test_retransmissions_on_one_channel_direction_are_one_group() -> None:
    h = Hand()
    copies = [h.send("a", "b", "udp0", b"VOTE 1") for _ in range(3)]
    other = h.send("a", "b", "udp1", b"VOTE 1")  # same bytes, another socket: not a copy
    back = h.send("b", "a", "udp0", b"VOTE 1")  # same bytes, other direction: not a copy
    for m in (*copies, other):
        h.recv("b", m)
    h.recv("a", back)
    h.send("a", "client", payload=b"x")
    done = h.send("b", "client", payload=b"y")
    h.recv("client", h.messages[-2])
    h.recv("client", done)
    assert ids(lineage(h.trace()).support) == [
        ["a->b:udp0#0", "a->b:udp0#1", "a->b:udp0#2"], ["a->b:udp1#0"], ["b->a:udp0#0"],
        ["a->client:tcp0#0"], ["b->client:tcp0#0"]]


def test_an_outcome_regex_narrows_the_lineage() -> None:
    h = Hand()
    one = h.send("a", "client", payload=b"value=1")
    h.recv("client", one)
    two = h.send("b", "client", payload=b"status ok")
    h.recv("client", two)
    narrowed = lineage(h.trace(), Outcome(payload=r"value=\d"))
    assert ids(narrowed.support) == [["a->client:tcp0#0"]]
    assert len(lineage(h.trace()).support) == 2
    on_sends = lineage(h.trace(), Outcome(node="b", payload="status", on="send"))
    assert on_sends.outcome == (two.send_seq,) and len(on_sends.support) == 0


def test_an_outcome_that_matches_nothing_is_an_error_not_a_certificate() -> None:
    h, _ = replicated_write()
    with pytest.raises(UserError, match=r"the outcome matched nothing in run 'r1'.*'DONE'"):
        lineage(h.trace(), Outcome(payload="DONE"))
    with pytest.raises(UserError, match="no events of 'ghost'"):
        lineage(h.trace(), Outcome(node="ghost"))


def test_outcome_tables_from_the_scenario() -> None:
    assert Outcome.from_mapping({"node": None, "payload": None}) == Outcome()
    assert Outcome.from_mapping({"payload": "OK"}) == Outcome(payload="OK")
    for table, says in [({"nodes": "a"}, "unknown key 'nodes'"),
                        ({"payload": "("}, "missing \\)"),
                        ({"on": "both"}, "on must be one of recv, send, any"),
                        ({"node": 3}, "node must be a string")]:
        with pytest.raises(UserError, match=says):
            Outcome.from_mapping(table)


def test_an_incomplete_trace_gives_an_incomplete_support() -> None:
    h, _ = replicated_write()
    assert not lineage(h.trace(lost=3)).support.complete


def test_the_views_faultable_nodes_exclude_the_client_unless_asked() -> None:
    h, _ = replicated_write()
    support = lineage(h.trace()).support
    assert support.view().faultable == {"a", "b", "c"}
    assert support.view(include_client=True).faultable == set(NODES)


def test_lineage_of_a_traced_request_response(  # through the real matching
) -> None:
    from test_happens_before import Run  # the tracer-shaped event builder

    run = Run()
    conn = run.tcp("client", "server", 40000, ctid=10, stid=20)
    conn.connect()
    conn.accept()
    conn.send("c", b"GET /")
    conn.recv("s", 5)
    conn.send("s", b"OK")
    conn.recv("c", 2)
    lin = lineage(run.trace(meta={"run": "7"}))
    assert ids(lin.support) == [["client->server:tcp0#0"], ["server->client:tcp0#0"]]
    assert lin.support.nodes == ("client", "server", "n2")


def test_causal_past_is_linear_on_long_traces() -> None:
    """A 300k-event chain with back-and-forth messages: one reverse BFS."""
    h = Hand()
    n = 50_000
    for i in range(n):
        m = h.send("a" if i % 2 else "b", "b" if i % 2 else "a", payload=b"%d" % i)
        h.recv(m.dst, m)
        h.event(m.dst, syscall="read", ret=-11)
        h.event(m.src, syscall="read", ret=-11)
    tail = h.send("a", "client")
    h.recv("client", tail)
    trace = h.trace()
    t = time.perf_counter()
    past = causal_past(trace, [len(h.events) - 1])
    lin = lineage(trace)
    took = time.perf_counter() - t
    # all but b's events after its last send (a filler, the last receive, a filler)
    assert len(past) == len(h.events) - 3
    assert len(lin.support) == n  # the last a -> b arrived after a's reply
    assert took < 10  # ~1 s here; quadratic would be hours
