"""One support, reduced to what the hitting-set formula needs.

The formula (docs/lineage-and-solver.md) says: every support loses one whole
group, a group is lost when each of its copies is, and a copy is lost when a
fault that kills it is chosen. Written literally that is one literal per
candidate fault and, for "from then on" faults, one clause per (message,
earlier fault) pair: quadratic, and z3 is slow beyond ~10^4 literals.

Most of it is redundant. For the groups of one message, all that matters is
*whether* a fault kills one of them, so a candidate only needs the token "S"
(it alone breaks this support): for a chain that is "its place <= the latest
place of a one-message group on the chain" (`reach`). Only retransmission
groups (several copies) need more: one token per copy a point fault kills,
and on each chain one token per interval between consecutive copy places
(faults in one interval kill the same copies). A candidate's *profile* (its
tokens in each support) is what the solver groups candidates by: candidates
with equal profiles everywhere are interchangeable in the formula.

Everything kept here is in places, not in positions among known faults, so a
fault first seen in a later run gets its profile in this one too (on logical
chains, see Killer).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ldfi.faults import Fault, FaultModel
from ldfi.lineage import Support
from ldfi.trace.model import MessageId

SINGLE = "S"  # token: kills a whole one-message group of this support
Token = Hashable  # SINGLE | ("p", atom) | ("c", chain, interval)


@dataclass(frozen=True, slots=True)
class Atom:
    """One copy of a retransmitted message: lost if a class holding token
    ("p", id) is chosen, or, for each (chain, J) in refs, one holding a token
    ("c", chain, j) with j <= J."""

    id: int
    refs: tuple[tuple[Hashable, int], ...]


@dataclass
class Shape:
    """What the solver keeps of one support."""

    reach: dict[Hashable, float]  # chain -> latest place of a one-message group on it
    atom_places: dict[Hashable, list[float]]  # chain -> distinct places of copies, sorted
    groups: list[list[Atom]]  # retransmission groups (several copies)
    logical: frozenset[Hashable]  # the logical chains this support's messages are on

    def chain_tokens(self, chain: Hashable, place: float) -> Iterator[Token]:
        """Tokens of a fault placed at `place` on `chain`."""
        reach = self.reach.get(chain)
        if reach is not None and place <= reach:
            yield SINGLE
        places = self.atom_places.get(chain)
        if places:
            j = bisect_left(places, place)  # it kills the copies at places >= its own
            if j < len(places):
                yield ("c", chain, j)


@dataclass
class Found:
    """The candidates one support names, as the solver needs them once."""

    single_points: set[Fault] = field(default_factory=set)
    atom_points: dict[Fault, list[int]] = field(default_factory=dict)
    local: dict[Hashable, dict[Fault, float]] = field(default_factory=dict)  # per-run chains
    logical: dict[Hashable, dict[Fault, float]] = field(default_factory=dict)
    # what the search orders by (Hypotheses.preference), not what the formula
    # needs: each message's latest place on each of its chains, sorted per
    # chain, and how many messages each point fault kills; the same for the
    # protocol's first messages (see roots()), and how many those are
    places: dict[Hashable, list[float]] = field(default_factory=dict)
    point_kills: dict[Fault, int] = field(default_factory=dict)
    root_places: dict[Hashable, list[float]] = field(default_factory=dict)
    root_point_kills: dict[Fault, int] = field(default_factory=dict)
    root_count: int = 0

    def kills(self, fault: Fault, chains: Iterable[tuple[Hashable, float]],
              among_roots: bool = False) -> int:
        """How many of this support's messages (among_roots: of its first
        messages) `fault` kills, placed at these (chain, place)s: those at or
        after its place on a chain, and those it kills as a point fault."""
        places = self.root_places if among_roots else self.places
        n = (self.root_point_kills if among_roots else self.point_kills).get(fault, 0)
        for chain, at in chains:
            on_chain = places.get(chain)
            if on_chain:
                n += len(on_chain) - bisect_left(on_chain, at)
        return n

    def add_message(self, copy: _Copy, root: bool) -> None:
        """Count one message's killers for kills() (sorted by reduce_support)."""
        _add_killers(copy, self.point_kills, self.places)
        if root:
            self.root_count += 1
            _add_killers(copy, self.root_point_kills, self.root_places)


