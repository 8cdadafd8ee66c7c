"""The success predicate of the delivery models (Molly's deliv_assert):
if any correct node delivered the broadcast value, every correct node did.

A node that does not answer the status query is crashed and excluded. Each
node's status has "delivered": the list of values it delivered.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import check_parser, query_all, report


def main() -> int:
    args = check_parser(__doc__.splitlines()[0]).parse_args()
    states = query_all(args.nodes, args.port)
    correct = {name: state for name, state in states.items() if state is not None}
    values = sorted({v for state in correct.values() for v in state.get("delivered", [])})
    problems = []
    for value in values:
        have = [n for n, s in correct.items() if value in s.get("delivered", [])]
        missing = [n for n in correct if n not in have]
        if missing:
            problems.append(f"{value!r} was delivered by {', '.join(have)} but not by "
                            f"correct node(s) {', '.join(missing)}")
    summary = (f"{len(correct)} correct node(s) all delivered {values}" if values
               else "no correct node delivered anything")
    return report(states, problems, summary, vacuous=not values)


if __name__ == "__main__":
    sys.exit(main())
