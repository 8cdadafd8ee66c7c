"""The bully-le predicate (Molly's leader election assertion), over the
correct nodes: if any correct node took part in an election, every correct
node has a leader, and they all have the same one. When no correct node took
part, the predicate holds vacuously (exit VACUOUS_EXIT).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import check_parser, query_all, report


def main() -> int:
    args = check_parser(__doc__.splitlines()[0]).parse_args()
    states = query_all(args.nodes, args.port)
    correct = {name: s for name, s in states.items() if s is not None}
    leaders = {name: s.get("leader") for name, s in correct.items()}
    problems = []
    participated = any(s.get("participated") for s in correct.values())
    if participated:
        if without := [n for n, leader in leaders.items() if leader is None]:
            problems.append(f"correct node(s) {', '.join(without)} have no leader")
        if len({leader for leader in leaders.values() if leader}) > 1:
            problems.append("correct nodes disagree on the leader: "
                            + ", ".join(f"{n}->{leader}" for n, leader in leaders.items()))
    chosen = {leader for leader in leaders.values() if leader}
    summary = (f"every correct node follows {chosen.pop()}" if chosen
               else "no correct node took part in an election")
    return report(states, problems, summary, vacuous=not participated)


if __name__ == "__main__":
    sys.exit(main())
