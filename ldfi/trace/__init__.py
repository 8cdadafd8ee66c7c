"""A run's happens-before trace, built from the tracer's decoded events.

    trace = build_trace(events, Topology(addresses={"client": ..., "n1": ...}))
    trace.messages          # Message: logical id, src/dst, receives reached, ...
    trace.edges             # Edge(src seq, dst seq, kind)
    trace.vector_clocks     # seq -> {"node/pid/tid": count}
    happens_before(trace, a, b)

See docs/trace.md for the model and the matching rules.
"""

from __future__ import annotations

from tracer.events import Event

from .graph import CycleError, VectorClocks, concurrent, happens_before, thread_key
from .graph import build_edges as _build_edges
from .graph import vector_clocks as _vector_clocks
from .ids import assign_ids, payload_hash
from .matching import match
from .model import EDGE_KINDS, Edge, Message, MessageId, Topology, Trace

__all__ = [
    "EDGE_KINDS",
    "CycleError",
    "Edge",
    "Message",
    "MessageId",
    "Topology",
    "Trace",
    "VectorClocks",
    "build_trace",
    "concurrent",
    "happens_before",
    "payload_hash",
    "thread_key",
]


def build_trace(events: list[Event], topology: Topology, *, lost_events: int = 0,
                meta: dict[str, str] | None = None) -> Trace:
    """Messages, edges and vector clocks of one run's events (any order; kept
    sorted by seq). Raises CycleError if the matched edges contradict time."""
    events = sorted(events, key=lambda e: e.seq)
    matched = match(events, topology)
    messages = assign_ids(matched.sends)
    edges = _build_edges(events, matched, messages)
    clocks = _vector_clocks(events, edges)
    return Trace(dict(meta or {}), topology, events, messages, edges, clocks, lost_events)
