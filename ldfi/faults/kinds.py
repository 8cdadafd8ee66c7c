"""The built-in fault kinds (registered as `ldfi.fault_models` entry points).

What each one removes from a good run is its `killers`; the kernel semantics
are tracer.faults'. Summary (docs/fault-models.md has the details):

| kind      | text                                        | removes                         |
|-----------|---------------------------------------------|---------------------------------|
| omission  | omission(a->b:udp0#2)                       | that UDP datagram               |
| cut       | cut(a->b:tcp0#2[, heal 1s])                 | it and every later one, a -> b  |
| delay     | delay(a->b:tcp0#1, 500ms)                   | nothing (hand-written plans)    |
| reset     | reset(a->b:tcp0#2)                          | it and later ones, both ways    |
| crash     | crash(n, before send 3)                     | n's sends from its 3rd on, and  |
|           |                                             | what n would receive after that |
| restart   | restart(n, before send 3, 500ms)            | as crash (conservatively)       |
| pause     | pause(n, before send 2, 1s)                 | nothing (hand-written plans)    |
| partition | partition(a b | c[, at ...][, heal 2s])     | messages across, after the      |
|           |                                             | anchor                          |
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import ClassVar

from tracer.faults import (
    Action,
    CutFlow,
    DelayFlow,
    DropMessage,
    Kill,
    ResetFlow,
    Stop,
    Trigger,
)
from tracer.faults import (
    Partition as PartitionAction,
)

from .model import ArmContext, FaultModel, Killer, LineageView, MessageFacts
from .spec import (
    START,
    Anchor,
    Fault,
    MessageAnchor,
    SendAnchor,
    format_anchor,
    format_duration,
    is_anchor,
    parse_anchor,
    parse_duration_arg,
    parse_message_id,
    parse_node,
)


def _both_faultable(message: MessageFacts, view: LineageView) -> bool:
    """Both ends may be faulted, and a trigger can fire at the message's send
    (MessageFacts.armable: never on an IPv6 channel, tcp6.<k>)."""
    return message.armable and message.src in view.faultable and message.dst in view.faultable


def _heal(text: str) -> float:
    words = text.split(None, 1)
    if len(words) != 2 or words[0] != "heal":
        raise ValueError(f"{text!r}: write heal <duration>, e.g. heal 1s")
    return parse_duration_arg(words[1], "heal time")


def _args(fault: Fault, *extra: str) -> str:
    return f"{fault.kind}({', '.join(a for a in extra if a)})"


# ------------------------------------------------------- message-level kinds


class _MessageKind(FaultModel):
    """Kinds anchored at one message, written kind(<message id>, ...)."""

    protos: ClassVar[tuple[str, ...]] = ("tcp", "udp")
    wrong_proto: ClassVar[str] = ""

    def _message(self, args: list[str], least: int, most: int) -> MessageAnchor:
        if not least <= len(args) <= most:
            want = str(least) if least == most else f"{least} or {most}"
            raise ValueError(f"{self.kind} takes {want} argument(s), got {len(args)}")
        mid = parse_message_id(args[0])
        if mid.channel[:3] not in self.protos:
            raise ValueError(f"{mid} is a {mid.channel[:3].upper()} message: {self.wrong_proto}")
        return MessageAnchor(mid)

    def format(self, fault: Fault) -> str:
        assert isinstance(fault.anchor, MessageAnchor)
        return _args(fault, str(fault.anchor.id))


class Omission(_MessageKind):
    """Drop exactly one UDP datagram: true message loss."""

    kind = "omission"
    summary = "drop exactly that UDP datagram"
    example = "omission(a->b:udp0#2)"
    protos = ("udp",)
    wrong_proto = ("on TCP a dropped segment is retransmitted; use cut(...) to lose the "
                   "rest of the flow, or delay(..., 500ms)")

    def parse(self, args: list[str]) -> Fault:
        return Fault(self.kind, self._message(args, 1, 1))

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        if message.proto == "udp" and _both_faultable(message, view):
            yield Killer(Fault(self.kind, MessageAnchor(message.id)))

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), DropMessage()


class Cut(_MessageKind):
    """Drop every packet of the message's flow direction from that message on
    (retransmissions included), until `heal` or the end of the run. On TCP
    that is how a message is lost: the stream stops there."""

    kind = "cut"
    summary = "drop that message's flow direction from it on (optionally heal after a while)"
    example = "cut(client->server:tcp0#2, heal 1s)"

    def parse(self, args: list[str]) -> Fault:
        anchor = self._message(args, 1, 2)
        return Fault(self.kind, anchor, duration=_heal(args[1]) if len(args) > 1 else None)

    def format(self, fault: Fault) -> str:
        heal = f"heal {format_duration(fault.duration)}" if fault.duration is not None else ""
        return _args(fault, str(fault.message), heal)

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        # TCP only: on UDP, omission is the precise fault (a cut there would be
        # a second, coarser candidate for the same loss)
        if message.proto == "tcp" and _both_faultable(message, view):
            mid = message.id
            yield Killer(Fault(self.kind, MessageAnchor(mid)),
                         ("cut", mid.src, mid.dst, mid.channel), mid.ordinal, logical=True)

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), CutFlow(heal=fault.duration)


class Delay(_MessageKind):
    """Hold the flow direction for a window from that message on: TCP delivers
    late by retransmission (UDP datagrams in the window are lost). Removes no
    message, so LDFI never proposes it: it is for hand-written plans."""

    kind = "delay"
    summary = "hold that message's flow direction for a window (TCP: delivered late)"
    example = "delay(client->server:tcp0#1, 500ms)"
    removes_messages = False

    def parse(self, args: list[str]) -> Fault:
        anchor = self._message(args, 2, 2)
        window = parse_duration_arg(args[1], "window")
        if window <= 0:
            raise ValueError("the window must be > 0")
        return Fault(self.kind, anchor, duration=window)

    def format(self, fault: Fault) -> str:
        return _args(fault, str(fault.message), format_duration(fault.duration or 0.0))

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), DelayFlow(window=fault.duration or 0.0)


class Reset(_MessageKind):
    """Turn the first packet of that message into a RST: the connection dies on
    both sides. Removes the message, later ones in its direction, and what the
    other direction had not delivered by then (conservatively, all of it: data
    already queued at the receiver may in fact still be read)."""

    kind = "reset"
    summary = "reset the TCP connection at that message (both directions end)"
    example = "reset(client->server:tcp0#2)"
    protos = ("tcp",)
    wrong_proto = "UDP has no connection to reset; use omission(...)"

    def parse(self, args: list[str]) -> Fault:
        return Fault(self.kind, self._message(args, 1, 1))

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        if message.proto != "tcp" or not _both_faultable(message, view):
            return
        mid = message.id
        conn = ("reset", min(mid.src, mid.dst), max(mid.src, mid.dst), mid.channel)
        # places are times: any reset that fires before this message's last
        # needed receive returned kills it; this message's own reset fires at
        # its send's entry
        yield Killer(None, conn, message.recv_ts)
        yield Killer(Fault(self.kind, MessageAnchor(mid)), conn, message.send_ts)

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), ResetFlow()


# ---------------------------------------------------------- node-level kinds


class _NodeKind(FaultModel):
    """Kinds acting on one node, written kind(<node>[, <anchor>][, <duration>])."""

    duration: ClassVar[str] = ""  # "": none; "required"; "optional" (default 0)

    def parse(self, args: list[str]) -> Fault:
        if not args:
            raise ValueError(f"{self.kind} needs a node")
        node = parse_node(args[0])
        anchor: Anchor = START
        duration: float | None = None
        rest = args[1:]
        if rest and is_anchor(rest[0]):
            anchor = parse_anchor(rest.pop(0), node)
        if rest and self.duration:
            duration = parse_duration_arg(rest.pop(0), "duration")
        if rest:
            raise ValueError(f"unexpected {rest[0]!r}")
        if self.duration == "required" and duration is None:
            raise ValueError(f"{self.kind} needs a duration after the anchor")
        if self.duration == "optional" and duration is None:
            duration = 0.0
        if isinstance(anchor, MessageAnchor) and anchor.id.src != node:
            raise ValueError(f"'at {anchor.id}' is a send of {anchor.id.src}, not of {node}: "
                             f"{self.kind} at a message means just before {node} sends it")
        return Fault(self.kind, anchor, node=node, duration=duration)

    def format(self, fault: Fault) -> str:
        duration = format_duration(fault.duration) if fault.duration is not None else ""
        return _args(fault, fault.node or "", format_anchor(fault.anchor), duration)

    def exclusive(self, fault: Fault) -> Hashable | None:
        return fault.node  # one node goes down (or stops) at most once per run


class Crash(_NodeKind):
    """SIGKILL the node's processes just before one of its sends (exact: from
    the send's tracepoint; that send never leaves), at a time, or at the start.
    Removes its sends from that one on and every message it would have
    received after that point."""

    kind = "crash"
    summary = "kill a node (before its k-th send, at one of its messages, or at a time)"
    example = "crash(server, before send 3)"
    crashes_node = True

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        return _down_killers(self.kind, message, view, None)

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), Kill(node=fault.node or "")


class Restart(_NodeKind):
    """Crash, then run the node's command again after `duration` (default 0s).
    For the lineage it removes what a crash at the same point removes: the
    restarted node may well send those messages again, but under new channel
    numbers or ordinals, so the next run's trace says what really happened."""

    kind = "restart"
    summary = "crash a node, then start it again after a delay"
    example = "restart(server, before send 3, 500ms)"
    crashes_node = True
    duration = "optional"

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        return _down_killers(self.kind, message, view, 0.0)

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), Kill(node=fault.node or "",
                                           restart_after=fault.duration or 0.0)


