"""The paxos-synod predicate (Molly's paxos_synod assertion, on chosen
values): no two correct nodes decided different values, and every decided
value was proposed. Termination is reported but not required: no consensus
protocol can promise it when messages may be lost. When no correct node
decided, the predicate holds vacuously (exit VACUOUS_EXIT).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import check_parser, query_all, report


def main() -> int:
    args = check_parser(__doc__.splitlines()[0]).parse_args()
    states = query_all(args.nodes, args.port)
    correct = {name: s for name, s in states.items() if s is not None}
    decided = {name: s["decided"] for name, s in correct.items() if s.get("decided")}
    proposed = {s["proposed"] for s in correct.values() if s.get("proposed")}
    problems = []
    if len(set(decided.values())) > 1:
        problems.append("correct nodes decided different values: "
                        + ", ".join(f"{n}={v!r}" for n, v in decided.items()))
    # A crashed proposer's value is unknown here, so validity is only checked
    # when every proposer answered.
    if all(states.get(p) is not None for p in ("a", "b")):
        for name, value in decided.items():
            if value not in proposed:
                problems.append(f"{name} decided {value!r}, which nobody proposed")
    summary = (f"{len(decided)} of {len(correct)} correct node(s) decided, all "
               f"{next(iter(decided.values()))!r}" if decided else "no node decided")
    return report(states, problems, summary, vacuous=not decided)


if __name__ == "__main__":
    sys.exit(main())
