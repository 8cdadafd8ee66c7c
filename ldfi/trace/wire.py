"""The trace on disk (protobuf, proto/bopbpf/trace.proto) and as JSON.

read_trace(write_trace(t)) == t: events, messages, edges and clocks are
stored as computed, not rebuilt, so a reader sees exactly what the engine saw.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from bopbpf import trace_pb2
from tracer.events import Event
from tracer.faults import FaultReport

from .graph import VectorClocks, thread_key
from .model import Edge, Message, MessageId, Topology, Trace

FORMAT_VERSION = 1
_EDGE_KIND = {
    "program": trace_pb2.EDGE_KIND_PROGRAM,
    "fork": trace_pb2.EDGE_KIND_FORK,
    "connect": trace_pb2.EDGE_KIND_CONNECT,
    "message": trace_pb2.EDGE_KIND_MESSAGE,
}
_EDGE_NAME = {v: k for k, v in _EDGE_KIND.items()}
_EVENT_FIELDS = [f for f in dataclasses.fields(Event)
                 if f.name in trace_pb2.TraceEvent.DESCRIPTOR.fields_by_name]
_OPTIONAL = ("seq_w", "seq_r")  # None = unknown: proto3 presence keeps it apart from 0


# --------------------------------------------------------- to protobuf ----

def _event_pb(e: Event, pb: trace_pb2.TraceEvent) -> None:
    for f in _EVENT_FIELDS:
        value = getattr(e, f.name)
        if value is not None:
            setattr(pb, f.name, value)


def _message_pb(m: Message, pb: trace_pb2.TraceMessage) -> None:
    pb.id.src, pb.id.dst, pb.id.channel, pb.id.ordinal = (
        m.id.src, m.id.dst, m.id.channel, m.id.ordinal)
    pb.proto, pb.send_seq, pb.size = m.proto, m.send_seq, m.size
    pb.recv_seqs.extend(m.recv_seqs)
    pb.payload, pb.payload_hash, pb.delivered = m.payload, m.payload_hash, m.delivered
    if m.byte_start is not None:
        pb.byte_start = m.byte_start
    if m.byte_end is not None:
        pb.byte_end = m.byte_end


def trace_to_proto(trace: Trace) -> trace_pb2.Trace:
    pb = trace_pb2.Trace(format_version=FORMAT_VERSION, lost_events=trace.lost_events,
                         complete=trace.complete)
    pb.meta.update(trace.meta)
    topo = trace.topology
    for name in topo.nodes:
        node = pb.nodes.add(name=name)
        if name in topo.addresses:
            node.address = topo.addresses[name]
        if name in topo.cgroups:
            node.cgroup = topo.cgroups[name]
    for e in trace.events:
        _event_pb(e, pb.events.add())
    for m in trace.messages:
        _message_pb(m, pb.messages.add())
    for edge in trace.edges:
        pb.edges.add(src=edge.src, dst=edge.dst, kind=_EDGE_KIND[edge.kind])
    for seq in sorted(trace.vector_clocks):
        pb.clocks.add(event=seq).clock.update(trace.vector_clocks[seq])
    for f in trace.faults:
        pb.faults.add(**dataclasses.asdict(f))
    return pb


# ------------------------------------------------------- from protobuf ----

def _event(pb: trace_pb2.TraceEvent) -> Event:
    kw: dict[str, Any] = {}
    for f in _EVENT_FIELDS:
        if f.name in _OPTIONAL:
            kw[f.name] = getattr(pb, f.name) if pb.HasField(f.name) else None
        else:
            kw[f.name] = getattr(pb, f.name)
    return Event(**kw)


def _message(pb: trace_pb2.TraceMessage) -> Message:
    return Message(
        MessageId(pb.id.src, pb.id.dst, pb.id.channel, pb.id.ordinal), pb.proto, pb.send_seq,
        tuple(pb.recv_seqs), pb.size, pb.payload, pb.payload_hash, pb.delivered,
        pb.byte_start if pb.HasField("byte_start") else None,
        pb.byte_end if pb.HasField("byte_end") else None)


def trace_from_proto(pb: trace_pb2.Trace) -> Trace:
    if pb.format_version != FORMAT_VERSION:
        raise ValueError(f"trace format version {pb.format_version} is not supported "
                         f"(this engine reads {FORMAT_VERSION})")
    topo = Topology(
        addresses={n.name: n.address for n in pb.nodes if n.HasField("address")},
        cgroups={n.name: n.cgroup for n in pb.nodes if n.HasField("cgroup")})
    events = [_event(e) for e in pb.events]
    threads = {e.seq: thread_key(e) for e in events}
    clocks = VectorClocks.from_dicts({c.event: dict(c.clock) for c in pb.clocks}, threads)
    edges = [Edge(e.src, e.dst, _EDGE_NAME[e.kind]) for e in pb.edges]
    faults = [FaultReport(**{f.name: _plain(getattr(r, f.name)) for f in _FAULT_FIELDS})
              for r in pb.faults]
    return Trace(dict(pb.meta), topo, events, [_message(m) for m in pb.messages], edges,
                 clocks, pb.lost_events, faults)


_FAULT_FIELDS = dataclasses.fields(FaultReport)


def _plain(value: Any) -> Any:
    """protobuf repeated fields -> lists"""
    return list(value) if hasattr(value, "extend") else value


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write atomically (a reader never sees half a trace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(trace_to_proto(trace).SerializeToString())
    tmp.replace(path)


def read_trace(path: str | os.PathLike[str]) -> Trace:
    pb = trace_pb2.Trace()
    pb.ParseFromString(Path(path).read_bytes())
    return trace_from_proto(pb)


# ---------------------------------------------------------------- JSON ----

def escape_payload(data: bytes) -> str:
    """Printable ASCII as is; \\\\, \\n, \\r, \\t and \\xNN for the rest (unambiguous)."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif 32 <= b < 127:
            out.append(chr(b))
        else:
            out.append({10: "\\n", 13: "\\r", 9: "\\t"}.get(b, f"\\x{b:02x}"))
    return "".join(out)


