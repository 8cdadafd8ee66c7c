"""Tracer overhead: Debian's redis-server driven by redis-benchmark, in one run:

  untraced    redis-server alone in its sandbox node
  bop-bpf     the same, with our eBPF tracer recording the node and the client
  strace -f   redis-server under `strace -f` (ptrace, Box of Pain's approach)

Prints requests/s for each, the ratios to untraced, events recorded and lost,
and whether every request was matched to its response in our trace.
Goal (issue 4): bop-bpf >= 0.90 of untraced with 0 lost events.

    sudo .venv/bin/python bench/tracer_overhead.py [--requests 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from ldfi.readiness import wait_ready
from ldfi.sandbox import Sandbox
from ldfi.scenario import Ready
from ldfi.trace import Topology, build_trace
from tracer.program import TraceProgram

REDIS = ("redis-server --port 6379 --bind 0.0.0.0 --protected-mode no --save '' "
         "--appendonly no")


def one_round(mode: str, requests: int, clients: int, program: TraceProgram | None,
              tmp: Path) -> dict:
    run_dir = tmp / f"{mode}-{time.monotonic_ns()}"
    with Sandbox(["redis"], run_dir) as sb:
        recording = None
        if program is not None:
            ids = sb.cgroup_ids()
            recording = program.record({cid: name for name, cid in ids.items()})
        cmd = f"exec strace -f -o /dev/null {REDIS}" if mode == "strace" else f"exec {REDIS}"
        sb.start("redis", cmd, cwd=run_dir, env={})
        wait_ready(Ready("tcp", port=6379), sb.nodes["redis"], netns=sb.netns("redis"),
                   cwd=run_dir, env={}, ready_cmd=None, deadline=time.monotonic() + 10)
        done = sb.run_client(
            f"redis-benchmark -h redis -p 6379 -n {requests} -c {clients} -t set,get --csv",
            cwd=run_dir, env={}, timeout=300, log_name="bench")
        if done.exit_code != 0:
            raise RuntimeError(f"redis-benchmark failed: {done.stderr.read_text()[-500:]}")
        rps = _requests_per_second(done.stdout.read_text())
        out = {"mode": mode, "rps": rps}
        if recording is not None:
            recorded = recording.stop()
            out.update(events=len(recorded.events), lost=recorded.lost_events,
                       addresses=dict(sb.addresses), cgroups=sb.cgroup_ids(),
                       recorded=recorded)
    return out


def _requests_per_second(csv: str) -> float:
    """Mean of the SET and GET rows' requests/s (redis-benchmark --csv)."""
    values = []
    for line in csv.splitlines()[1:]:
        fields = [f.strip('"') for f in line.split(",")]
        if fields and fields[0] in ("SET", "GET"):
            values.append(float(fields[1]))
    return statistics.mean(values)


def matched_requests(traced: dict) -> tuple[int, int]:
    """(requests answered, requests) from the happens-before trace: every
    client->redis message must be delivered and followed by a response on
    its channel (redis answers each request with one write)."""
    recorded = traced.pop("recorded")
    trace = build_trace(recorded.events, Topology(addresses=traced["addresses"],
                                                  cgroups=traced["cgroups"]))
    requests = Counter()
    answered = Counter()
    for m in trace.messages:
        if m.src == "client" and m.dst == "redis" and m.delivered:
            requests[m.channel] += 1
        elif m.src == "redis" and m.dst == "client" and m.delivered:
            answered[m.channel] += 1
    total = sum(1 for m in trace.messages if m.src == "client" and m.dst == "redis")
    matched = sum(min(requests[c], answered[c]) for c in requests)
    return matched, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50000, help="per test (SET, GET)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"untraced": [], "bop-bpf": [], "strace": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # interleaved: noise hits every mode alike
            for mode in rows:
                if mode != "bop-bpf":  # nothing of ours attached: a true baseline
                    rows[mode].append(one_round(mode, args.requests, args.clients, None,
                                                Path(tmp)))
                    continue
                with TraceProgram(payload_bytes=64) as program:
                    rows[mode].append(one_round(mode, args.requests, args.clients, program,
                                                Path(tmp)))
    base = statistics.median(r["rps"] for r in rows["untraced"])
    traced = rows["bop-bpf"][-1]
    matched, total = matched_requests(traced)
    print(f"redis-benchmark -n {args.requests} -c {args.clients} -t set,get, "
          f"{args.rounds} interleaved rounds (median requests/s):")
    summary = {}
    for mode, results in rows.items():
        rps = statistics.median(r["rps"] for r in results)
        summary[mode] = {"rps": rps, "ratio": rps / base}
        print(f"  {mode:9} {rps:10.0f} req/s   {rps / base:5.2f} x untraced")
    events = [r["events"] for r in rows["bop-bpf"]]
    lost = [r["lost"] for r in rows["bop-bpf"]]
    print(f"  bop-bpf events recorded per round: {events}, lost: {lost}")
    print(f"  requests matched to a response in the last traced round: {matched}/{total}")
    ours, strace = summary["bop-bpf"]["rps"], summary["strace"]["rps"]
    print(f"  bop-bpf vs strace: {ours / strace:.1f}x the throughput; goal >= 0.90 x untraced: "
          f"{'met' if summary['bop-bpf']['ratio'] >= 0.90 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "summary": summary, "events": events, "lost": lost, "matched": matched,
            "requests": total, "rounds": {m: [r["rps"] for r in rs] for m, rs in rows.items()},
        }, indent=2))


if __name__ == "__main__":
    main()
