"""Happens-before edges, the networkx view, and vector clocks.

Edges: "program" (consecutive events of one thread), "fork" (fork event ->
the child's first event), "connect" (connect -> its accept), "message" (send
-> each receive it reached), "peek" (send -> each MSG_PEEK receive that saw
its bytes without taking them). Vector clocks have one component per thread,
keyed "node/pid/tid", counting that thread's events. A TCP state change
runs in softirq and belongs to no thread: it is a component of its own,
"node/tcp_state/seq", so that it is ordered only by its edges.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator, Mapping

import networkx as nx

from tracer.events import FORK, TCP_STATE, Event

from .matching import MatchResult
from .model import Edge, Message, Trace

_KIND_RANK = {"message": 0, "peek": 1, "connect": 2, "fork": 3, "program": 4}


def thread_key(e: Event) -> str:
    if e.kind == TCP_STATE:
        return f"{e.node}/tcp_state/{e.seq}"
    return f"{e.node}/{e.pid}/{e.tid}"


def _thread_id(e: Event) -> tuple[str, int, int] | tuple[str, int, int, int]:
    """What thread_key() tells apart, as a tuple (cheaper to hash than the string)."""
    return (e.node, e.pid, e.tid, e.seq) if e.kind == TCP_STATE else (e.node, e.pid, e.tid)


def thread_edges(events: list[Event]) -> list[Edge]:
    """Program order per thread, and fork edges. A fork resets the child tid, so
    a reused tid starts a new thread instead of continuing a dead one."""
    out: list[Edge] = []
    last: dict[int, int] = {}
    forked: dict[int, int] = {}  # child tid -> fork event seq
    for e in events:
        if e.kind == TCP_STATE:  # emitted from softirq: it belongs to no thread
            continue
        if e.tid in forked:
            out.append(Edge(forked.pop(e.tid), e.seq, "fork"))
        elif e.tid in last:
            out.append(Edge(last[e.tid], e.seq, "program"))
        last[e.tid] = e.seq
        if e.kind == FORK:
            child = e.child_tid or e.child_pid
            if child and child != e.tid:
                forked[child] = e.seq
                last.pop(child, None)
    return out


def build_edges(events: list[Event], matched: MatchResult, messages: list[Message]
                ) -> list[Edge]:
    edges = thread_edges(events)
    edges += [Edge(c, a, "connect") for c, a in matched.connects]
    edges += [Edge(m.send_seq, r, "message") for m in messages for r in m.recv_seqs]
    edges += [Edge(m.send_seq, p, "peek") for m in messages for p in m.peek_seqs]
    edges.sort()  # plain tuples: fast
    return edges


def to_networkx(trace: Trace) -> nx.DiGraph:
    """Event seqs as nodes (attribute `event`), edges with `kind` (when one pair
    has several kinds, e.g. a thread reading its own send: the most telling
    one, all of them in `kinds`)."""
    g = nx.DiGraph()
    g.add_nodes_from((e.seq, {"event": e}) for e in trace.events)
    for edge in trace.edges:
        if g.has_edge(edge.src, edge.dst):
            data = g.edges[edge.src, edge.dst]
            data["kinds"] = (*data["kinds"], edge.kind)
            data["kind"] = min(data["kinds"], key=_KIND_RANK.__getitem__)
        else:
            g.add_edge(edge.src, edge.dst, kind=edge.kind, kinds=(edge.kind,))
    return g


class CycleError(ValueError):
    """The matched edges contradict time: a bug in matching or in the events."""


class VectorClocks(Mapping[int, dict[str, int]]):
    """event seq -> {thread: count}, stored compactly: each event keeps its own
    thread's count plus a dict of the other threads' components that is shared
    along a thread until the next receive/accept/fork merges something in.
    (1M events x dozens of threads as plain dicts would not fit in memory.)"""

    def __init__(self) -> None:
        self._own: dict[int, tuple[str, int, dict[str, int]]] = {}

    def set(self, seq: int, thread: str, count: int, others: dict[str, int]) -> None:
        self._own[seq] = (thread, count, others)

    def __getitem__(self, seq: int) -> dict[str, int]:
        thread, count, others = self._own[seq]
        return {**others, thread: count}

    def __iter__(self) -> Iterator[int]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)

    def component(self, seq: int, thread: str) -> int:
        own, count, others = self._own[seq]
        return count if own == thread else others.get(thread, 0)

    def own(self, seq: int) -> tuple[str, int]:
        thread, count, _ = self._own[seq]
        return thread, count

    @classmethod
    def from_dicts(cls, clocks: Mapping[int, dict[str, int]], threads: Mapping[int, str]
                   ) -> VectorClocks:
        """From explicit per-event clocks (as stored), given each event's thread."""
        vc = cls()
        for seq, clock in clocks.items():
            thread = threads[seq]
            others = {k: v for k, v in clock.items() if k != thread}
            vc.set(seq, thread, clock.get(thread, 0), others)
        return vc


