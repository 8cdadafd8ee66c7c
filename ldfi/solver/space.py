"""The fault combinations a budget admits over a set of candidate faults:
counted exactly, enumerated in order, and sampled uniformly.

Constraints: at most `max_faults` in total, at most `cap(kind)` per kind, at
most `max_crashes` node-downing faults, and never two faults of one kind with
the same exclusivity key (FaultModel.exclusive). The count is a generating
function: a kind's polynomial is the product of (1 + |group| x) over its
exclusivity groups (a fault without a key is a group of one), truncated at
the kind's cap; crash-like kinds multiply under max_crashes; all kinds
multiply under max_faults. The coefficient of x^k counts the sets of size k.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

from ldfi.faults import Fault, registry

from .budget import Budget

Poly = list[int]  # coefficients, index = number of faults


def _mul(a: Poly, b: Poly, cap: int) -> Poly:
    out = [0] * (cap + 1)
    for i, x in enumerate(a[: cap + 1]):
        if x:
            for j, y in enumerate(b[: cap + 1 - i]):
                out[i + j] += x * y
    return out


@dataclass
class _Leaf:
    """One kind's candidates, as exclusivity groups."""

    groups: list[list[Fault]]
    cap: int

    def poly(self) -> Poly:
        # elementary symmetric polynomials of the group sizes, truncated
        out = [1] + [0] * self.cap
        for g in self.groups:
            n = len(g)
            for j in range(self.cap, 0, -1):
                out[j] += out[j - 1] * n
        return out

    def sample(self, k: int, rng: random.Random) -> list[Fault]:
        # ways[i][j]: ways to pick j faults from groups i.. (one per group)
        m = len(self.groups)
        ways = [[0] * (k + 1) for _ in range(m + 1)]
        ways[m][0] = 1
        for i in range(m - 1, -1, -1):
            n = len(self.groups[i])
            for j in range(k + 1):
                ways[i][j] = ways[i + 1][j] + (n * ways[i + 1][j - 1] if j else 0)
        picked: list[Fault] = []
        for i, group in enumerate(self.groups):
            if k == 0:
                break
            take = len(group) * ways[i + 1][k - 1]
            if rng.randrange(ways[i][k]) < take:
                picked.append(group[rng.randrange(len(group))])
                k -= 1
        return picked


@dataclass
class _Product:
    """Children chosen together, at most `cap` faults in all."""

    children: list[_Leaf | _Product]
    cap: int

    def poly(self) -> Poly:
        out = [1] + [0] * self.cap
        for child in self.children:
            out = _mul(out, child.poly(), self.cap)
        return out

    def sample(self, k: int, rng: random.Random) -> list[Fault]:
        polys = [c.poly() for c in self.children]
        # suffix[i]: the product of children i.. (how many ways the rest can fill j)
        suffix = [[1] + [0] * self.cap]
        for p in reversed(polys):
            suffix.append(_mul(p, suffix[-1], self.cap))
        suffix.reverse()
        picked: list[Fault] = []
        for i, child in enumerate(self.children):
            weights = [polys[i][j] * suffix[i + 1][k - j] if j < len(polys[i]) else 0
                       for j in range(k + 1)]
            j = _choose(weights, rng)
            picked += child.sample(j, rng)
            k -= j
        return picked


def _choose(weights: list[int], rng: random.Random) -> int:
    r = rng.randrange(sum(weights))
    for i, w in enumerate(weights):
        if r < w:
            return i
        r -= w
    raise AssertionError("unreachable")


class Space:
    """Every fault set the budget admits over `candidates` (sorted)."""

    def __init__(self, candidates: Iterable[Fault], budget: Budget) -> None:
        self.budget = budget
        self.candidates = sorted(set(candidates), key=Fault.sort_key)
        self._set = frozenset(self.candidates)
        self._tree = self._build()

    def _key(self, fault: Fault) -> Hashable | None:
        key = registry.get(fault.kind).exclusive(fault)
        return None if key is None else (fault.kind, key)

    def _build(self) -> _Product:
        by_kind: dict[str, dict[object, list[Fault]]] = {}
        for i, f in enumerate(self.candidates):
            key = self._key(f)
            by_kind.setdefault(f.kind, {}).setdefault(("one", i) if key is None else key,
                                                      []).append(f)
        free: list[_Leaf | _Product] = []
        crashes: list[_Leaf | _Product] = []
        for kind, groups in sorted(by_kind.items()):
            leaf = _Leaf(list(groups.values()), self.budget.cap(kind))
            (crashes if registry.get(kind).crashes_node else free).append(leaf)
        top = min(self.budget.max_faults, self.budget.max_crashes)
        return _Product([*free, _Product(crashes, top)], self.budget.max_faults)

    def by_size(self) -> list[int]:
        """How many admitted sets have 0, 1, ..., max_faults faults."""
        return self._tree.poly()

    def count(self) -> int:
        """How many non-empty fault sets the budget admits."""
        return sum(self.by_size()[1:])

    def admits(self, faults: Iterable[Fault]) -> bool:
        """Is this set one of the space's (candidates only, within every cap)?"""
        faults = frozenset(faults)
        b = self.budget
        if not faults or len(faults) > b.max_faults:
            return False
        per_kind: dict[str, int] = {}
        keys: set[Hashable] = set()
        crashes = 0
        for f in faults:
            per_kind[f.kind] = per_kind.get(f.kind, 0) + 1
            crashes += registry.get(f.kind).crashes_node
            key = self._key(f)
            if key is not None:
                if key in keys:
                    return False
                keys.add(key)
        if crashes > b.max_crashes or any(n > b.cap(k) for k, n in per_kind.items()):
            return False
        return faults <= self._set

    def __iter__(self) -> Iterator[frozenset[Fault]]:
        """Every admitted set: by size, then in candidate order (the exhaustive
        strategy's order)."""
        for k in range(1, self.budget.max_faults + 1):
            for combo in itertools.combinations(self.candidates, k):
                if self.admits(combo):
                    yield frozenset(combo)

    def sample(self, rng: random.Random) -> frozenset[Fault] | None:
        """One admitted set, uniformly at random (None: the space is empty)."""
        sizes = self.by_size()
        sizes[0] = 0
        if not any(sizes):
            return None
        return frozenset(self._tree.sample(_choose(sizes, rng), rng))
