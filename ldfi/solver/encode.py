"""The hitting-set formula over classes of interchangeable candidates, in z3.

A class is a set of candidate faults of one kind (and one exclusivity key)
with the same profile in every support (reduce.py). One integer n_c per class
says how many of its members a hypothesis takes; "some member of c" is
n_c >= 1. Per support s:

    OR( n_c >= 1 for classes c holding token "S" in s,
        G_g for each retransmission group g of s )
    G_g  -> AND over copies a of g: lost_a
    lost_a = OR( n_c >= 1 for classes holding ("p", a),
                 Q[s, chain, J] for each (chain, J) of a )
    Q[s, chain, J] -> Q[s, chain, J-1] OR OR( n_c >= 1 : c holds ("c", chain, J) )

Budget: sum n_c <= max_faults; per kind <= its cap; crash-like kinds <=
max_crashes; per exclusivity key <= 1. A solution is a count vector; every
choice of members it allows is a hypothesis that hits every support.

A support learned under faults binds only hypotheses holding them all
(`given`): its hit is a literal h_s, asserted under that guard. The literal
`all_hit` (h_s for every such support) splits the solutions in two tiers:
those that also break the conditional supports (Molly's hypotheses, who
binds every support: they leave no known way to the outcome open, so they
go first) and those that break only what binds them (the rest of a sound
search). `next_vector(k, tier)` asks within one tier; the tiers are disjoint
because a conditional support's flags are definitions (see `_support`).

The formula is written as SMT-LIB text and parsed by z3 in one call: building
it through z3's Python API costs ~20 us per term, which at 10^4 classes was
most of the time to the first hypothesis.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass

import z3

from ldfi.faults import Fault, registry

from .budget import Budget
from .reduce import SINGLE, Shape, Token

_VALUE = re.compile(r"\(define-fun n(\d+) \(\) Int\s+(\d+)\)")


@dataclass
class Klass:
    """Interchangeable candidates (sorted) and their profile in each support."""

    members: list[Fault]
    kind: str
    exclusive: Hashable | None
    profiles: dict[int, frozenset[Token]]  # support index -> tokens (absent: none)
    coarse: bool = True  # a fault Molly's coarser model has too (see Hypotheses)


def _or(terms: list[str]) -> str:
    if not terms:
        return "false"
    return terms[0] if len(terms) == 1 else f"(or {' '.join(terms)})"


def _sum(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"(+ {' '.join(names)})"


class Formula:
    def __init__(self, classes: list[Klass], supports: list[Shape],
                 budget: Budget, given: list[frozenset[Fault]] | None = None) -> None:
        self.classes = classes
        self._names = [f"n{i}" for i in range(len(classes))]
        self._lines: list[str] = [f"(declare-const {n} Int)" for n in self._names]
        self._budget(budget)
        class_of = {f: i for i, c in enumerate(classes) for f in c.members}
        self._conditional: list[str] = []  # h_s of the supports learned under faults
        for s, shape in enumerate(supports):
            under = (given or [])[s] if given and s < len(given) else frozenset()
            self._support(s, shape, [class_of[f] for f in sorted(under) if f in class_of])
        self._lines.append("(declare-const all_hit Bool)")
        self._lines.append(f"(assert (= all_hit (and {' '.join(self._conditional)} true)))")
        self.tiers = 2 if self._conditional else 1
        fine = [self._names[i] for i, c in enumerate(classes) if not c.coarse]
        self._lines.append("(declare-const coarse Bool)")
        self._lines.append(f"(assert (= coarse (and {' '.join(f'(= {n} 0)' for n in fine)} true)))")
        self.grains = (True, False) if fine else (True,)
        # a context of its own: z3's answers depend on the order its terms were
        # created, so a shared context would make the order of hypotheses
        # depend on what else the process did
        self.solver = z3.SolverFor("QF_LIA", ctx=z3.Context())
        self.solver.from_string("\n".join(self._lines))
        self._lines = []
        self._all_hit = z3.Bool("all_hit", self.solver.ctx)
        self._coarse = z3.Bool("coarse", self.solver.ctx)
        self._scope: tuple[int, int, bool] | None = None  # (size, tier, coarse) whose scope is open

    def _hit(self, i: int) -> str:
        return f"(>= n{i} 1)"

    def _budget(self, budget: Budget) -> None:
        out = self._lines
        per_kind: dict[str, list[str]] = {}
        per_key: dict[Hashable, list[str]] = {}
        crashes: list[str] = []
        for c, name in zip(self.classes, self._names, strict=True):
            top = min(len(c.members), budget.cap(c.kind))
            if c.exclusive is not None:
                top = min(top, 1)
                per_key.setdefault((c.kind, c.exclusive), []).append(name)
            out.append(f"(assert (and (>= {name} 0) (<= {name} {top})))")
            per_kind.setdefault(c.kind, []).append(name)
            if registry.get(c.kind).crashes_node:
                crashes.append(name)
        if self._names:
            out.append(f"(assert (<= {_sum(self._names)} {budget.max_faults}))")
        for kind, names in per_kind.items():
            out.append(f"(assert (<= {_sum(names)} {budget.cap(kind)}))")
        for names in per_key.values():
            if len(names) > 1:
                out.append(f"(assert (<= {_sum(names)} 1))")
        if crashes:
            out.append(f"(assert (<= {_sum(crashes)} {budget.max_crashes}))")

    def _support(self, s: int, shape: Shape, under: list[int]) -> None:
        """This support must lose a whole group; if it was learned under faults,
        only when all of them (each a class of its own) are chosen. The group
        and chain flags of an unconditional support only need to imply what
        they stand for (z3 sets them when it can); a conditional one's flags
        are definitions, so that its hit literal h_s is exactly "the set
        breaks it" and the tiers split the sets exactly."""
        op = "=" if under else "=>"
        holders: dict[Token, list[int]] = {}
        for i, c in enumerate(self.classes):
            for token in c.profiles.get(s, ()):
                holders.setdefault(token, []).append(i)
        terms = [self._hit(i) for i in holders.get(SINGLE, [])]
        chains: dict[Hashable, int] = {}  # chain -> its number in this support's names
        made: dict[int, int] = {}  # chain number -> how many of its Q are declared
        for g, group in enumerate(shape.groups):
            lost = []
            for atom in group:
                refs = [self._chain(s, chain, chains.setdefault(chain, len(chains)), j,
                                    holders, made, op) for chain, j in atom.refs]
                lost.append(_or([self._hit(i) for i in holders.get(("p", atom.id), [])] + refs))
            flag = f"g{s}_{g}"
            self._lines.append(f"(declare-const {flag} Bool)")
            self._lines.append(f"(assert ({op} {flag} (and {' '.join(lost)})))")
            terms.append(flag)
        hit = _or(terms)
        if under:
            flag = f"h{s}"
            self._lines.append(f"(declare-const {flag} Bool)")
            self._lines.append(f"(assert (= {flag} {hit}))")
            self._conditional.append(flag)
            guard = " ".join(self._hit(i) for i in under)
            hit = f"(=> (and {guard} true) {flag})"
        self._lines.append(f"(assert {hit})")

    def _chain(self, s: int, chain: Hashable, cid: int, j: int,
               holders: dict[Token, list[int]], made: dict[int, int], op: str = "=>") -> str:
        """Q[s, cid, j]: some class at interval <= j of the chain is chosen
        (declared for 0..j in order, each implying the previous one or its own)."""
        for i in range(made.get(cid, 0), j + 1):
            here = [self._hit(c) for c in holders.get(("c", chain, i), [])]
            if i > 0:
                here.append(f"q{s}_{cid}_{i - 1}")
            self._lines.append(f"(declare-const q{s}_{cid}_{i} Bool)")
            self._lines.append(f"(assert ({op} q{s}_{cid}_{i} {_or(here)}))")
            made[cid] = i + 1
        return f"q{s}_{cid}_{j}"

    def next_vector(self, k: int, tier: int = 0, coarse: bool = True) -> tuple[int, ...] | None:
        """A count vector with k faults in all that no earlier call returned
        (for the same k, tier and grain), or None when there is none
        (deterministic order). Tier 0 breaks every support, conditional ones
        included; tier 1 (only when `tiers` is 2) breaks what binds it but
        leaves some conditional support whole. coarse=True: only coarse
        classes; False: at least one fine one (only when `grains` has it).
        One solver scope per (k, tier, coarse): asking for another drops the
        last one."""
        if not self._names or tier >= self.tiers or coarse not in self.grains:
            return None
        s = self.solver
        if self._scope != (k, tier, coarse):
            if self._scope is not None:
                s.pop()
            s.push()
            s.from_string(f"(assert (= {_sum(self._names)} {k}))")
            s.add(self._all_hit if tier == 0 else z3.Not(self._all_hit))
            s.add(self._coarse if coarse else z3.Not(self._coarse))
            self._scope = (k, tier, coarse)
        if s.check() != z3.sat:
            return None
        # read the model as text: one regex instead of an eval per class
        v = [0] * len(self._names)
        for i, value in _VALUE.findall(s.model().sexpr()):
            v[int(i)] = int(value)
        # the sum is fixed, so fixing the non-zero entries fixes the vector
        fixed = " ".join(f"(= n{i} {x})" for i, x in enumerate(v) if x)
        s.from_string(f"(assert (not (and {fixed} true)))")
        return tuple(v)
