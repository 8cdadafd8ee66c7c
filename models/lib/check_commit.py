"""The success predicate of the commit models (Molly's 2pc_assert), over the
correct nodes (those that answer the status query):

- agreement: no correct node committed while another aborted;
- termination: if any correct agent voted, every correct node decided.

Each node's status has "decision" ("commit", "abort" or null) and, for
agents, "voted" (true once it voted yes).
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
    decided = {name: s["decision"] for name, s in correct.items() if s.get("decision")}
    voters = [name for name, s in correct.items() if s.get("voted")]
    undecided = [name for name in correct if name not in decided]
    problems = []
    if len(set(decided.values())) > 1:
        problems.append("correct nodes decided differently: "
                        + ", ".join(f"{n}={d}" for n, d in decided.items()))
    if voters and undecided:
        problems.append(f"{', '.join(voters)} voted but correct node(s) "
                        f"{', '.join(undecided)} never decided (blocked)")
    if decided:
        summary = (f"{len(decided)} correct node(s) decided "
                   f"{next(iter(decided.values()))}")
    else:
        summary = "no correct agent voted and none decided"
    return report(states, problems, summary, vacuous=not voters and not decided)


if __name__ == "__main__":
    sys.exit(main())
