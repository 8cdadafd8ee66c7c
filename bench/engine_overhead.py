"""Per-iteration overhead of the LDFI loop: everything an iteration costs
besides the target's own run (sandbox up, nodes, workload, check, teardown):
building the trace from the tracer's events, the lineage, the solver's next
hypothesis, arming the faults, the store. Measured on a real search of a
bundled model (default ack-deliv: certified after a dozen runs), side by side
with the runs themselves. Goal (issue 6): under 100 ms per iteration.

    sudo .venv/bin/python bench/engine_overhead.py [--model ack-deliv] [--kinds omission]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from ldfi.engine import SearchOptions, search
from ldfi.scenario import load_scenario
from ldfi.solver.budget import Budget
from tracer.program import TraceProgram

GOAL_MS = 100.0
MODELS = Path(__file__).resolve().parent.parent / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ack-deliv")
    parser.add_argument("--kinds", default="omission")
    parser.add_argument("--max-faults", type=int, default=1)
    args = parser.parse_args()
    scenario = load_scenario(MODELS / args.model / "scenario.toml")
    budget = Budget.from_mapping({"kinds": tuple(args.kinds.split(",")),
                                  "max_faults": args.max_faults}, "bench")
    with TraceProgram() as program, tempfile.TemporaryDirectory() as store:
        started = time.monotonic()
        result = search(scenario, SearchOptions(budget=budget, reruns=1), program, Path(store))
        wall = time.monotonic() - started
    runs = result.runs_detail
    target = sum(r.duration for r in runs)
    per_iteration = (wall - target) / len(runs)
    in_execute = [r.engine_overhead * 1000 for r in runs]
    out = {
        "model": args.model, "verdict": result.verdict, "runs": len(runs),
        "search_wall_s": round(wall, 2), "target_runs_s": round(target, 2),
        "overhead_per_iteration_ms": round(per_iteration * 1000, 1),
        "trace_and_arming_ms_median": round(statistics.median(in_execute), 1),
        "goal_ms": GOAL_MS,
    }
    print(f"{args.model}: {result.verdict} after {len(runs)} runs, {wall:.2f}s in all, "
          f"{target:.2f}s of it the target's own runs")
    print(f"engine overhead per iteration: {out['overhead_per_iteration_ms']} ms "
          f"(trace build + arming per run, median: {out['trace_and_arming_ms_median']} ms); "
          f"goal < {GOAL_MS:.0f} ms: {'met' if per_iteration * 1000 < GOAL_MS else 'NOT met'}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
