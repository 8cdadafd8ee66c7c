"""What the good outcome of a run is, as events of the trace.

By default: everything the client (the workload and the check, which run in
the "client" namespace) received, and its last event. The check reads the
nodes over the network, so what it learned is in its receives, and their
causal past is what made the outcome good. `[outcome]` in the scenario can
narrow that down to the events of one node whose payload matches a regex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ldfi.errors import UserError
from ldfi.trace.model import Trace

ON = ("recv", "send", "any")


@dataclass(frozen=True)
class Outcome:
    """node:    whose events the outcome is
    payload: a regex (Python re, searched in the captured payload prefix as
             latin-1 text, so any byte matches itself); None = every receive of
             `node` and its last event
    on:      with a payload: match receives, sends, or both"""

    node: str = "client"
    payload: str | None = None
    on: str = "any"

    def __post_init__(self) -> None:
        if self.on not in ON:
            raise ValueError(f"on must be one of {', '.join(ON)}, not {self.on!r}")
        if self.payload is not None:
            re.compile(self.payload)  # re.error early, not at the first run

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any] | None, where: str = "[outcome]") -> Outcome:
        """From a scenario's [outcome] table (absent or None values = defaults)."""
        table = {k: v for k, v in (table or {}).items() if v is not None}
        unknown = sorted(set(table) - {"node", "payload", "on"})
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r}; "
                            "accepted keys: node, payload, on")
        for key in ("node", "payload", "on"):
            if key in table and not isinstance(table[key], str):
                raise UserError(f'{where}: {key} must be a string, e.g. {key} = "..."')
        try:
            return cls(**table)
        except (ValueError, re.error) as err:
            raise UserError(f"{where}: {err}; e.g. payload = 'OK' and on = \"recv\"") from None

    def events(self, trace: Trace) -> list[int]:
        """The outcome's event seqs in `trace` (UserError when there are none:
        an outcome that matches nothing would certify anything)."""
        mine = [e for e in trace.events if e.node == self.node]
        if self.payload is None:
            seqs = {e.seq for e in mine if e.is_recv}
            if mine:
                seqs.add(max(mine, key=lambda e: (e.ts, e.seq)).seq)
        else:
            pattern = re.compile(self.payload)
            want_recv, want_send = self.on in ("recv", "any"), self.on in ("send", "any")
            seqs = {e.seq for e in mine
                    if ((want_recv and e.is_recv) or (want_send and e.is_send))
                    and pattern.search(e.payload.decode("latin-1"))}
        if not seqs:
            what = f"events of {self.node!r}" if self.payload is None else (
                f"{self.on} events of {self.node!r} matching {self.payload!r}")
            raise UserError(f"the outcome matched nothing in run {trace.meta.get('run', '?')!r}: "
                            f"no {what}; check [outcome] against the trace (ldfi export)")
        return sorted(seqs)
