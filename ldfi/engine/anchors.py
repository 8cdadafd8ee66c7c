"""Did a fault's anchor occur in a run? A fault that did not fire is either
vacuous (its anchor never happened: earlier faults changed the run) or an
injector failure (the anchor happened and the fault missed it). The first
is the meaning of the hypothesis in that run; the second must never pass as
tested."""

from __future__ import annotations

from ldfi.faults import Fault, MessageAnchor, SendAnchor, StartAnchor, TimeAnchor
from ldfi.trace.model import Trace


def anchor_occurred(fault: Fault, trace: Trace) -> bool:
    anchor = fault.anchor
    if isinstance(anchor, MessageAnchor):
        return trace.has_message(anchor.id)
    if isinstance(anchor, SendAnchor):
        matching = [m for m in trace.messages if m.src == anchor.node
                    and (anchor.to is None or m.dst == anchor.to)
                    and (anchor.payload is None or m.payload.startswith(anchor.payload))]
        return len(matching) > anchor.nth
    if isinstance(anchor, StartAnchor):
        return True
    if isinstance(anchor, TimeAnchor):
        started = int(trace.meta.get("workload_started_ns", "0") or 0)
        last = max((e.ts for e in trace.events), default=0)
        return bool(started) and last >= started + anchor.seconds * 1e9
    return True  # an anchor kind we do not know: assume the worst (not vacuous)