def _down_killers(kind: str, message: MessageFacts, view: LineageView,
                  duration: float | None) -> Iterable[Killer]:
    """Crash-like kinds: one chain per node, places = the node's send index
    (the same in every run, so the chain is logical). Going down before send k
    kills the node's sends k, k+1, ... and a message it received after
    completing j sends if k < j (the crash came first)."""
    src, dst = message.src, message.dst
    if src in view.faultable and message.armable:
        k = message.send_index
        yield Killer(Fault(kind, SendAnchor(src, k), node=src, duration=duration),
                     ("down", src), k, logical=True)
    j = message.recv_sends_before
    if dst in view.faultable and j >= 1 and message.recv_prior_armable:
        # the latest crash point that still precedes the receive
        yield Killer(Fault(kind, SendAnchor(dst, j - 1), node=dst, duration=duration),
                     ("down", dst), j - 1, logical=True)


class Pause(_NodeKind):
    """SIGSTOP the node's processes, SIGCONT after `duration`. The triggering
    send itself completes. Removes no message (it delays): hand-written plans."""

    kind = "pause"
    summary = "stop a node's processes for a while (SIGSTOP, then SIGCONT)"
    example = "pause(server, before send 2, 1s)"
    removes_messages = False
    duration = "required"

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        return resolve(fault.anchor), Stop(node=fault.node or "", duration=fault.duration or 0.0)


