"""Runs and wall time to a verdict, per protocol model and budget, for the
three strategies side by side in one run: ldfi, random (mean over seeds) and
exhaustive (or the size of its space where running it all is too long),
against Molly's published executions-to-find-the-bug (SIGMOD 2015, Table 2)
and Molly's random baseline.

Every model's budgets and expected verdicts come from its expected.toml. A
search here counts runs up to the verdict: for a bug, the run that first
broke the outcome (the fault-free run is run 1, as in Molly's counts); no
confirmation re-runs. Writes docs/benchmarks.md and bench/results/search.json.

    sudo .venv/bin/python bench/search.py [--seeds 10] [--models simple-deliv,2pc]
                                          [--max-runs 300] [--exhaustive-limit 60]
                                          [--large-space 500] [--large-seeds 1]
                                          [--large-factor 10] [--update]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ldfi.engine import SearchOptions, search
from ldfi.scenario import load_scenario
from ldfi.solver.budget import Budget
from tracer.program import TraceProgram

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
MOLLY = {  # executions to find the bug: (LDFI, random mean), Alvaro et al. 2015
    "simple-deliv": (2, 4.08), "retry-deliv": (3, 75.24), "classic-deliv": (5, 116.16),
    "2pc": (2, 5.48), "2pc-ctp": (3, 8.56), "3pc": (55, 40.60), "kafka-isr": (38, 1183.12),
}
BUDGET_KEYS = ("kinds", "max_faults", "max_crashes", "horizon", "per_kind", "include_client")


@dataclass
class Outcome:
    verdict: str
    runs: int  # runs to the verdict (to the first failing run for a bug)
    wall: float
    space: int


def run_search(program: TraceProgram, model: str, case: dict, strategy: str, seed: int,
               max_runs: int, order: str = "largest") -> Outcome:
    scenario = load_scenario(MODELS / model / "scenario.toml")
    budget = Budget.from_mapping({k: case[k] for k in BUDGET_KEYS if k in case},
                                 f"{model}/expected.toml")
    options = SearchOptions(budget=budget, strategy=strategy, max_runs=max_runs, reruns=0,
                            seed=seed, order=order)
    with tempfile.TemporaryDirectory() as store:
        started = time.monotonic()
        result = search(scenario, options, program, Path(store))
        wall = time.monotonic() - started
    runs = result.runs
    if result.verdict == "bug":
        runs = next(r.index + 1 for r in result.runs_detail if r.predicate is False)
    return Outcome(result.verdict, runs, wall, result.search_space)


def cases(selected: list[str] | None, bugs_only: bool = False) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(MODELS.glob("*/expected.toml")):
        model = path.parent.name
        if selected and model not in selected:
            continue
        for case in tomllib.loads(path.read_text()).get("case", []):
            if not bugs_only or case.get("verdict") == "bug":
                out.append((model, case))
    return out


def describe(case: dict) -> str:
    text = f"{'+'.join(case.get('kinds', []))} ≤{case.get('max_faults', 1)}"
    if case.get("max_crashes"):
        text += f", crashes ≤{case['max_crashes']}"
    if case.get("horizon") is not None:
        text += f", horizon {case['horizon']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--max-runs", type=int, default=300)
    parser.add_argument("--bugs-only", action="store_true",
                        help="only the budgets under which a bug is expected")
    parser.add_argument("--exhaustive-limit", type=int, default=60,
                        help="run exhaustive only when its space is at most this many sets")
    parser.add_argument("--large-space", type=int, default=500,
                        help="a space of more sets than this is large: random there gets "
                             "--large-seeds seeds, each capped at --large-factor x ldfi's runs")
    parser.add_argument("--large-seeds", type=int, default=10)
    parser.add_argument("--large-factor", type=int, default=10)
    parser.add_argument("--update", action="store_true",
                        help="keep the other rows of bench/results/search.json")
    args = parser.parse_args()
    rows = []
    with TraceProgram() as program:
        for model, case in cases(args.models.split(",") if args.models else None,
                                 args.bugs_only):
            row = measure(program, model, case, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    results = ROOT / "bench" / "results" / "search.json"
    if args.update and results.exists():
        fresh = {(r["model"], r["budget"]) for r in rows}
        kept = [r for r in json.loads(results.read_text())
                if (r["model"], r["budget"]) not in fresh]
        rows = sorted(kept + rows, key=lambda r: (r["model"], r["budget"]))
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(rows, indent=2) + "\n")
    write_markdown(rows, args)


def measure(program: TraceProgram, model: str, case: dict, args: argparse.Namespace) -> dict:
    """One row: ldfi, random over seeds, exhaustive where small enough. On a
    large space random is capped at large_factor x ldfi's runs: a seed that
    hits the cap shows random needs at least that factor more there."""
    ldfi = run_search(program, model, case, "ldfi", 0, args.max_runs)
    smallest = run_search(program, model, case, "ldfi", 0, args.max_runs, order="smallest")
    large = ldfi.space > args.large_space
    seeds = args.large_seeds if large else args.seeds
    if case.get("verdict") != "bug":
        seeds = 0  # to certify, random must run every set of the space, as exhaustive does
    cap = args.large_factor * ldfi.runs if large else args.max_runs
    randoms = [run_search(program, model, case, "random", seed, cap) for seed in range(seeds)]
    exhaustive = (run_search(program, model, case, "exhaustive", 0, args.max_runs)
                  if ldfi.space <= args.exhaustive_limit else None)
    return {
        "model": model, "budget": describe(case), "expected": case.get("verdict"),
        "ldfi": vars(ldfi), "ldfi_smallest_first": vars(smallest),
        "random": {"verdicts": [r.verdict for r in randoms], "cap": cap,
                   "capped": sum(r.verdict == "inconclusive" and r.runs >= cap for r in randoms),
                   "runs_mean": statistics.mean(r.runs for r in randoms) if randoms else None,
                   "wall_mean": statistics.mean(r.wall for r in randoms) if randoms else None},
        "exhaustive": vars(exhaustive) if exhaustive else {"space": ldfi.space},
        "molly": MOLLY.get(model) if case.get("verdict") == "bug" else None,
    }


def write_markdown(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "# Search benchmark (bench/search.py)", "",
        f"Runs to a verdict per model and budget; for a bug, runs up to the first run that "
        f"broke the outcome (the fault-free run counts, as in Molly's numbers). random: mean "
        f"over {args.seeds} seeds (capped at {args.max_runs} runs); on a space of more than "
        f"{args.large_space} fault sets, {args.large_seeds} seed(s) capped at "
        f"{args.large_factor}x ldfi's runs, so a seed that hits the cap shows random needing at "
        f"least {args.large_factor}x more. exhaustive: run when its space is at most "
        f"{args.exhaustive_limit} fault sets, else the space's size. Where no bug is "
        "expected, random is not sampled: like exhaustive it certifies only by running every "
        "set of the space (the table gives the size of the space ldfi ended with; random's "
        "own grows with its runs much as ldfi's does). Molly: executions to find "
        "the bug with LDFI / random, SIGMOD 2015.", "",
        "`ldfi` is the default order (largest fault sets first); `smallest first` is the same",
        "search in Molly's order (`ldfi run --order smallest`).", "",
        "| model | budget | expected | ldfi verdict | ldfi runs | ldfi wall | smallest first "
        "| random runs (mean) | random verdicts | exhaustive | Molly LDFI / random |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ex = r["exhaustive"]
        ex_text = (f"{ex['verdict']} in {ex['runs']} runs" if "verdict" in ex
                   else f"space {ex['space']}")
        verdicts = ", ".join(f"{v}×{r['random']['verdicts'].count(v)}"
                             for v in sorted(set(r["random"]["verdicts"])))
        molly = f"{r['molly'][0]} / {r['molly'][1]}" if r["molly"] else "-"
        lines.append(
            f"| {r['model']} | {r['budget']} | {r['expected']} | {r['ldfi']['verdict']} | "
            f"{r['ldfi']['runs']} | {r['ldfi']['wall']:.1f}s | {_smallest(r)} | "
            f"{_random(r)} | "
            f"{verdicts} | {ex_text} | {molly} |")
    lines += ["", *summary(rows)]
    lines += [
        "",
        "How to read it: our `random` and `exhaustive` draw from the same candidate faults",
        "as `ldfi` (those the lineage of the runs so far names, within the budget), not from",
        "every fault the system could suffer as Molly's random did. Real processes send far",
        "fewer messages than Molly's Dedalus programs (which re-derive state every tick), so",
        "most spaces are small (the exhaustive column) and failing sets are dense in them:",
        "random is strong there. The gap opens on the large space (kafka-isr's, whose bug",
        "needs three faults at once). Rows where no bug is expected are certifications:",
        "ldfi's runs against the whole space a strategy blind to the lineage would run. The",
        "same code can take a few runs more or fewer from one run of the bench to the next",
        "(the runs' timing decides some sends' order); docs/models.md gives the spread seen.",
        "",
    ]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines) + "\n")


def summary(rows: list[dict]) -> list[str]:
    """The issue's two goals, as measured: ldfi's runs against Molly's, and
    random's mean against ldfi's (a lower bound where seeds hit the cap)."""
    bugs = [r for r in rows if r["expected"] == "bug" and r["ldfi"]["verdict"] == "bug"]
    molly = [r for r in bugs if r["molly"]]
    ok = [r["model"] for r in molly if r["ldfi"]["runs"] <= r["molly"][0]]
    late = [f"{r['model']} ({r['ldfi']['runs']} vs {r['molly'][0]})" for r in molly
            if r["ldfi"]["runs"] > r["molly"][0]]
    ratios = [f"{r['model']} {r['random']['runs_mean'] / r['ldfi']['runs']:.1f}x"
              + (" or more" if r["random"].get("capped") else "")
              for r in bugs if r["random"]["runs_mean"] is not None]
    return [f"No more runs than Molly: {len(ok)} of {len(molly)} ({', '.join(ok)}); more on "
            f"{', '.join(late) or 'none'}. Random's mean over ldfi's runs: "
            f"{', '.join(ratios)}."]


def _smallest(row: dict) -> str:
    found = row.get("ldfi_smallest_first")
    if not found:
        return "not run"
    return f"{found['runs']} ({found['verdict']})" if found["verdict"] != row["expected"] \
        else str(found["runs"])


def _random(row: dict) -> str:
    """Mean runs; with seeds that hit the cap, a lower bound ("≥")."""
    random = row["random"]
    if row["expected"] != "bug":
        return f"all {row['ldfi']['space']} (to certify)"
    if random["runs_mean"] is None:
        return "not run"
    n, capped = len(random["verdicts"]), random.get("capped", 0)
    if not capped:
        return f"{random['runs_mean']:.1f}"
    return f"≥ {random['runs_mean']:.1f} ({capped} of {n} seeds hit the cap of {random['cap']})"


if __name__ == "__main__":
    main()
