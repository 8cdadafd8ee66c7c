"""The trace on disk (protobuf, proto/bopbpf/trace.proto) and as JSON.

read_trace(write_trace(t)) == t: events, messages, edges and clocks are
stored as computed, not rebuilt, so a reader sees exactly what the engine saw.
A file is a TraceFile (the Trace and its SHA-256): read_trace refuses one cut
short, damaged or inconsistent with TraceFileError, whose message says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from bopbpf import trace_pb2
from tracer.events import Event
from tracer.faults import FaultReport

from .graph import VectorClocks, thread_key
from .model import EDGE_KINDS, Edge, Message, MessageId, Topology, Trace

FORMAT_VERSION = 3  # a TraceFile: the Trace and its checksum; peeks (edges, peek_seqs)
CHECKSUM_VERSION = 2  # a TraceFile from before peek_seqs, still read
LEGACY_VERSION = 1  # a bare Trace (no checksum), still read
READ_VERSIONS = (LEGACY_VERSION, CHECKSUM_VERSION, FORMAT_VERSION)
JSON_FORMAT = "bopbpf.trace/2"  # the JSON export's layout: /2 added peek edges and peek_seqs
WHOLE_TRACE = "give a whole trace file written by 'ldfi trace -o FILE' (or a run's trace.pb)"
_EDGE_KIND = {
    "program": trace_pb2.EDGE_KIND_PROGRAM,
    "fork": trace_pb2.EDGE_KIND_FORK,
    "connect": trace_pb2.EDGE_KIND_CONNECT,
    "message": trace_pb2.EDGE_KIND_MESSAGE,
    "peek": trace_pb2.EDGE_KIND_PEEK,
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
    pb.peek_seqs.extend(m.peek_seqs)
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
        if name in topo.addresses6:
            node.address6 = topo.addresses6[name]
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

class TraceFileError(ValueError):
    """A file that is not a whole, sound trace. The message is one line a
    person can act on: what is wrong with the file and what to give instead."""


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
        pb.byte_end if pb.HasField("byte_end") else None, tuple(pb.peek_seqs))


def _edge(index: int, pb: trace_pb2.TraceEdge) -> Edge:
    kind = _EDGE_NAME.get(pb.kind)
    if kind is None:
        raise TraceFileError(f"edge {index} ({pb.src} -> {pb.dst}) has kind {pb.kind}, not one "
                             f"of {', '.join(EDGE_KINDS)}: the trace is damaged; {WHOLE_TRACE}")
    return Edge(pb.src, pb.dst, kind)


def _missing_event(what: str, seq: int) -> TraceFileError:
    return TraceFileError(f"{what} names event {seq}, which is not in the trace: the trace is "
                          f"damaged; {WHOLE_TRACE}")


def _check_references(events: list[Event], messages: list[Message], edges: list[Edge],
                      clocks: dict[int, dict[str, int]]) -> None:
    """Every seq an edge, message or clock names is an event, and every event
    has its clock: a crafted or damaged file that protobuf parsed would
    otherwise fail much later, as a bare KeyError."""
    seqs = {e.seq for e in events}
    if len(seqs) != len(events):
        raise TraceFileError(f"two events have the same seq: the trace is damaged; {WHOLE_TRACE}")
    for i, edge in enumerate(edges):
        for seq in (edge.src, edge.dst):
            if seq not in seqs:
                raise _missing_event(f"edge {i} ({edge.src} -> {edge.dst})", seq)
    for m in messages:
        for seq in (m.send_seq, *m.recv_seqs, *m.peek_seqs):
            if seq not in seqs:
                raise _missing_event(f"message {m.id}", seq)
    for seq in clocks:
        if seq not in seqs:
            raise _missing_event("a vector clock", seq)
    unclocked = seqs - clocks.keys()
    if unclocked:
        raise TraceFileError(f"event {min(unclocked)} has no vector clock: the trace is damaged; "
                             f"{WHOLE_TRACE}")


def trace_from_proto(pb: trace_pb2.Trace) -> Trace:
    """The Trace of a parsed protobuf; TraceFileError if its parts do not fit together."""
    if pb.format_version not in READ_VERSIONS:
        raise _unknown_version(pb.format_version)
    topo = Topology(
        addresses={n.name: n.address for n in pb.nodes if n.HasField("address")},
        cgroups={n.name: n.cgroup for n in pb.nodes if n.HasField("cgroup")},
        addresses6={n.name: n.address6 for n in pb.nodes if n.HasField("address6")})
    events = [_event(e) for e in pb.events]
    messages = [_message(m) for m in pb.messages]
    edges = [_edge(i, e) for i, e in enumerate(pb.edges)]
    if pb.format_version < FORMAT_VERSION:
        _peeks_from_edges(messages, edges)
    clocks = {c.event: dict(c.clock) for c in pb.clocks}
    _check_references(events, messages, edges, clocks)
    if pb.format_version == LEGACY_VERSION:  # before tcp_state events had keys of their own
        threads = {e.seq: f"{e.node}/{e.pid}/{e.tid}" for e in events}
    else:
        threads = {e.seq: thread_key(e) for e in events}
    faults = [FaultReport(**{f.name: _plain(getattr(r, f.name)) for f in _FAULT_FIELDS})
              for r in pb.faults]
    return Trace(dict(pb.meta), topo, events, messages, edges,
                 VectorClocks.from_dicts(clocks, threads), pb.lost_events, faults)


def _peeks_from_edges(messages: list[Message], edges: list[Edge]) -> None:
    """Messages' peek_seqs from the peek edges: a version-2 file written
    while peek edges already existed, but not peek_seqs, has only these."""
    peeks: dict[int, list[int]] = {}
    for edge in edges:
        if edge.kind == "peek":
            peeks.setdefault(edge.src, []).append(edge.dst)
    for m in messages:
        if m.send_seq in peeks and not m.peek_seqs:
            m.peek_seqs = tuple(sorted(peeks[m.send_seq]))


_FAULT_FIELDS = dataclasses.fields(FaultReport)


def _plain(value: Any) -> Any:
    """protobuf repeated fields -> lists"""
    return list(value) if hasattr(value, "extend") else value


# ---------------------------------------------------------------- files ----

def trace_to_bytes(trace: Trace) -> bytes:
    """A trace file's contents: the Trace and its SHA-256, in a TraceFile."""
    body = trace_to_proto(trace).SerializeToString()
    return trace_pb2.TraceFile(format_version=FORMAT_VERSION, trace=body,
                               sha256=hashlib.sha256(body).digest()).SerializeToString()


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write atomically (a reader never sees half a trace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(trace_to_bytes(trace))
    tmp.replace(path)


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """The trace in a file. TraceFileError when the file is not a whole,
    sound trace (empty, cut short, damaged, another format, a directory or a
    device); OSError when it cannot be read at all."""
    return trace_from_bytes(_file_bytes(Path(path)))


def _file_bytes(path: Path) -> bytes:
    """Refuse what is not a file by what it is: /dev/zero would never end."""
    mode = path.stat().st_mode
    if stat.S_ISDIR(mode):
        raise TraceFileError(f"is a directory, not a trace file; {WHOLE_TRACE}")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        raise TraceFileError(f"is a device, not a trace file; {WHOLE_TRACE}")
    return path.read_bytes()


def trace_from_bytes(data: bytes) -> Trace:
    """The trace in a file's contents (see read_trace)."""
    if not data:
        raise TraceFileError(f"the file is empty (0 bytes); {WHOLE_TRACE}")
    head = _parse(trace_pb2.TraceFile(), data)
    if head.format_version in (CHECKSUM_VERSION, FORMAT_VERSION):
        pb = _parse(trace_pb2.Trace(), _checked_body(head, len(data)))
        if pb.format_version != head.format_version:  # the version is outside the checksum
            raise TraceFileError(f"the file is damaged: it says format version "
                                 f"{head.format_version}, its trace {pb.format_version}; "
                                 f"{WHOLE_TRACE}")
        return trace_from_proto(pb)
    if head.format_version == LEGACY_VERSION:
        return trace_from_proto(_legacy_trace(data))
    raise _unknown_version(head.format_version)


def _parse(pb: Any, data: bytes) -> Any:
    try:
        pb.ParseFromString(data)
    except DecodeError:
        raise TraceFileError(f"not a bop-bpf trace, or one cut short or damaged: protobuf "
                             f"cannot parse its {len(data)} bytes; {WHOLE_TRACE}") from None
    return pb


def _checked_body(head: trace_pb2.TraceFile, size: int) -> bytes:
    """The serialized Trace, once its checksum says it is whole. A file cut
    at a field boundary parses, but lacks the fields written last."""
    if not head.trace or not head.sha256:  # never empty when written: the Trace has a version
        raise TraceFileError(f"the file is cut short: it ends after {size} bytes, before its "
                             f"checksum; {WHOLE_TRACE}")
    if hashlib.sha256(head.trace).digest() != head.sha256:
        raise TraceFileError(f"the file is damaged: its SHA-256 checksum does not match its "
                             f"contents; {WHOLE_TRACE}")
    return head.trace


def _legacy_trace(data: bytes) -> trace_pb2.Trace:
    """A version-1 file (a bare Trace, no checksum). Its writer set `complete`
    (field 9) exactly when lost_events (field 8) was 0, and fields are
    written in order, so a cut before them shows as the two disagreeing; a
    cut inside the fault list, written last, cannot be seen."""
    pb = _parse(trace_pb2.Trace(), data)
    if pb.complete != (pb.lost_events == 0):
        raise TraceFileError(f"the file is cut short or damaged: a version-1 trace whose "
                             f"'complete' ({str(pb.complete).lower()}) disagrees with its lost "
                             f"events ({pb.lost_events}); {WHOLE_TRACE}")
    return pb


def _unknown_version(version: int) -> TraceFileError:
    if version == 0:
        return TraceFileError(f"not a bop-bpf trace: it has no trace format version; {WHOLE_TRACE}")
    return TraceFileError(f"trace format version {version} is not one this ldfi reads "
                          f"({', '.join(map(str, READ_VERSIONS))}): export it with the (newer) "
                          f"ldfi that wrote it; or, if it is not one, {WHOLE_TRACE}")


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
        "recv_seqs": list(m.recv_seqs), "peek_seqs": list(m.peek_seqs),
        "delivered": m.delivered, "size": m.size,
        "payload": escape_payload(m.payload), "payload_hash": m.payload_hash,
    }
    if m.byte_start is not None:
        out["bytes"] = [m.byte_start, m.byte_end]
    return out


def trace_to_json(trace: Trace) -> dict[str, Any]:
    """A readable dict (json.dumps-able): `ldfi export run.pb --format json`."""
    topo = trace.topology
    return {
        "format": JSON_FORMAT,
        "meta": dict(trace.meta),
        "complete": trace.complete,
        "lost_events": trace.lost_events,
        "nodes": [{"name": n, "address": topo.addresses.get(n),
                   "address6": topo.addresses6.get(n), "cgroup": topo.cgroups.get(n)}
                  for n in topo.nodes],
        "messages": [message_json(m) for m in trace.messages],
        "edges": [{"src": e.src, "dst": e.dst, "kind": e.kind} for e in trace.edges],
        "faults": [dataclasses.asdict(f) for f in trace.faults],
        "events": [_event_json(e, trace.vector_clocks[e.seq]) for e in trace.events],
    }
