"""Fault hypotheses from lineage supports (LDFI), and the baselines.

    hyp = Hypotheses(Budget.from_mapping(scenario.faults), strategy="ldfi")
    hyp.add_support(lineage(trace).support)
    faults = hyp.next()          # frozenset[Fault] | None (largest sets first)
    hyp.search_space()           # how many fault sets the budget admits

See docs/lineage-and-solver.md.
"""

from __future__ import annotations

from .budget import DEFAULT_KINDS, Budget
from .hypotheses import ORDERS, STRATEGIES, Hypotheses
from .space import Space

__all__ = ["DEFAULT_KINDS", "ORDERS", "STRATEGIES", "Budget", "Hypotheses", "Space"]
