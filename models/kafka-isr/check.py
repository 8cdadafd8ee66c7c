"""The kafka-isr predicate (Molly's kafka assertion): every write the client
saw acknowledged is on some correct replica.

The acknowledged writes are the client's own record (--acked, written by the
workload); the replicas' logs come from their status answers. A replica that
does not answer is crashed and holds nothing. With no acknowledged write the
predicate holds vacuously (exit VACUOUS_EXIT).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import check_parser, query_all, report


def main() -> int:
    parser = check_parser(__doc__.splitlines()[0])
    parser.add_argument("--acked", required=True, help="the client's acknowledged writes")
    args = parser.parse_args()
    acked = Path(args.acked).read_text().split() if Path(args.acked).exists() else []
    states = query_all(args.nodes, args.port)
    holders = {name: s["log"] for name, s in states.items() if s is not None and "log" in s}
    problems = []
    for value in acked:
        if not any(value in log for log in holders.values()):
            problems.append(f"{value!r} was acknowledged to the client but no correct "
                            f"replica has it (correct replicas: {', '.join(holders) or 'none'})")
    summary = (f"every acknowledged write ({', '.join(acked)}) is on a correct replica"
               if acked else "no write was acknowledged")
    return report(states, problems, summary, vacuous=not acked)


if __name__ == "__main__":
    sys.exit(main())