def _add_killers(copy: _Copy, point_kills: dict[Fault, int],
                 places: dict[Hashable, list[float]]) -> None:
    points, refs = copy
    for f in points:
        point_kills[f] = point_kills.get(f, 0) + 1
    for chain, at in refs.items():
        places.setdefault(chain, []).append(at)


def roots(support: Support) -> set[MessageId]:
    """The protocol's first messages: those between nodes (neither end a
    client) whose sender had received none such before sending it. Every
    other such message is causally after one of them, so a fault set that
    kills them all leaves the protocol nothing to do. (A message read in
    pieces counts as heard at its last needed read: MessageFacts.)"""
    clients = support.clients
    core = [m for m in support.messages if m.src not in clients and m.dst not in clients]
    first_heard: dict[str, int] = {}  # node -> its sends before it first heard one
    for m in core:
        first_heard[m.dst] = min(m.recv_sends_before, first_heard.get(m.dst, m.recv_sends_before))
    return {m.id for m in core if m.send_index < first_heard.get(m.src, m.send_index + 1)}


_Copy = tuple[list[Fault], dict[Hashable, float]]  # point killers; chain -> its place on it


def reduce_support(support: Support, models: Sequence[FaultModel], include_client: bool,
                   admits: Callable[[Fault], bool], max_faults: int) -> tuple[Shape, Found]:
    """The support's shape and the candidates it names. With max_faults 1 a
    group is lost only by one fault that kills every copy, so each group is
    reduced exactly to one message killed by what the copies have in common."""
    view = support.view(include_client)
    found = Found()
    logical_keys: set[Hashable] = set()
    reach: dict[Hashable, float] = {}
    multi: list[list[_Copy]] = []
    first = roots(support)
    for group in support.groups:
        copies = [_killers(m, models, view, admits, found, logical_keys) for m in group]
        for m, copy in zip(group, copies, strict=True):
            found.add_message(copy, m.id in first)
        if len(copies) > 1 and max_faults == 1:
            copies = [_common(copies)]
        if any(not points and not refs for points, refs in copies):
            continue  # some copy can never be lost: neither can the group
        if len(copies) > 1:
            multi.append(copies)
            continue
        points, refs = copies[0]
        found.single_points.update(points)
        for chain, at in refs.items():
            if reach.get(chain, at) <= at:
                reach[chain] = at
    places: dict[Hashable, set[float]] = {}
    for copies in multi:
        for _, refs in copies:
            for chain, at in refs.items():
                places.setdefault(chain, set()).add(at)
    atom_places = {chain: sorted(ps) for chain, ps in places.items()}
    for ps in (*found.places.values(), *found.root_places.values()):
        ps.sort()
    groups: list[list[Atom]] = []
    aid = -1
    for copies in multi:
        group = []
        for points, refs in copies:
            aid += 1
            for f in points:
                found.atom_points.setdefault(f, []).append(aid)
            group.append(Atom(aid, tuple((chain, bisect_left(atom_places[chain], at))
                                         for chain, at in refs.items())))
        groups.append(group)
    return Shape(reach, atom_places, groups, frozenset(logical_keys)), found


def _killers(message: object, models: Sequence[FaultModel], view: object,
             admits: Callable[[Fault], bool], found: Found,
             logical_keys: set[Hashable]) -> _Copy:
    """One message's point killers and chain places; anchors go into `found`."""
    points: list[Fault] = []
    refs: dict[Hashable, float] = {}
    for model in models:
        for fault, chain, at, logical in model.killers(message, view):  # type: ignore[arg-type]
            if chain is None:
                if fault is not None and admits(fault):
                    points.append(fault)
                continue
            if refs.get(chain, at) <= at:
                refs[chain] = at
            if logical:
                logical_keys.add(chain)
            if fault is not None and admits(fault):
                placed = (found.logical if logical else found.local).setdefault(chain, {})
                if placed.get(fault, at) >= at:
                    placed[fault] = at
    return points, refs


def _common(copies: list[_Copy]) -> _Copy:
    """The killers every copy shares: the common point faults, and on each chain
    all copies are on, the place of the earliest copy."""
    shared = set(copies[0][0]).intersection(*(p for p, _ in copies[1:]))
    refs: dict[Hashable, float] = {}
    for chain in copies[0][1]:
        ats = [r[chain] for _, r in copies if chain in r]
        if len(ats) == len(copies):
            refs[chain] = min(ats)
    return [f for f in copies[0][0] if f in shared], refs
