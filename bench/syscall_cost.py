"""What our tracer adds to one system call, in one run: a C loop
(bench/syscall_loop.c) timed with nothing of ours loaded, with the tracer
loaded but its cgroup out of scope, and with the tracer recording it.

  udp      send + recv on a UDP socket connected to itself (both recorded)
  pipe     write + read on a pipe (seen by the programs, not recorded)
  getppid  two calls we attach nothing to (the cost every task pays)

Each figure is the best of REPS passes of N pairs, in ns per pair; rounds
interleave the three modes, and the summary takes the median per mode. The
redis benchmark (tracer_overhead.py) is the end-to-end figure; this one
isolates the per-call cost, which that one's noise hides.

    sudo .venv/bin/python bench/syscall_cost.py [--rounds 3] [--pairs 100000] [--payload 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tracer_overhead import SETTLE  # the wait after attaching, before a timed pass

from tracer.kernel import cgroup2_root, cgroup_id
from tracer.program import TraceProgram

HERE = Path(__file__).resolve().parent
COLUMNS = ("udp", "pipe", "getppid")
MODES = ("none", "loaded", "recording")


def build(tmp: Path) -> Path:
    out = tmp / "syscall_loop"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), str(HERE / "syscall_loop.c")],
                   check=True)
    return out


def run_loop(loop: Path, group: Path, pairs: int, reps: int) -> dict[str, float]:
    """Run the loop inside `group` (it joins before exec) and parse its line."""
    cmd = f"echo $$ > {group}/cgroup.procs && exec {loop} {pairs} {reps}"
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    return dict(zip(COLUMNS, map(float, out.split()), strict=True))


def one_round(loop: Path, group: Path, args: argparse.Namespace) -> dict[str, dict]:
    result = {"none": run_loop(loop, group, args.pairs, args.reps)}
    with TraceProgram(payload_bytes=args.payload) as program:
        time.sleep(SETTLE)
        result["loaded"] = run_loop(loop, group, args.pairs, args.reps)
        recording = program.record({cgroup_id(group): "loop"})
        try:
            result["recording"] = run_loop(loop, group, args.pairs, args.reps)
        finally:
            recorded = recording.stop()
    result["recording"]["events"] = len(recorded.events)
    result["recording"]["lost"] = recorded.lost_events
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=100000, help="pairs per pass")
    parser.add_argument("--reps", type=int, default=7, help="passes per loop (best is kept)")
    parser.add_argument("--payload", type=int, default=64, help="bytes of payload recorded")
    args = parser.parse_args()
    root = cgroup2_root()
    if root is None:
        raise SystemExit("syscall_cost: no cgroup v2 hierarchy is mounted: run 'make setup'")
    with tempfile.TemporaryDirectory() as tmp:
        loop = build(Path(tmp))
        group = root / f"ldfi-syscallbench-{os.getpid()}"  # `ldfi gc` knows the pattern
        group.mkdir()
        try:
            rounds = []
            for r in range(args.rounds):
                rounds.append(one_round(loop, group, args))
                print(f"round {r + 1}: " + "; ".join(
                    f"{m} " + " ".join(f"{c} {rounds[-1][m][c]:.0f}" for c in COLUMNS)
                    for m in MODES), flush=True)
        finally:
            group.rmdir()
    report(rounds, args)


def report(rounds: list[dict[str, dict]], args: argparse.Namespace) -> None:
    med = {m: {c: statistics.median(r[m][c] for r in rounds) for c in COLUMNS} for m in MODES}
    print(f"\nns per pair of calls, median of {args.rounds} rounds (best of {args.reps} passes "
          f"of {args.pairs} pairs), payload {args.payload} bytes:")
    print(f"  {'':10s}" + "".join(f"{c:>10s}" for c in COLUMNS))
    for m in MODES:
        print(f"  {m:10s}" + "".join(f"{med[m][c]:10.0f}" for c in COLUMNS))
    added = {c: med["recording"][c] - med["none"][c] for c in COLUMNS}
    print(f"  recording adds {added['udp']:.0f} ns per send+recv pair "
          f"({med['recording']['udp'] / med['none']['udp']:.2f}x), "
          f"{(med['loaded']['pipe'] - med['none']['pipe']) / 2:.0f} ns per skipped read/write, "
          f"{(med['loaded']['getppid'] - med['none']['getppid']) / 2:.0f} ns per other call")
    events = [r["recording"]["events"] for r in rounds]
    lost = [r["recording"]["lost"] for r in rounds]
    print(f"  events recorded per round: {events} (expected {2 * args.pairs * args.reps} and a "
          f"few), lost: {lost}")


if __name__ == "__main__":
    main()
