"""The happens-before trace's data model: topology, logical message ids,
messages, edges and the Trace itself. Plain dataclasses; the code that fills
them lives in matching.py, ids.py and graph.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from tracer.events import Event
from tracer.faults import FaultReport

if TYPE_CHECKING:
    import networkx as nx

EDGE_KINDS = ("program", "fork", "connect", "message", "peek")


@dataclass(slots=True)
class Topology:
    """Who is who in a run: node name -> IPv4 address (including "client", the
    workload's namespace), and, when known, node name -> IPv6 address and
    node name -> cgroup id."""

    addresses: dict[str, str] = field(default_factory=dict)
    cgroups: dict[str, int] = field(default_factory=dict)
    addresses6: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        """Node names, addresses' order first, then nodes known only by cgroup."""
        return list(dict.fromkeys([*self.addresses, *self.cgroups]))


class MessageId(NamedTuple):
    """A message's name that survives re-runs: node names, a logical channel and
    an ordinal; never ports, pids, fds, sequence numbers or times. (A NamedTuple:
    hashable, ordered, and cheap to make by the 100k.)"""

    src: str
    dst: str
    channel: str  # "tcp<k>", "tcp<k>@<connector>" or "udp<k>", see ids.py
    ordinal: int  # 0, 1, 2, ... counting sends src -> dst on the channel

    def __str__(self) -> str:
        return f"{self.src}->{self.dst}:{self.channel}#{self.ordinal}"

    @classmethod
    def parse(cls, text: str) -> MessageId:
        """Inverse of str(): "client->server:tcp0#2"."""
        try:
            ends, rest = text.split(":", 1)
            src, dst = ends.split("->", 1)
            channel, ordinal = rest.rsplit("#", 1)
            return cls(src, dst, channel, int(ordinal))
        except ValueError as err:
            raise ValueError(f"not a message id: {text!r} (want src->dst:channel#n)") from err


@dataclass(slots=True)
class Message:
    """One send system call (one datagram, or one write's bytes on a stream)."""

    id: MessageId
    proto: str  # "tcp" | "udp"
    send_seq: int  # the send event's seq
    recv_seqs: tuple[int, ...]  # receive events it reached (TCP: every overlapping read)
    size: int  # bytes the send returned
    payload: bytes  # the captured prefix
    payload_hash: str  # of (size, prefix): equal hashes on a channel = retransmissions
    delivered: bool  # some receive got (part of) it
    byte_start: int | None = None  # TCP: [byte_start, byte_end) offsets in the direction's
    byte_end: int | None = None  # stream, from its first traced byte (ISN-free)
    peek_seqs: tuple[int, ...] = ()  # MSG_PEEK receives that saw (some of) it, taking nothing

    @property
    def src(self) -> str:
        return self.id.src

    @property
    def dst(self) -> str:
        return self.id.dst

    @property
    def channel(self) -> str:
        return self.id.channel

    @property
    def ordinal(self) -> int:
        return self.id.ordinal


class Edge(NamedTuple):
    """src happened before dst (a NamedTuple: a million of them sort fast)."""

    src: int  # event seq
    dst: int  # event seq
    kind: str  # one of EDGE_KINDS


@dataclass
class Trace:
    """A run's happens-before trace. `complete` is False when the kernel lost
    events: then missing edges may hide causality and nothing built on the
    trace may claim more than it saw."""

    meta: dict[str, str]
    topology: Topology
    events: list[Event]
    messages: list[Message]
    edges: list[Edge]
    vector_clocks: Mapping[int, dict[str, int]]  # event seq -> {"node/pid/tid": count}
    lost_events: int = 0
    faults: list[FaultReport] = field(default_factory=list)  # armed for this run
    _by_id: dict[MessageId, Message] = field(init=False, repr=False, compare=False)
    _by_seq: dict[int, Event] = field(init=False, repr=False, compare=False)
    _graph: nx.DiGraph | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        self._by_id = {m.id: m for m in self.messages}
        self._by_seq = {e.seq: e for e in self.events}

    @property
    def complete(self) -> bool:
        return self.lost_events == 0

    def event(self, seq: int) -> Event:
        return self._by_seq[seq]

    def message(self, message_id: MessageId | str) -> Message:
        """A message by id (or its string form); KeyError when it did not occur."""
        if isinstance(message_id, str):
            message_id = MessageId.parse(message_id)
        return self._by_id[message_id]

    def has_message(self, message_id: MessageId | str) -> bool:
        if isinstance(message_id, str):
            message_id = MessageId.parse(message_id)
        return message_id in self._by_id

    def messages_from(self, node: str) -> list[Message]:
        return [m for m in self.messages if m.src == node]

    def messages_to(self, node: str) -> list[Message]:
        return [m for m in self.messages if m.dst == node]

    @property
    def graph(self) -> nx.DiGraph:
        """The networkx view (built on first use: it is large for big traces)."""
        if self._graph is None:
            from ldfi.trace.graph import to_networkx

            self._graph = to_networkx(self)
        return self._graph
