"""Did a fault's anchor occur in a run? A fault that did not fire is either
vacuous (its anchor never happened: earlier faults changed the run) or an
injector failure (the anchor happened and the fault missed it). The first
is the meaning of the hypothesis in that run; the second must never pass as
tested.

`Occurrences` keeps what the question needs of one trace (message ids, each
node's sends, how long the workload ran), so the engine can ask it again
after the trace itself is gone (ldfi.engine.equivalence)."""

from __future__ import annotations

from ldfi.faults import Fault, MessageAnchor, SendAnchor, StartAnchor, TimeAnchor
from ldfi.trace.model import MessageId, Trace


class Occurrences:
    def __init__(self, trace: Trace) -> None:
        self.messages: frozenset[MessageId] = frozenset(m.id for m in trace.messages)
        self.sends: dict[str, list[tuple[str, bytes]]] = {}
        for m in trace.messages:
            self.sends.setdefault(m.src, []).append((m.dst, m.payload))
        started = int(trace.meta.get("workload_started_ns", "0") or 0)
        last = max((e.ts for e in trace.events), default=0)
        self.ran_for = (last - started) / 1e9 if started else None  # seconds of workload

    def occurred(self, fault: Fault) -> bool:
        anchor = fault.anchor
        if isinstance(anchor, MessageAnchor):
            return anchor.id in self.messages
        if isinstance(anchor, SendAnchor):
            matching = sum(1 for dst, payload in self.sends.get(anchor.node, ())
                           if (anchor.to is None or dst == anchor.to)
                           and (anchor.payload is None or payload.startswith(anchor.payload)))
            return matching > anchor.nth
        if isinstance(anchor, StartAnchor):
            return True
        if isinstance(anchor, TimeAnchor):
            # no start time recorded: assume it occurred (never vacuous, never skipped)
            return self.ran_for is None or self.ran_for >= anchor.seconds
        return True  # an anchor kind we do not know: assume the worst (not vacuous)
