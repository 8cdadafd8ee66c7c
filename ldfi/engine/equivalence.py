"""Hypotheses a run already answered, so they need no run of their own.

A run armed with faults F in which only F' of them fired, the others'
anchors never occurring, is the run of F': a fault that never fires changes
nothing. So a hypothesis H that holds F' and whose other faults are all
anchored on things that never happened in that run *is* that run again:
until one of H's extra faults fires the two runs are the same, and none of
them can fire. This rests on the assumption every LDFI search already makes
(the system behaves the same under the same faults).

The common case is an early crash: once `crash(a, before send 1)` has run,
every hypothesis adding a fault on a message `a` would have sent later is
that crash again. Time anchors are never absent from a run that lasted past
them, and a run where a fault missed an anchor that did occur (an injector
failure) answers nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ldfi.faults import Fault

from .anchors import Occurrences


@dataclass(frozen=True)
class Answered:
    run: int  # the run's index in the search
    fired: frozenset[Fault]
    occurrences: Occurrences


class AnsweredRuns:
    def __init__(self) -> None:
        self._runs: list[Answered] = []

    def add(self, run: int, fired: Iterable[Fault], occurrences: Occurrences) -> None:
        """A run that completed with every armed fault fired or vacuous."""
        self._runs.append(Answered(run, frozenset(fired), occurrences))

    def answering(self, hypothesis: Iterable[Fault]) -> int | None:
        """The index of an earlier run that `hypothesis` would repeat, if any."""
        h = frozenset(hypothesis)
        for seen in self._runs:
            if seen.fired <= h and not any(seen.occurrences.occurred(f)
                                           for f in h - seen.fired):
                return seen.run
        return None
