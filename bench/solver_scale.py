"""Scale of the pure-logic engine: lineage + hypotheses on a 1M-event trace.

    .venv/bin/python bench/solver_scale.py [--requests 8400] [--networkx]

What is synthetic (said plainly): the trace is *generated*, not traced and
not matched. A leader-based replication protocol: a client sends requests to
n1, n1 replicates each to n2..n5 over TCP and collects their acks, then
answers the client; n1 also sends UDP heartbeats whose payload (the term)
changes every 100 beats, so they form large retransmission groups; 1% of
requests are sent twice (a client retry: a 2-copy group). Every message is a
send event and a receive event, and each node does filler socket calls
(failed non-blocking reads) between them, for ~10 events per message. The
Trace is built directly from those events, messages and edges: ldfi.trace's
matching and vector clocks are not run (their cost is in docs/trace.md).

Measured: building the Trace's indexes ("graph build"), the lineage (outcome
events, one reverse BFS, message facts, groups), encoding the support
(killers of every message, profiles, classes, the z3 formula) and the first
hypothesis; peak RSS of the whole process. Goal: < 10 s and < 2 GB for 100k
messages / 1M events.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldfi.lineage import lineage
from ldfi.solver import Budget, Hypotheses
from ldfi.trace.ids import payload_hash
from ldfi.trace.model import Edge, Message, MessageId, Topology, Trace
from tracer.events import Event

NODES = ("n1", "n2", "n3", "n4", "n5")
FOLLOWERS = NODES[1:]
FILLER_PER_MESSAGE = 8  # plus the send and the receive: ~10 events per message


class Synth:
    """Appends events in time order; one thread per node (tid = index)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.messages: list[Message] = []
        self.edges: list[Edge] = []
        self.last: dict[str, int] = {}
        self.ordinals: dict[tuple[str, str, str], int] = {}
        self.tids = {n: i + 10 for i, n in enumerate(("client", *NODES))}
        self.hashes: dict[bytes, str] = {}

    def event(self, node: str, **kw: object) -> int:
        seq = len(self.events)
        ts = 1_000_000 + seq * 1000
        tid = self.tids[node]
        self.events.append(Event(seq=seq, kind="sock", ts=ts, ts_enter=ts - 400, pid=tid,
                                 tid=tid, comm=node, node=node, **kw))  # type: ignore[arg-type]
        prev = self.last.get(node)
        if prev is not None:
            self.edges.append(Edge(prev, seq, "program"))
        self.last[node] = seq
        return seq

    def filler(self, node: str, n: int) -> None:
        for _ in range(n):
            self.event(node, syscall="read", ret=-11, proto="tcp")

    def message(self, src: str, dst: str, channel: str, payload: bytes) -> None:
        proto = channel[:3]
        send = self.event(src, syscall="write" if proto == "tcp" else "sendto",
                          ret=len(payload), proto=proto, payload=payload)
        recv = self.event(dst, syscall="read" if proto == "tcp" else "recvfrom",
                          ret=len(payload), proto=proto, payload=payload)
        key = (src, dst, channel)
        ordinal = self.ordinals.get(key, 0)
        self.ordinals[key] = ordinal + 1
        h = self.hashes.get(payload)
        if h is None:
            h = self.hashes[payload] = payload_hash(payload, len(payload))
        self.messages.append(Message(MessageId(src, dst, channel, ordinal), proto, send,
                                     (recv,), len(payload), payload, h, True))
        self.edges.append(Edge(send, recv, "message"))
        self.filler(src, FILLER_PER_MESSAGE // 2)
        self.filler(dst, FILLER_PER_MESSAGE // 2)


def synthesize(requests: int, variant: int = 0) -> Synth:
    """`variant` shifts which requests are retried: another run of the same
    system, whose ids mostly agree with the first one's."""
    s = Synth()
    beat = 0
    for r in range(requests):
        req = b"PUT k%d v%d" % (r, r)
        s.message("client", "n1", "tcp0", req)
        if r % 100 == variant % 100:  # a client retry: the same bytes again
            s.message("client", "n1", "tcp0", req)
        for f in FOLLOWERS:
            s.message("n1", f, "tcp0", b"APPEND %d" % r)
        for f in FOLLOWERS:
            s.message(f, "n1", "tcp0", b"ACK %d" % r)
        s.message("n1", "client", "tcp0", b"OK %d" % r)
        if r % 4 == 0:  # heartbeats, same bytes for 100 beats: retransmission groups
            for f in FOLLOWERS:
                s.message("n1", f, "udp0", b"HB term=%d" % (beat // 100))
            beat += 1
    return s


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=8400, help="client requests (~12 msgs each)")
    ap.add_argument("--max-faults", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1,
                    help="also time adding the supports of more (varied) runs, as the engine "
                         "loop does after each run")
    ap.add_argument("--networkx", action="store_true",
                    help="also time trace.graph (the networkx view), which lineage does not use")
    args = ap.parse_args()

    t = time.perf_counter()
    synth = synthesize(args.requests)
    t_gen = time.perf_counter() - t
    topo = Topology(addresses={n: f"198.18.0.{i + 1}" for i, n in enumerate(("client", *NODES))})
    gc.collect()
    print(f"synthetic trace: {len(synth.events):,} events, {len(synth.messages):,} messages, "
          f"{len(synth.edges):,} edges (generated in {t_gen:.1f} s, not counted)")

    timings: list[tuple[str, float]] = []

    def step(name: str, fn):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = fn()
        timings.append((name, time.perf_counter() - t0))
        return out

    trace = step("graph build (Trace indexes)",
                 lambda: Trace({"run": "bench"}, topo, synth.events, synth.messages,
                               synth.edges, {}))
    lin = step("lineage (outcome, BFS, facts, groups)", lambda: lineage(trace))
    hyp = Hypotheses(Budget(max_faults=args.max_faults))
    step("encode (killers, profiles)", lambda: hyp.add_support(lin.support))
    first = step("first hypothesis (classes, z3)", hyp.next)
    total = sum(d for _, d in timings)
    if args.networkx:
        step("(trace.graph: networkx view, unused)", lambda: trace.graph)

    support = lin.support
    copies = sum(len(g) for g in support.groups)
    print(f"lineage: {lin.events:,} events in the causal past, {copies:,} messages in "
          f"{len(support.groups):,} groups ({sum(len(g) > 1 for g in support.groups):,} with "
          "retransmissions)")
    print(f"candidates: {len(hyp.candidates):,} faults in {hyp.classes} classes; "
          f"search space {hyp.search_space():,}")
    print(f"first hypothesis: {sorted(str(f) for f in first or ())}")
    for name, d in timings:
        print(f"  {name:<40} {d:7.2f} s")
    peak = rss_mb()
    print(f"  {'total (graph build .. first hypothesis)':<40} {total:7.2f} s   goal < 10 s")
    print(f"  {'peak RSS (whole process)':<40} {peak:7.0f} MB  goal < 2048 MB")
    for run in range(1, args.runs):
        del trace, lin, synth  # one run's trace at a time, as in the engine
        gc.collect()
        synth = synthesize(args.requests, variant=run)
        trace = Trace({"run": f"bench{run}"}, topo, synth.events, synth.messages, synth.edges, {})
        t0 = time.perf_counter()
        lin = lineage(trace)
        t1 = time.perf_counter()
        hyp.add_support(lin.support)
        t2 = time.perf_counter()
        h = hyp.next()
        t3 = time.perf_counter()
        print(f"run {run + 1}: lineage {t1 - t0:.2f} s, add support {t2 - t1:.2f} s, next "
              f"hypothesis {t3 - t2:.2f} s ({hyp.classes} classes): "
              f"{sorted(str(f) for f in h or ())}; peak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