_EVENT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Event)
                   if f.default is not dataclasses.MISSING}
_ALWAYS = ("seq", "kind", "ts", "pid", "tid", "node")


def _event_json(e: Event, clock: dict[str, int]) -> dict[str, Any]:
    """Non-default fields only: a read is not cluttered with fork fields."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Event):
        value = getattr(e, f.name)
        if f.name in _ALWAYS or value != _EVENT_DEFAULTS.get(f.name):
            out[f.name] = escape_payload(value) if f.name == "payload" else value
    out["vc"] = clock
    return out


def message_json(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(m.id), "src": m.src, "dst": m.dst, "channel": m.channel,
        "ordinal": m.ordinal, "proto": m.proto, "send_seq": m.send_seq,
        "recv_seqs": list(m.recv_seqs), "delivered": m.delivered, "size": m.size,
        "payload": escape_payload(m.payload), "payload_hash": m.payload_hash,
    }
    if m.byte_start is not None:
        out["bytes"] = [m.byte_start, m.byte_end]
    return out


def trace_to_json(trace: Trace) -> dict[str, Any]:
    """A readable dict (json.dumps-able): `ldfi export run.pb --format json`."""
    topo = trace.topology
    return {
        "format": f"bopbpf.trace/{FORMAT_VERSION}",
        "meta": dict(trace.meta),
        "complete": trace.complete,
        "lost_events": trace.lost_events,
        "nodes": [{"name": n, "address": topo.addresses.get(n),
                   "cgroup": topo.cgroups.get(n)} for n in topo.nodes],
        "messages": [message_json(m) for m in trace.messages],
        "edges": [{"src": e.src, "dst": e.dst, "kind": e.kind} for e in trace.edges],
        "faults": [dataclasses.asdict(f) for f in trace.faults],
        "events": [_event_json(e, trace.vector_clocks[e.seq]) for e in trace.events],
    }
