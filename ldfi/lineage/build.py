"""The lineage of a good run's outcome: its causal past, and the messages in it.

One reverse breadth-first walk over the happens-before edges from the outcome's
events marks the causal past (linear; no per-event ancestor queries). A message
is in the lineage when one of its receives is in that past: the outcome
depends on it having arrived. Messages with the same payload on the same
channel direction are retransmissions: the support groups them, and a group is
lost only if every copy is (so a retrying protocol is not explored one copy
per run).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ldfi.faults.model import LineageView, MessageFacts
from ldfi.trace.model import Message, Trace
from tracer.events import UNSEEN_SENDS, Event

from .outcome import Outcome

CLIENTS = frozenset({"client"})


@dataclass(frozen=True)
class Support:
    """What one good run's outcome needed: groups of interchangeable messages
    (one group = one message, or the copies of a retransmitted one). The
    solver's formula: every support must lose at least one whole group."""

    run: str
    groups: tuple[tuple[MessageFacts, ...], ...]
    nodes: tuple[str, ...]  # every node of the run, clients included
    clients: frozenset[str] = CLIENTS
    complete: bool = True  # False: the kernel lost events, the support may be too small

    def view(self, include_client: bool = False) -> LineageView:
        """The fault models' view of this run: who may be faulted."""
        named = frozenset(self.nodes)
        faultable = named if include_client else named - self.clients
        return LineageView(self.run, self.nodes, self.clients, faultable)

    @property
    def messages(self) -> list[MessageFacts]:
        return [m for group in self.groups for m in group]

    def __len__(self) -> int:
        return len(self.groups)


@dataclass
class Lineage:
    """The outcome's causal past in one trace."""

    run: str
    outcome: tuple[int, ...]  # the outcome's event seqs
    events: int  # how many events are in the causal past
    messages: list[MessageFacts]  # messages in the causal past, in send order
    support: Support
    _past: set[int] = field(repr=False, default_factory=set)

    def __contains__(self, seq: object) -> bool:
        """Is this event (seq) in the causal past of the outcome?"""
        return seq in self._past


def lineage(trace: Trace, outcome: Outcome | None = None,
            clients: Iterable[str] = CLIENTS) -> Lineage:
    """The lineage of `trace`'s outcome (default: Outcome(), the client's)."""
    seeds = (outcome or Outcome()).events(trace)
    past = causal_past(trace, seeds)
    facts = message_facts(trace, past)
    run = trace.meta.get("run", "")
    support = Support(run, retransmission_groups(facts), tuple(trace.topology.nodes),
                      frozenset(clients), trace.complete)
    return Lineage(run, tuple(seeds), len(past), facts, support, past)


def causal_past(trace: Trace, seeds: Iterable[int]) -> set[int]:
    """Every event that happened before (or is) one of `seeds`: one reverse BFS
    over trace.edges. Predecessors are kept as an int when there is one (most
    events: program order) and a list otherwise, to stay small at 1M events."""
    preds: dict[int, int | list[int]] = {}
    get = preds.get
    for src, dst, _ in trace.edges:
        p = get(dst)
        if p is None:
            preds[dst] = src
        elif type(p) is int:
            preds[dst] = [p, src]
        else:
            p.append(src)
    seen = set(seeds)
    stack = list(seen)
    while stack:
        p = get(stack.pop())
        if p is None:
            continue
        if type(p) is int:
            if p not in seen:
                seen.add(p)
                stack.append(p)
            continue
        for q in p:
            if q not in seen:
                seen.add(q)
                stack.append(q)
    return seen


def message_facts(trace: Trace, past: set[int]) -> list[MessageFacts]:
    """MessageFacts of the messages with a receive (or a peek: the bytes it
    saw were the message's) in `past`, in send order."""
    by_send = sorted(trace.messages, key=lambda m: m.send_seq)
    # Node-wide send index, in the order the kernel counts them: a send counts
    # when it completes (seq = emission at exit), and a trigger fires at the
    # entry of the send whose index it names (tracer.faults.SendTrigger).
    index: dict[int, int] = {}
    sends_of: dict[str, list[int]] = defaultdict(list)
    for m in by_send:
        seqs = sends_of[m.src]
        index[m.send_seq] = len(seqs)
        seqs.append(m.send_seq)
    event = trace.event
    out: list[MessageFacts] = []
    for m in by_send:
        needed = [s for s in (*m.recv_seqs, *m.peek_seqs) if s in past]
        if needed:
            out.append(_facts(m, index[m.send_seq], event,
                              max((event(s).ts, s) for s in needed), sends_of.get(m.dst, [])))
    return out


def _facts(m: Message, send_index: int, event: Callable[[int], Event],
           last_recv: tuple[int, int], receiver_sends: list[int]) -> MessageFacts:
    recv_ts, recv_seq = last_recv
    # sends the receiver completed before this receive returned: a crash before
    # any of them comes before the receive
    before = bisect_left(receiver_sends, recv_seq)
    prior = before >= 1 and armable(event(receiver_sends[before - 1]))
    send = event(m.send_seq)
    return MessageFacts(m.id, m.proto, m.size, m.payload, m.payload_hash, send_index,
                        send.ts_enter, recv_ts, before, armable(send), prior)


def armable(send: Event) -> bool:
    """Can a fault trigger fire at this send? (bpf/faults.bpf.c fires at the
    entry of a write/writev/sendto/sendmsg/sendmmsg on an IPv4 socket, once
    per sendmmsg call.)"""
    return send.family != 6 and send.syscall not in UNSEEN_SENDS and send.msg_idx == 0


def retransmission_groups(facts: list[MessageFacts]) -> tuple[tuple[MessageFacts, ...], ...]:
    """Messages with equal payload hash on one channel direction, grouped, in
    order of each group's first send."""
    groups: dict[tuple[str, str, str, str], list[MessageFacts]] = {}
    for f in facts:
        groups.setdefault((f.id.src, f.id.dst, f.id.channel, f.payload_hash), []).append(f)
    return tuple(tuple(g) for g in groups.values())