# ---------------------------------------------------------------- partition


class Partition(FaultModel):
    """Drop every packet between two node sets, both ways, on every flow (open
    and later ones), from the anchor on, until `heal` or the end of the run.

    As candidates the solver only considers isolating one node from all other
    faultable nodes, starting at a message it sends or receives: it removes
    every message across that cut whose receive had not returned by then."""

    kind = "partition"
    summary = "cut all traffic between two sets of nodes (optionally heal after a while)"
    example = "partition(a b | c, at 1.5s, heal 2s)"

    def parse(self, args: list[str]) -> Fault:
        if not args:
            raise ValueError("partition needs two node sets, e.g. a b | c")
        halves = args[0].split("|")
        if len(halves) != 2:
            raise ValueError(f"{args[0]!r}: write the two sides separated by one '|', e.g. a b | c")
        a, b = ([parse_node(n) for n in half.split()] for half in halves)
        if not a or not b:
            raise ValueError(f"{args[0]!r}: each side needs at least one node")
        if set(a) & set(b):
            raise ValueError(f"{args[0]!r}: {', '.join(sorted(set(a) & set(b)))} on both sides")
        anchor: Anchor = START
        heal: float | None = None
        rest = args[1:]
        if rest and is_anchor(rest[0]):
            anchor = parse_anchor(rest.pop(0), None)
        if rest and rest[0].startswith("heal"):
            heal = _heal(rest.pop(0))
        if rest:
            raise ValueError(f"unexpected {rest[0]!r} (after the sides: [at ...], [heal ...])")
        return Fault(self.kind, anchor, sides=(tuple(a), tuple(b)), duration=heal)

    def format(self, fault: Fault) -> str:
        assert fault.sides is not None
        sides = f"{' '.join(fault.sides[0])} | {' '.join(fault.sides[1])}"
        heal = f"heal {format_duration(fault.duration)}" if fault.duration is not None else ""
        return _args(fault, sides, format_anchor(fault.anchor), heal)

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        if not _both_faultable(message, view) or message.src == message.dst:
            return
        for node in (message.src, message.dst):
            chain = ("isolate", node)
            sides = ((node,), view.others(node))
            # places are times, as for reset: isolating the node before this
            # message's receive returned kills it; isolating it at this message
            # fires at the send's entry
            yield Killer(None, chain, message.recv_ts)
            yield Killer(Fault(self.kind, MessageAnchor(message.id), sides=sides), chain,
                         message.send_ts)

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        assert fault.sides is not None
        return resolve(fault.anchor), PartitionAction(fault.sides[0], fault.sides[1],
                                                      heal=fault.duration)
