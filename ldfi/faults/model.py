"""The one plugin interface: a fault model.

A fault model is one kind of fault ("cut", "crash", ...). It knows four things:

- its text form: `parse(args)` / `format(fault)`;
- which of its faults would make a given message of a good run not happen or
  not be received: `killers(message, view)`. This is what the solver turns
  into the literals of the lineage formula (docs/lineage-and-solver.md);
- which of its faults cannot be combined: `exclusive(fault)` (e.g. a node
  crashes at most once). The solver forbids two faults with the same key and
  counts the search space with it;
- how to arm one fault in the kernel: `arm(fault, resolve)`, returning the
  injector's plain-data trigger and action (tracer.faults).

Models are found through the `ldfi.fault_models` entry point group
(ldfi.faults.registry); the built-ins register the same way (kinds.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from ldfi.trace.model import MessageId
from tracer.faults import Action, SendTrigger, TimeTrigger, Trigger

from .spec import Anchor, Fault, anchor_trigger


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the lineage knows about one message of a good run, for killers().

    Times are the tracer's CLOCK_MONOTONIC ns; one clock for all nodes of a run,
    so they compare across nodes but not across runs.
    """

    id: MessageId
    proto: str  # "tcp" | "udp"
    size: int
    payload: bytes  # the captured prefix
    payload_hash: str
    send_index: int  # the sender's node-wide send index: its sends before this one
    send_ts: int  # the send's entry: where a fault anchored at this message fires
    recv_ts: int  # exit of the last receive of it that the outcome depends on
    recv_sends_before: int  # sends the receiver had completed before that receive
    # Can a trigger fire at this send (armable), and at the receiver's send
    # recv_sends_before - 1? Not at a send whose bytes leave before any
    # program sees it (sendfile, splice, send_other), a later message of one
    # sendmmsg call, or a send on an IPv6 socket: the kernel counts those
    # (ordinals stay right) but never fires there (bpf/faults.bpf.c).
    armable: bool = True
    recv_prior_armable: bool = True

    @property
    def src(self) -> str:
        return self.id.src

    @property
    def dst(self) -> str:
        return self.id.dst


@dataclass(frozen=True, slots=True)
class LineageView:
    """The run around a message: who may be faulted. `faultable` excludes the
    client (workload and check) unless the budget includes it, and addresses
    the topology did not name (a fault must name a node)."""

    run: str
    nodes: tuple[str, ...]  # every node of the run, clients included
    clients: frozenset[str] = frozenset({"client"})
    faultable: frozenset[str] = field(default_factory=frozenset)

    def others(self, node: str) -> tuple[str, ...]:
        """Every other faultable node, sorted: the far side of isolating `node`."""
        return tuple(sorted(self.faultable - {node}))


class Killer(NamedTuple):
    """One way a message gets killed.

    Point killer (`chain` None): the message is lost if `fault` is chosen.

    Chain killer: for "from then on" faults (a cut kills a message and every
    later one on its flow; a crash, every later send of the node). Places on
    one chain are ordered; the message is lost if *any* fault anchored on
    `chain` at a place <= `at` is chosen, and `fault`, if given, is such a
    fault, anchored at place `at`. Listing a chain avoids listing every
    earlier fault for every message, which is quadratic on long flows.

    Chains are keyed by anything hashable; start keys with something of your
    own kind unless two kinds mean to share a chain (crash and restart do).
    `logical`: places mean the same in every run (ordinals, send counts), so a
    fault placed from one run's lineage also kills the later messages of the
    chain in other runs. Otherwise (e.g. timestamps) the chain is per run.
    """

    fault: Fault | None
    chain: Hashable | None = None
    at: float = 0
    logical: bool = False


@dataclass(frozen=True, slots=True)
class ArmContext:
    """What arm() may need beyond the fault. Calling it resolves an anchor to a
    trigger (the default: ldfi.faults.spec.anchor_trigger)."""

    nodes: tuple[str, ...] = ()  # the scenario's nodes, without the client
    clients: tuple[str, ...] = ("client",)

    def __call__(self, anchor: Anchor) -> SendTrigger | TimeTrigger:
        return anchor_trigger(anchor)


class FaultModel(ABC):
    """One kind of fault. Subclass, set the class attributes, implement parse,
    format and arm; implement killers() if the kind removes messages (the
    solver only ever proposes faults some killers() returned)."""

    kind: ClassVar[str]  # the name in fault texts and in Budget.kinds
    summary: ClassVar[str]  # one line for `ldfi` help and docs
    example: ClassVar[str]  # a valid fault text, shown in error messages
    removes_messages: ClassVar[bool] = True  # False: never proposed by the solver
    crashes_node: ClassVar[bool] = False  # counts against Budget.max_crashes

    @abstractmethod
    def parse(self, args: list[str]) -> Fault:
        """The fault of this kind written with these arguments (the text between
        the parentheses, split at top-level commas). ValueError saying what is
        wrong with them; the caller adds where and an example."""

    @abstractmethod
    def format(self, fault: Fault) -> str:
        """The text form; parse must read it back to an equal Fault."""

    def killers(self, message: MessageFacts, view: LineageView) -> Iterable[Killer]:
        """Faults of this kind that would make `message` not happen or not be
        received. Return only faults naming nodes in view.faultable."""
        return ()

    def exclusive(self, fault: Fault) -> Hashable | None:
        """Faults of this kind with the same non-None key are never combined."""
        return None

    @abstractmethod
    def arm(self, fault: Fault, resolve: ArmContext) -> tuple[Trigger, Action]:
        """The injector's trigger and action for the fault."""
