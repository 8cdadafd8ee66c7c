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
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from ldfi.faults import Fault, FaultModel
from ldfi.lineage import Support

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
    for group in support.groups:
        copies = [_killers(m, models, view, admits, found, logical_keys) for m in group]
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
