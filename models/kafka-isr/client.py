"""The kafka-isr workload: a producer with acks=all. It writes each value to
the leader in turn, waits up to WRITE_TIMEOUT ticks for the acknowledgement,
and records the values acknowledged to it, one per line, in --out."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib"))
from protocol import TICK, at_mid_tick, command

WRITE_TIMEOUT = 10  # ticks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leader", required=True, help="the leader's address")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--writes", default="w1,w2", help="values, comma-separated")
    parser.add_argument("--out", required=True, help="where to record acknowledged values")
    args = parser.parse_args()
    acked = []
    for value in args.writes.split(","):
        at_mid_tick()
        try:
            answer = command(args.leader, args.port, {"type": "write", "value": value},
                             wait_reply=WRITE_TIMEOUT * TICK)
        except OSError as err:
            answer = None
            print(f"write {value!r}: {err}")
        if answer is not None and answer.get("ack") == value:
            acked.append(value)
        print(f"write {value!r}: {'acknowledged' if value in acked else 'no ack'}", flush=True)
    Path(args.out).write_text("".join(f"{v}\n" for v in acked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
