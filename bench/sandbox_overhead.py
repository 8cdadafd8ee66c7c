"""Per-run sandbox overhead: namespaces + bridge + veths + cgroups + teardown,
for a 5-node scenario, without the nodes' own start time (each node runs
`sleep`, which starts in ~1 ms and dies at once on SIGTERM).

Side by side in one run: bop-bpf's sandbox (in-process netlink through
pyroute2) and the same topology built with iproute2 commands (`ip netns add`,
`ip link add ... veth`, ...) the way a shell-based harness does it.
Goal (issue 3): under 150 ms per run for 5 nodes.

    sudo .venv/bin/python bench/sandbox_overhead.py [--runs 20] [--nodes 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ldfi.sandbox import Sandbox

GOAL_MS = 150.0


def ours(nodes: int, run_dir: Path) -> float:
    names = [f"n{i}" for i in range(nodes)]
    start = time.perf_counter()
    with Sandbox(names, run_dir) as sb:
        for name in names:
            sb.start(name, "exec sleep 3600", cwd=run_dir, env={}, grace=1.0)
    return time.perf_counter() - start


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def iproute2_shell(nodes: int, run_dir: Path) -> float:
    """The same namespaces, bridge, veths and cgroups through `ip` and mkdir."""
    del run_dir
    cg = Path("/sys/fs/cgroup/unified")
    if not cg.exists():
        cg = Path("/sys/fs/cgroup")
    names = ["client", *(f"n{i}" for i in range(nodes))]
    start = time.perf_counter()
    _ip("netns", "add", "ldfi-bench-br")
    _ip("-n", "ldfi-bench-br", "link", "add", "br0", "type", "bridge")
    _ip("-n", "ldfi-bench-br", "link", "set", "br0", "up")
    procs = []
    for i, name in enumerate(names):
        ns = f"ldfi-bench-{name}"
        _ip("netns", "add", ns)
        _ip("-n", "ldfi-bench-br", "link", "add", f"p{i}", "type", "veth",
            "peer", "name", "eth0", "netns", ns)
        _ip("-n", "ldfi-bench-br", "link", "set", f"p{i}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"198.19.255.{i + 10}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        (cg / ns).mkdir()
        if name != "client":
            procs.append(subprocess.Popen(
                ["sh", "-c", f'echo $$ > {cg / ns}/cgroup.procs && exec ip netns exec {ns} '
                 "sleep 3600"]))
    for p in procs:
        p.terminate()
        p.wait()
    for name in names:
        (cg / f"ldfi-bench-{name}").rmdir()
        _ip("netns", "del", f"ldfi-bench-{name}")
    _ip("netns", "del", "ldfi-bench-br")
    return time.perf_counter() - start


def measure(fn, runs: int, nodes: int) -> list[float]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        fn(nodes, Path(tmp) / "warmup")
        for i in range(runs):
            out.append(fn(nodes, Path(tmp) / f"run{i}") * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--json", help="also write the figures as JSON here")
    args = parser.parse_args()
    # Interleave so that machine noise hits both sides alike.
    ours_ms: list[float] = []
    base_ms: list[float] = []
    for _ in range(args.runs):
        ours_ms += measure(ours, 1, args.nodes)
        base_ms += measure(iproute2_shell, 1, args.nodes)
    o, b = statistics.median(ours_ms), statistics.median(base_ms)
    print(f"sandbox overhead, {args.nodes} nodes + client, {args.runs} runs each (median ms):")
    print(f"  bop-bpf (pyroute2, in-process): {o:7.1f} ms   p90 "
          f"{statistics.quantiles(ours_ms, n=10)[-1]:7.1f} ms")
    print(f"  iproute2 commands (baseline):   {b:7.1f} ms   p90 "
          f"{statistics.quantiles(base_ms, n=10)[-1]:7.1f} ms")
    print(f"  ratio baseline/ours: {b / o:.1f}x faster;  goal < {GOAL_MS:.0f} ms: "
          f"{'met' if o < GOAL_MS else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"nodes": args.nodes, "runs": args.runs, "ours_ms": ours_ms, "iproute2_ms": base_ms,
             "ours_median_ms": o, "iproute2_median_ms": b, "goal_ms": GOAL_MS}, indent=2))


if __name__ == "__main__":
    main()
