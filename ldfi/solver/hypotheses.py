"""Fault hypotheses: the LDFI search state across runs.

    hyp = Hypotheses(Budget(max_faults=2))
    hyp.add_support(lineage(good_trace).support)
    while (faults := hyp.next()) is not None:
        ...run with faults; if the outcome still holds:
        hyp.add_support(lineage(that_trace).support)

`next()` proposes a set of faults that, by the fault models' killers, breaks
every support seen so far (the outcome's every known derivation loses a
message group), within the budget, never one proposed or marked tried
before, first among the sets that break the conditional supports too (see
`add_support`), then among the rest; within each, by size (`order`: the
largest sets first by default, Molly's smallest first on request). None
means no such set is left:
certified within the budget (or, for "random"/"exhaustive", the space of
candidates seen so far is used up).

Candidates are the faults some support's killers named. Those with the same
profile in every support (reduce.py) form a class; z3 solves over classes
(encode.py) and the members of a solution's classes are enumerated here,
so a 100k-message support is a formula of a handful of variables.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from operator import attrgetter

from ldfi.errors import UserError
from ldfi.faults import Fault, MessageAnchor, SendAnchor, registry
from ldfi.lineage import Support

from .budget import Budget
from .encode import Formula, Klass
from .reduce import SINGLE, Found, Shape, Token, reduce_support
from .space import Space

STRATEGIES = ("ldfi", "random", "exhaustive")
# Sizes of the ldfi strategy's sets. "largest" (default): a large set whose run
# keeps the outcome teaches a support that every subset of it leaves whole,
# so one run rules them all out, and a bug that needs the whole budget comes
# first; the engine's ddmin then finds the minimal counterexample. "smallest":
# Molly's order; the first failing set is minimal in size.
ORDERS = ("largest", "smallest")
_RANDOM_TRIES = 1000  # samples before falling back to a scan for an untried set
# Within one scope the solver's vectors are taken up to 64 at a time and
# their sets run by preference(); beyond a window the order is z3's. A z3
# call costs about in proportion to the classes, so the window shrinks with
# them (to 1, z3's order, from 8k classes): a 100k-message support's first
# hypothesis would otherwise wait for 64 calls of half a second each.
VECTOR_WINDOW = 64
WINDOW_WORK = VECTOR_WINDOW * 256  # window x classes: the full window up to 256 classes
# A pause this long between two of a node's sends (in the support) ends a
# round, as a receive does: its timer fired (a retry, a heartbeat, a
# timeout). The sends of one round (a broadcast) are microseconds apart; the
# models' ticks are 50 ms. Only the order of the search depends on it.
ROUND_GAP_NS = 5_000_000

_Sig = tuple[object, ...]  # ("root", kind, key) | (parent id, support index, profile)


class Hypotheses:
    """The search. strategy: "ldfi" (hitting sets of the supports, z3),
    "random" (uniform over every fault set the budget admits over the
    candidates seen so far, seeded), "exhaustive" (all those sets in order)."""

    def __init__(self, budget: Budget | None = None, *, strategy: str = "ldfi",
                 seed: int = 0, order: str = "largest") -> None:
        if strategy not in STRATEGIES:
            raise UserError(f"unknown search strategy {strategy!r}: use one of "
                            f"{', '.join(STRATEGIES)}")
        if order not in ORDERS:
            raise UserError(f"unknown hypothesis order {order!r}: use one of {', '.join(ORDERS)}")
        self.budget = (budget or Budget()).check()
        self.strategy = strategy
        self.order = order
        self._rng = random.Random(seed)
        self._models = registry.models(self.budget.kinds)
        self._sig: dict[Fault, int] = {}  # candidate -> its signature (class) id
        self._sig_ids: dict[_Sig, int] = {}
        self._sigs: list[_Sig] = []
        self._shapes: list[Shape] = []
        self._given: list[frozenset[Fault]] = []  # per support: the faults it was learned under
        self._anchors: dict[Hashable, dict[Fault, float]] = {}  # logical chain -> fault -> place
        self._placed: dict[Fault, list[tuple[Hashable, float]]] = {}  # fault -> its chains
        self._tried: set[frozenset[Fault]] = set()
        self.incomplete_supports = 0  # supports from traces that lost events
        self._dirty = True
        self._classes: list[Klass] = []
        self._space: Space | None = None
        self._pending: Iterator[frozenset[Fault]] = iter(())
        self._formula: Formula | None = None
        self._scopes: Iterator[tuple[int, int, bool]] = iter(())  # see _next_ldfi
        self._scope: tuple[int, int, bool] | None = None
        # node -> its send indices that open a round: 0, and every k such
        # that a message reached it after its k-th send and before its next
        self._rounds: dict[str, set[int]] = {}
        self._vacuous: list[frozenset[Fault]] = []  # see add_vacuous
        self._postponed: deque[frozenset[Fault]] = deque()  # this scope's sets holding one
        self._silenced: deque[frozenset[Fault]] = deque()  # this scope's sets holding a silencer
        self._scope_exhausted = False  # the solver has no vector left in this scope
        # message -> its sender's send index, as last seen in a support (see moot)
        self._send_index: dict[Hashable, int] = {}
        self._damage: dict[Fault, int] = {}  # see damage()
        self._damage_chain: dict[Fault, Hashable | None] = {}  # the chain it was measured on
        self._silencers: set[Fault] = set()  # see preference()

    # ---------------------------------------------------------------- input

    def add_support(self, support: Support, given: Iterable[Fault] = ()) -> None:
        """What a good run's outcome depended on: from now on every proposal
        must break it too, or, for a support learned under faults (`given`:
        those that fired in that run), every proposal that contains them all.
        A run under faults may reach the outcome in a way that exists only
        because of those faults (a timeout firing on a message they removed):
        without them that way is not open, so it rules nothing out."""
        faultable = support.view(self.budget.include_client).faultable
        shape, found = reduce_support(support, self._models, self.budget.include_client,
                                      lambda f: self.budget.admits(f, faultable),
                                      self.budget.max_faults)
        s = len(self._shapes)
        self._shapes.append(shape)
        self._learn_rounds(support)
        given = frozenset(given)
        self._given.append(given)
        for chain, placed in found.logical.items():
            known = self._anchors.setdefault(chain, {})
            for fault, at in placed.items():
                if fault not in known:  # a fault's place on a logical chain is fixed
                    known[fault] = at
                    self._placed.setdefault(fault, []).append((chain, at))
        tokens: dict[Fault, set[Token]] = {}
        for fault in found.single_points:
            tokens.setdefault(fault, set()).add(SINGLE)
        for fault, atoms in found.atom_points.items():
            tokens.setdefault(fault, set()).update(("p", a) for a in atoms)
        for fault in given:  # a token of its own: each given fault is a class alone
            tokens.setdefault(fault, set()).add(("given", s, fault))
        for chain, placed in found.local.items():
            for fault, at in placed.items():
                tokens.setdefault(fault, set()).update(shape.chain_tokens(chain, at))
        for chain in shape.logical:  # every fault on it, from any run, reaches this one
            for fault, at in self._anchors.get(chain, {}).items():
                tokens.setdefault(fault, set()).update(shape.chain_tokens(chain, at))
        self._learn_damage(found, tokens, fault_free=s == 0)
        for fault, mine in tokens.items():
            old = self._sig.get(fault)
            sig = old if old is not None else self._history(fault, s)
            if mine:
                sig = self._intern((sig, s, frozenset(mine)))
            if old is not None or sig != self._root(fault):  # new: only if it kills something
                self._sig[fault] = sig
        self.incomplete_supports += not support.complete
        self._dirty = True

    def _learn_damage(self, found: Found, faults: Iterable[Fault], fault_free: bool) -> None:
        """Each fault's damage in this support (see damage()), and, in the
        first support (the fault-free run's), whether it silences the
        protocol (see preference()). A fault first named by a later support
        is measured from then on: an ordering heuristic, not the formula."""
        local: dict[Fault, list[tuple[Hashable, float]]] = {}
        for chain, placed in found.local.items():
            for fault, at in placed.items():
                local.setdefault(fault, []).append((chain, at))
        for fault in faults:
            chains = local.get(fault, []) + self._placed.get(fault, [])
            kills = found.kills(fault, chains)
            if kills > self._damage.get(fault, 0):
                self._damage[fault] = kills
                self._damage_chain[fault] = chains[0][0] if chains else None
            if (fault_free and 0 < found.root_count <= kills
                    and found.kills(fault, chains, among_roots=True) == found.root_count):
                self._silencers.add(fault)

    def mark_tried(self, hypothesis: Iterable[Fault]) -> None:
        """Never propose this exact set (its supersets stay possible)."""
        self._tried.add(frozenset(hypothesis))

    def add_vacuous(self, fired: Iterable[Fault]) -> None:
        """A run under these faults held only vacuously: they removed the
        outcome's premise (no write acknowledged, no vote cast), so it taught
        no support. A set holding them all most likely removes it again:
        within each size such sets come after the others. If some of them
        crash a node (crash, restart), those are blamed alone: a crash takes
        the node's future (its acknowledgements, its votes; a restarted node
        comes back without its state), a lost message one step of it, so
        every set holding that crash is put off, not just this one's
        supersets (kafka-isr: the leader crashed before it acknowledged
        anything, with any two cuts, is vacuous every time)."""
        fired = frozenset(fired)
        crashes = frozenset(f for f in fired if registry.get(f.kind).crashes_node)
        blamed = crashes or fired
        if blamed and blamed not in self._vacuous:
            self._vacuous.append(blamed)

    def damage(self, hypothesis: Iterable[Fault]) -> int:
        """How much of the known supports a set destroys: per fault, the most
        messages it kills in any one support (a crash: the node's later sends
        and receives; a cut: the rest of its flow; an omission: its message),
        summed; of several faults on one chain only the most damaging counts,
        since on a chain the earlier fault kills all the later one does (two
        cuts of one flow lose what the first alone loses)."""
        total = 0
        per_chain: dict[Hashable, int] = {}
        for f in hypothesis:
            d = self._damage.get(f, 0)
            chain = self._damage_chain.get(f)
            if chain is None:
                total += d
            else:
                per_chain[chain] = max(d, per_chain.get(chain, 0))
        return total + sum(per_chain.values())

    def preference(self, hypothesis: Iterable[Fault]) -> tuple[int, int]:
        """Within a scope the search runs the sets with the smallest key first
        (rule 1 exactly, rule 2 by windows of the solver's count vectors, and
        within one vector by its classes' member order):
        1. fewer faults that alone silence the protocol: that kill the first
           messages between its nodes in the fault-free run, and so all that
           followed from them (reduce.roots; the initiator's crash before its
           first send). Such a run has nothing left of what the check asks
           about: it holds vacuously, or by the design of every protocol (a
           participant that never shows up times out).
        2. more damage: the node the outcome leans on most (the coordinator,
           the leader, the broadcaster) before one that only answers the
           check, and of one node's crash points the earlier first, whose
           run, if it holds, teaches a support the later ones leave whole."""
        h = list(hypothesis)
        return sum(1 for f in h if f in self._silencers), -self.damage(h)

    def was_tried(self, hypothesis: Iterable[Fault]) -> bool:
        return frozenset(hypothesis) in self._tried

    def moot(self, hypothesis: Iterable[Fault]) -> frozenset[Fault]:
        """The faults of `hypothesis` that, by the runs seen so far, cannot fire
        in its run: anchored on a message whose sender another fault of the set
        takes down before sending it. Such a set is the smaller one without
        them in disguise: {crash(a, before send 1), omission(a->b:udp0#3)} is
        the crash alone. A prediction from send indices of earlier runs (the
        faults' run may send in another order): ldfi.engine.equivalence
        checks it against the smaller set's run before the set is skipped."""
        h = frozenset(hypothesis)
        down: dict[str, int] = {}  # node -> the earliest send it is taken down before
        for point in filter(None, map(_down_point, h)):
            node, nth = point
            down[node] = min(nth, down.get(node, nth))
        if not down:
            return frozenset()
        return frozenset(f for f in h if isinstance(f.anchor, MessageAnchor)
                         and f.anchor.id.src in down
                         and self._send_index.get(f.anchor.id, -1) >= down[f.anchor.id.src])

    # --------------------------------------------------------------- output

    def next(self) -> frozenset[Fault] | None:
        """The next hypothesis (recorded as tried), or None when none is left."""
        if self._dirty:
            self._rebuild()
        if self.strategy == "random":
            found = self._next_random()
        elif self.strategy == "exhaustive":
            found = next((h for h in self._pending if h not in self._tried), None)
        else:
            found = self._next_ldfi()
        if found is not None:
            self._tried.add(found)
        return found

    @property
    def candidates(self) -> list[Fault]:
        """Every fault some support's killers named and the budget admits, sorted."""
        return sorted(self._sig, key=Fault.sort_key)

    @property
    def supports(self) -> int:
        return len(self._shapes)

    @property
    def tried(self) -> int:
        return len(self._tried)

    @property
    def classes(self) -> int:
        """How many classes of interchangeable candidates the formula has."""
        if self._dirty:
            self._rebuild()
        return len(self._classes)

    def search_space(self) -> int:
        """How many fault sets the budget admits over the candidates known so
        far (exact): what an exhaustive search would have to run."""
        if self._dirty:
            self._rebuild()
        return self._get_space().count()

    # ------------------------------------------------------------ internals

    def _intern(self, sig: _Sig) -> int:
        found = self._sig_ids.get(sig)
        if found is None:
            found = self._sig_ids[sig] = len(self._sigs)
            self._sigs.append(sig)
        return found

    def _root(self, fault: Fault) -> int:
        return self._intern(("root", fault.kind, registry.get(fault.kind).exclusive(fault)))

    def _history(self, fault: Fault, before: int) -> int:
        """A new candidate's signature over the supports before `before`: on
        logical chains it may kill messages of runs seen before it was."""
        sig = self._root(fault)
        placed = self._placed.get(fault, ())
        for s in range(before) if placed else ():
            shape = self._shapes[s]
            mine = {t for chain, at in placed if chain in shape.logical
                    for t in shape.chain_tokens(chain, at)}
            if mine:
                sig = self._intern((sig, s, frozenset(mine)))
        return sig

    def _rebuild(self) -> None:
        """Classes, formula and space for the supports so far; the search
        restarts at the first size of its order (new candidates may make sets
        of any size possible), and skips what was tried."""
        members: dict[tuple[int, bool], list[Fault]] = {}
        for fault, sig in self._sig.items():
            members.setdefault((sig, self._coarse(fault)), []).append(fault)
        name = {f: f.sort_key() for f in self._sig}

        def best_first(f: Fault) -> tuple[object, ...]:
            return (*self.preference([f]), name[f])

        classes = (self._klass(sig, sorted(fs, key=best_first), coarse)
                   for (sig, coarse), fs in members.items())
        # by name: the formula's terms, and so z3's order among equals, as before
        self._classes = sorted(classes, key=lambda c: min(name[f] for f in c.members))
        self._space = None
        self._dirty = False
        if self.strategy == "exhaustive":
            self._pending = iter(self._get_space())
        else:
            self._pending = iter(())
        self._postponed.clear()  # the new formula's scopes yield them again if still valid
        self._silenced.clear()
        self._formula = None

    def _learn_rounds(self, support: Support) -> None:
        """Send indices (moot) and where each node's rounds start (_coarse):
        after a receive, and after a pause in its sends (ROUND_GAP_NS)."""
        last: dict[str, int] = {}  # node -> send time of its previous message here
        for m in sorted(support.messages, key=attrgetter("src", "send_index")):
            self._send_index[m.id] = m.send_index
            self._rounds.setdefault(m.src, {0})
            self._rounds.setdefault(m.dst, {0}).add(m.recv_sends_before)
            if m.src in last and m.send_ts - last[m.src] >= ROUND_GAP_NS:
                self._rounds[m.src].add(m.send_index)
            last[m.src] = m.send_ts

    def _get_space(self) -> Space:
        if self._space is None:
            self._space = Space(self._sig, self.budget)
        return self._space

    def _coarse(self, fault: Fault) -> bool:
        """Is this a fault of Molly's coarser model? Molly crashes a node at a
        time step: it stops between rounds, never inside a broadcast. Our
        crash points are finer (before any one send), which finds the
        half-done broadcasts Molly cannot express, but multiplies the crash
        candidates by the broadcasts' width. A crash-like fault is coarse
        when it falls where a round starts: before the node's first send,
        or after it received a message and before it sent again. Other
        kinds are all coarse. Within one size and tier the coarse sets go
        first; the fine ones are never left out."""
        point = _down_point(fault)
        if point is None:
            return True  # not crash-like, or a hand-written anchor: no order to keep
        node, nth = point
        return nth in self._rounds.get(node, {0})

    def _klass(self, sig: int, faults: list[Fault], coarse: bool = True) -> Klass:
        profiles: dict[int, frozenset[Token]] = {}
        node = self._sigs[sig]
        while node[0] != "root":
            parent, s, profile = node
            profiles[s] = profile  # type: ignore[index, assignment]
            node = self._sigs[parent]  # type: ignore[index]
        _, kind, key = node
        return Klass(faults, str(kind), key, profiles, coarse)

    def _next_ldfi(self) -> frozenset[Fault] | None:
        if not self._shapes:
            return None
        if self._formula is None:
            self._formula = Formula(self._classes, self._shapes, self.budget, self._given)
            # (size, tier, coarse) scopes in search order: tier, then size in
            # the order's direction, then coarse crash points before fine
            self._scopes = iter([(k, tier, coarse) for tier in range(self._formula.tiers)
                                 for k in self._sizes() for coarse in self._formula.grains])
            self._scope = next(self._scopes)
            self._scope_exhausted = False
        while True:
            for h in self._pending:
                if h in self._tried:
                    continue
                if self._blamed(h):
                    self._postponed.append(h)
                elif not self._silencers.isdisjoint(h):
                    self._silenced.append(h)
                else:
                    return h
            if self._scope is None:
                return None
            window = None if self._scope_exhausted else self._next_window()
            if window is not None:
                self._pending = window
                continue
            self._scope_exhausted = True
            last = self._scope_tail()
            if last is not None:
                return last
            self._scope = next(self._scopes, None)
            self._scope_exhausted = False

    def _blamed(self, h: frozenset[Fault]) -> bool:
        """Does `h` hold what a vacuous run was blamed on (add_vacuous)?"""
        return any(v <= h for v in self._vacuous)

    def _scope_tail(self) -> frozenset[Fault] | None:
        """The scope's last sets, once the solver has none left: those that
        silence the protocol (preference()), then those add_vacuous put off
        (a silencing set a vacuous run has since blamed goes with them)."""
        while self._silenced:
            h = self._silenced.popleft()
            if self._blamed(h):
                self._postponed.append(h)
            elif h not in self._tried:
                return h
        while self._postponed:
            h = self._postponed.popleft()
            if h not in self._tried:
                return h
        return None

    def _next_window(self) -> Iterator[frozenset[Fault]] | None:
        """The scope's next window of count vectors' sets, merged by
        preference (each vector's sets come in its classes' member order,
        which is by preference; ties keep z3's order), or None when the scope
        has no vector left."""
        assert self._formula is not None and self._scope is not None
        size = max(1, min(VECTOR_WINDOW, WINDOW_WORK // max(1, len(self._classes))))
        window = []
        while (len(window) < size
               and (v := self._formula.next_vector(*self._scope)) is not None):
            window.append(self._choices(v))
        return heapq.merge(*window, key=self.preference) if window else None

    def _sizes(self) -> range:
        """Set sizes in the order they are searched."""
        if self.order == "smallest":
            return range(1, self.budget.max_faults + 1)
        return range(self.budget.max_faults, 0, -1)

    def _choices(self, vector: tuple[int, ...]) -> Iterator[frozenset[Fault]]:
        """Every way to take vector[c] members of each class c, in order, made
        lazily (a class may have 10^5 members: never materialize the product)."""
        parts = [(c.members, n) for c, n in zip(self._classes, vector, strict=True) if n]
        for combo in _product(parts):
            yield frozenset(combo)

    def _next_random(self) -> frozenset[Fault] | None:
        space = self._get_space()
        untried = space.count() - sum(1 for h in self._tried if space.admits(h))
        if untried <= 0:
            return None
        for _ in range(_RANDOM_TRIES):
            h = space.sample(self._rng)
            if h is not None and h not in self._tried:
                return h
        # nearly used up: take the first untried set, in order
        return next((h for h in space if h not in self._tried), None)


def _down_point(fault: Fault) -> tuple[str, int] | None:
    """(node, nth) of a crash-like fault anchored before a node's nth send,
    counting all its sends (the anchors the lineage's killers name); None for
    other kinds and for hand-written anchors filtered by destination or
    payload."""
    anchor = fault.anchor
    if (not registry.get(fault.kind).crashes_node or not isinstance(anchor, SendAnchor)
            or anchor.to is not None or anchor.payload is not None):
        return None
    return anchor.node, anchor.nth


def _product(parts: list[tuple[list[Fault], int]]) -> Iterator[tuple[Fault, ...]]:
    """itertools.product of combinations(members, n) per part, without
    itertools.product's up-front materialization of its inputs."""
    if not parts:
        yield ()
        return
    (members, n), rest = parts[0], parts[1:]
    for head in itertools.combinations(members, n):
        for tail in _product(rest):
            yield head + tail
