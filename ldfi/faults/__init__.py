"""Faults: what can go wrong, as values, text, lineage killers and kernel triggers.

    fault = parse_fault("cut(client->server:tcp0#2, heal 1s)")
    str(fault)                        # the same text back
    trigger, action = arm(fault)      # tracer.faults types for the injector
    get("crash").killers(facts, view) # what a crash would remove from a good run

Every kind is a `FaultModel` plugin found through the `ldfi.fault_models` entry
point group (registry.py); the built-ins are in kinds.py. docs/fault-models.md
describes the syntax and the semantics.
"""

from __future__ import annotations

from tracer.faults import Action, Trigger

from .model import ArmContext, FaultModel, Killer, LineageView, MessageFacts
from .registry import get, kinds, models
from .spec import (
    START,
    Anchor,
    Fault,
    MessageAnchor,
    SendAnchor,
    StartAnchor,
    TimeAnchor,
    anchor_trigger,
    format_plan,
    parse_fault,
    parse_plan,
)

__all__ = [
    "START",
    "Anchor",
    "ArmContext",
    "Fault",
    "FaultModel",
    "Killer",
    "LineageView",
    "MessageAnchor",
    "MessageFacts",
    "SendAnchor",
    "StartAnchor",
    "TimeAnchor",
    "anchor_trigger",
    "arm",
    "format_plan",
    "get",
    "kinds",
    "models",
    "parse_fault",
    "parse_plan",
]


def arm(fault: Fault, context: ArmContext | None = None) -> tuple[Trigger, Action]:
    """The injector's (trigger, action) for one fault, by its kind's model."""
    return get(fault.kind).arm(fault, context or ArmContext())
