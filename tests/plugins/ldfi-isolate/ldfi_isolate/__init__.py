"""An example third-party fault model: isolate a node from its peers.

    isolate(n1, before send 3)            n1 is cut off just before its 3rd send
    isolate(n1, before send 3, heal 1s)   ... for one second

Unlike a crash the node keeps running; unlike the built-in partition the
anchor is one of the node's own sends, so the cut is exact from its point of
view. It removes the node's sends from that one on and what it would have
received after that point, on traffic with the other faultable nodes (the
client's traffic is not cut unless the budget includes the client).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ldfi.faults import (
    ArmContext,
    Fault,
    FaultModel,
    Killer,
    LineageView,
    MessageFacts,
    SendAnchor,
)
from ldfi.faults.spec import format_anchor, format_duration, parse_anchor, parse_duration_arg
from tracer.faults import Action, Partition, Trigger


class Isolate(FaultModel):
    kind = "isolate"
    summary = "cut a node off from every other node, just before one of its sends"
    example = "isolate(n1, before send 3, heal 1s)"

    def parse(self, args: list[str]) -> Fault:
        if len(args) not in (2, 3):
            raise ValueError("write isolate(<node>, before send <k>[, heal <duration>])")
        node = args[0]
        anchor = parse_anchor(args[1], node)
        if not isinstance(anchor, SendAnchor):
            raise ValueError(f"{args[1]!r}: isolate is anchored before one of the node's sends")
        heal = None
        if len(args) == 3:
            word, _, rest = args[2].partition(" ")
            if word != "heal":
                raise ValueError(f"{args[2]!r}: write heal <duration>")
            heal = parse_duration_arg(rest, "heal time")
        return Fault(self.kind, anchor, node=node, duration=heal)

    def format(self, fault: Fault) -> str:
        heal = f", heal {format_duration(fault.duration)}" if fault.duration is not None else ""
        return f"isolate({fault.node}, {format_anchor(fault.anchor)}{heal})"

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        # only traffic between two faultable nodes crosses the cut
        if message.src not in view.faultable or message.dst not in view.faultable:
            return
        k = message.send_index
        # places are send counts: the same in every run (a logical chain)
        yield Killer(Fault(self.kind, SendAnchor(message.src, k), node=message.src),
                     ("isolate-node", message.src), k, logical=True)
        j = message.recv_sends_before
        if j >= 1:
            yield Killer(Fault(self.kind, SendAnchor(message.dst, j - 1), node=message.dst),
                         ("isolate-node", message.dst), j - 1, logical=True)

    def exclusive(self, fault: Fault) -> Hashable | None:
        return fault.node  # isolating a node twice in one run adds nothing

    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        node = fault.node or ""
        others = tuple(n for n in resolve.nodes if n != node)
        return resolve(fault.anchor), Partition((node,), others, heal=fault.duration)