def _topological(events: list[Event], edges: list[Edge]) -> list[int]:
    """Kahn's algorithm seeded in seq order (deterministic, near emission order)."""
    succ: dict[int, list[int]] = defaultdict(list)
    indeg = dict.fromkeys((e.seq for e in events), 0)
    for src, dst, _ in edges:
        succ[src].append(dst)
        indeg[dst] += 1
    ready = deque(e.seq for e in events if indeg[e.seq] == 0)
    order: list[int] = []
    while ready:
        s = ready.popleft()
        order.append(s)
        for t in succ[s]:
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    if len(order) != len(events):
        left = sorted(set(indeg) - set(order))
        raise CycleError(f"happens-before graph has a cycle through {len(left)} events "
                         f"(first seqs {left[:8]})")
    return order


def vector_clocks(events: list[Event], edges: list[Edge]) -> VectorClocks:
    """Vector clocks in topological order; raises CycleError on a cyclic graph."""
    program: dict[int, int] = {}  # seq -> its program predecessor
    merges: dict[int, list[int]] = defaultdict(list)  # seq -> other predecessors
    for src, dst, kind in edges:
        if kind == "program":
            program[dst] = src
        else:
            merges[dst].append(src)
    order = [e.seq for e in events]
    if any(src > dst for src, dst, _ in edges):  # else seq order is already topological
        order = _topological(events, edges)
    keys: dict[tuple, str] = {}  # one string per thread, not per event
    thread_of = {e.seq: keys.setdefault(_thread_id(e), thread_key(e)) for e in events}
    vc = VectorClocks()
    own = vc._own
    get_program, get_merges = program.get, merges.get
    for s in order:
        thread = thread_of[s]
        count, others = 0, _EMPTY
        p = get_program(s)
        if p is not None:
            p_thread, count, others = own[p]
            if p_thread != thread:  # same tid, new identity (exec changed the pid)
                others, count = {**others, p_thread: count}, 0
        more = get_merges(s)
        if more is not None:
            others = _merge(others, thread, [own[q] for q in more])
        own[s] = (thread, count + 1, others)
    return vc


def _merge(others: dict[str, int], thread: str,
           preds: list[tuple[str, int, dict[str, int]]]) -> dict[str, int]:
    """Component-wise max of `others` and the predecessors' clocks, minus `thread`."""
    out = dict(others)
    for q_thread, q_count, q_others in preds:
        for k, v in q_others.items():
            if out.get(k, 0) < v:
                out[k] = v
        if out.get(q_thread, 0) < q_count:
            out[q_thread] = q_count
    out.pop(thread, None)
    return out


_EMPTY: dict[str, int] = {}  # shared, never mutated


def happens_before(trace: Trace, a_seq: int, b_seq: int) -> bool:
    """a -> b (strictly): b's clock has seen a's own component."""
    if a_seq == b_seq:
        return False
    clocks = trace.vector_clocks
    if isinstance(clocks, VectorClocks):
        thread, count = clocks.own(a_seq)
        return clocks.component(b_seq, thread) >= count
    thread = thread_key(trace.event(a_seq))
    return clocks[b_seq].get(thread, 0) >= clocks[a_seq][thread]


def concurrent(trace: Trace, a_seq: int, b_seq: int) -> bool:
    return (a_seq != b_seq and not happens_before(trace, a_seq, b_seq)
            and not happens_before(trace, b_seq, a_seq))
