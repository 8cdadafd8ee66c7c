"""Delta debugging (Zeller's ddmin) over a failing set of faults: keep only
the faults the failure needs. Each test is a real run, so the number of
tests matters more than elegance: single faults are tried first (most bugs
found by LDFI need one or two faults), then complements, then finer splits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def ddmin(items: Sequence[T], fails: Callable[[list[T]], bool]) -> list[T]:
    """A 1-minimal subset of `items` for which `fails` holds (removing any one
    element makes it pass), assuming `fails(list(items))`. `fails` is never
    called twice with the same subset, nor with the empty set."""
    seen: dict[tuple[int, ...], bool] = {}
    index = {id(x): i for i, x in enumerate(items)}

    def test(subset: list[T]) -> bool:
        key = tuple(sorted(index[id(x)] for x in subset))
        if key not in seen:
            seen[key] = bool(subset) and fails(subset)
        return seen[key]

    current = list(items)
    if len(current) > 2:
        for x in current:  # cheapest win first: one fault alone
            if test([x]):
                return [x]
    n = 2
    while len(current) >= 2:
        chunks = _split(current, n)
        reduced = False
        for chunk in chunks:  # a chunk alone fails: keep only it
            if test(chunk):
                current, n, reduced = chunk, 2, True
                break
        if not reduced:
            for chunk in chunks:  # without one chunk it still fails: drop it
                rest = [x for x in current if all(x is not y for y in chunk)]
                if len(chunks) > 2 and test(rest):  # with 2, the rest is the other chunk
                    current, n, reduced = rest, max(n - 1, 2), True
                    break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    return current


def _split(items: list[T], n: int) -> list[list[T]]:
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            out.append(items[start:end])
        start = end
    return out
