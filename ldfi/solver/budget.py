"""The fault budget: which faults, and how many, a search may combine.

Like Molly's parameters (EOT/EFF/crashes), it bounds what "certified" means:
no hypothesis within the budget broke the outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ldfi.errors import UserError
from ldfi.faults import Fault, MessageAnchor, SendAnchor, registry

DEFAULT_KINDS = ("omission", "cut", "crash")
KEYS = ("kinds", "max_faults", "max_crashes", "per_kind", "horizon", "include_client")


@dataclass(frozen=True)
class Budget:
    """kinds:          fault kinds the search proposes (each must remove messages)
    max_faults:     faults per hypothesis, in total
    max_per_kind:   a lower cap for some kinds, e.g. {"cut": 1}
    max_crashes:    node-downing faults (crash, restart: `crashes_node` kinds)
                    per hypothesis. Default 1: crashing a majority of a
                    replicated system breaks it by definition, so more must be
                    asked for; 0 turns crashes off whatever `kinds` says
    horizon:        Molly's EFF: only faults anchored at a message with ordinal
                    < horizon or before a node's send number < horizon (sends
                    count from 0 here); None: no limit
    include_client: also fault the workload's and check's traffic and processes
    """

    kinds: tuple[str, ...] = DEFAULT_KINDS
    max_faults: int = 1
    max_per_kind: Mapping[str, int] = field(default_factory=dict)
    max_crashes: int = 1
    horizon: int | None = None
    include_client: bool = False

    def cap(self, kind: str) -> int:
        """How many faults of `kind` one hypothesis may hold (0: none)."""
        cap = self._caps.get(kind)
        if cap is None:
            cap = 0
            if kind in self.kinds:
                cap = min(self.max_faults, self.max_per_kind.get(kind, self.max_faults))
                if registry.get(kind).crashes_node:
                    cap = min(cap, self.max_crashes)
            self._caps[kind] = cap
        return cap

    @functools.cached_property
    def _caps(self) -> dict[str, int]:  # cap() is asked once per candidate: 10^5 times
        return {}

    def admits(self, fault: Fault, faultable: frozenset[str]) -> bool:
        """May a hypothesis contain this fault at all?"""
        if self.cap(fault.kind) == 0 or not fault.nodes <= faultable:
            return False
        if self.horizon is not None:
            anchor = fault.anchor
            if isinstance(anchor, MessageAnchor) and anchor.id.ordinal >= self.horizon:
                return False
            if isinstance(anchor, SendAnchor) and anchor.nth >= self.horizon:
                return False
        return True

    def check(self, where: str = "fault budget") -> Budget:
        """UserError (one line) unless every kind is installed and removes
        messages and every number makes sense; returns self."""
        known = registry.kinds()
        if not self.kinds:
            raise UserError(f"{where}: kinds is empty; e.g. kinds = {list(DEFAULT_KINDS)}")
        for kind in self.kinds:
            if kind not in known:
                raise UserError(f"{where}: unknown fault kind {kind!r} in kinds; known kinds: "
                                f"{', '.join(known)}")
            if not registry.get(kind).removes_messages:
                raise UserError(f"{where}: kind {kind!r} removes no message, so the search never "
                                "proposes it; drop it from kinds and use it in a hand-written "
                                f"plan, e.g. {registry.get(kind).example}")
        # 0 would "certify" after the fault-free run alone: that run is --no-faults
        _whole(self.max_faults, 1, f"{where}: max_faults",
               "max_faults = 2; to run once without faults, use 'ldfi run --no-faults'")
        _whole(self.max_crashes, 0, f"{where}: max_crashes", "max_crashes = 1")
        if self.horizon is not None:  # 0 would admit no fault at all: a vacuous certificate
            _whole(self.horizon, 1, f"{where}: horizon", "horizon = 5")
        for kind, n in self.max_per_kind.items():
            if kind not in self.kinds:
                raise UserError(f"{where}: per_kind names {kind!r}, which is not in kinds "
                                f"({', '.join(self.kinds)}); add it to kinds or remove it")
            _whole(n, 0, f"{where}: per_kind.{kind}", f"per_kind = {{ {kind} = 1 }}")
        if not isinstance(self.include_client, bool):
            raise UserError(f"{where}: include_client must be true or false")
        return self

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None, where: str = "[faults]") -> Budget:
        """A budget from a scenario's [faults] table (or flags given as one);
        missing or None values take the defaults. UserError on bad input."""
        values = {k: v for k, v in (table or {}).items() if v is not None}
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r}; "
                            f"accepted keys: {', '.join(KEYS)}")
        kwargs: dict[str, Any] = {}
        if "kinds" in values:
            kinds = values["kinds"]
            if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
                raise UserError(f'{where}: kinds must be a list of kind names, e.g. kinds = '
                                f'["omission", "crash"]')
            kwargs["kinds"] = tuple(dict.fromkeys(kinds))
        if "per_kind" in values:
            per_kind = values["per_kind"]
            if not isinstance(per_kind, Mapping):
                raise UserError(f"{where}: per_kind must be a table, "
                                "e.g. per_kind = { crash = 1 }")
            kwargs["max_per_kind"] = dict(per_kind)
        for key in ("max_faults", "max_crashes", "horizon", "include_client"):
            if key in values:
                kwargs[key] = values[key]
        return cls(**kwargs).check(where)


def _whole(value: object, least: int, what: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{what} must be a whole number >= {least}, not {value!r}; e.g. {example}")
