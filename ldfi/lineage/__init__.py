"""The lineage of a good run: which messages its outcome depended on.

    lin = lineage(trace)                  # default outcome: the client's receives
    lin = lineage(trace, Outcome(node="client", payload="OK"))
    lin.support                           # groups of MessageFacts, for the solver
    seq in lin                            # is this event in the causal past?

See docs/lineage-and-solver.md.
"""

from __future__ import annotations

from ldfi.faults.model import LineageView, MessageFacts

from .build import CLIENTS, Lineage, Support, causal_past, lineage, message_facts
from .outcome import Outcome

__all__ = [
    "CLIENTS",
    "Lineage",
    "LineageView",
    "MessageFacts",
    "Outcome",
    "Support",
    "causal_past",
    "lineage",
    "message_facts",
]
