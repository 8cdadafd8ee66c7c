"""The workload of most models: send commands to nodes, wait, exit.

    python3 ../lib/ctl.py --port 7101 "send {a} bcast value=hello" "sleep 6"

Each step is one argument:
  send ADDRESS TYPE [KEY=VALUE ...]   one command line {"type": TYPE, KEY: VALUE}
                                      to the node's port (no answer is awaited),
                                      sent in the middle of a tick
  sleep TICKS                         wait that many logical ticks

Waiting a fixed number of ticks (rather than polling the nodes) keeps the
workload's own messages the same in every run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import TICK, at_mid_tick, command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("steps", nargs="+")
    args = parser.parse_args()
    for step in args.steps:
        words = step.split()
        if words[0] == "send" and len(words) >= 3:
            fields = dict(word.split("=", 1) for word in words[3:])
            at_mid_tick()
            print(f"send {words[2]} {fields} to {words[1]}", flush=True)
            try:
                command(words[1], args.port, {"type": words[2], **fields})
            except OSError as err:  # a crashed node: the run goes on without it
                print(f"send to {words[1]} failed: {err}", flush=True)
        elif words[0] == "sleep" and len(words) == 2:
            time.sleep(float(words[1]) * TICK)
        else:
            parser.error(f"bad step {step!r}: expected 'send ADDRESS TYPE [K=V...]' "
                         f"or 'sleep TICKS'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
