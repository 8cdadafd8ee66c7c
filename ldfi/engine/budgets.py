"""The budget as reports show it: JSON, one line, and the assumptions a
certification under it rests on."""

from __future__ import annotations

from typing import Any

from ldfi.solver.budget import Budget


def budget_json(budget: Budget) -> dict[str, Any]:
    return {
        "kinds": list(budget.kinds),
        "max_faults": budget.max_faults,
        "max_crashes": budget.max_crashes,
        "per_kind": dict(budget.max_per_kind),
        "horizon": budget.horizon,
        "include_client": budget.include_client,
    }


def describe_budget(budget: Budget) -> str:
    text = f"kinds {', '.join(budget.kinds)}; at most {budget.max_faults} fault(s)"
    if budget.max_crashes and any(k in budget.kinds for k in ("crash", "restart")):
        text += f", {budget.max_crashes} crash(es)"
    for kind, cap in sorted(budget.max_per_kind.items()):
        text += f", {cap} {kind}"
    if budget.horizon is not None:
        text += f"; horizon {budget.horizon}"
    return text


def budget_assumptions(budget: Budget) -> list[str]:
    out = [f"at most {budget.max_faults} simultaneous fault(s) of the kinds "
           f"{', '.join(budget.kinds)}"]
    if budget.horizon is not None:
        out.append(f"faults only before message ordinal / send number {budget.horizon} "
                   "(Molly's end of finite failures)")
    if not budget.include_client:
        out.append("the workload's and the check's own messages are not faulted")
    return out
