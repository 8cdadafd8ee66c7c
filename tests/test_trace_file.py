"""Trace files (ldfi.trace.wire, `ldfi export`): a file cut short, damaged,
crafted or not a file at all is refused with one line saying why, never
read as a shorter trace and never a traceback."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from conftest import ldfi

from bopbpf import trace_pb2
from ldfi.trace import Edge, Topology, Trace, build_trace, concurrent, happens_before
from ldfi.trace.wire import (
    FORMAT_VERSION,
    JSON_FORMAT,
    TraceFileError,
    read_trace,
    trace_from_bytes,
    trace_to_bytes,
    trace_to_json,
    trace_to_proto,
    write_trace,
)
from tracer.events import SOCK, TCP_STATE, Event
from tracer.faults import FaultReport

ADDR = {"client": "198.18.0.1", "server": "198.18.0.2"}


def udp_ping_trace(pings: int = 3) -> Trace:
    """`pings` datagrams client -> server, each answered; with a fault report,
    so that every part of the file (the fault list last) has something."""
    events: list[Event] = []

    def add(node: str, syscall: str, lport: int, peer: str, rport: int, data: bytes) -> None:
        seq = len(events)
        events.append(Event(seq=seq, kind=SOCK, ts=1000 * (seq + 1), ts_enter=1000 * seq + 500,
                            pid=10 if node == "client" else 20, tid=10 if node == "client" else 20,
                            comm="p", node=node, syscall=syscall, proto="udp", family=4,
                            fd=5, sk=0xC0, laddr=ADDR[node], lport=lport, raddr=ADDR[peer],
                            rport=rport, ret=len(data), count=len(data), payload=data,
                            raddr_from_arg=syscall == "sendto"))

    for i in range(pings):
        add("client", "sendto", 4000, "server", 9000, b"ping %d" % i)
        add("server", "recvfrom", 9000, "client", 4000, b"ping %d" % i)
        add("server", "sendto", 9000, "client", 4000, b"pong %d" % i)
        add("client", "recvfrom", 4000, "server", 9000, b"pong %d" % i)
    trace = build_trace(events, Topology(addresses=dict(ADDR), cgroups={"client": 1, "server": 2}),
                        meta={"scenario": "ping"})
    trace.faults = [FaultReport("omission(client->server:udp0#9)", "send 9", "drop")]
    return trace


def proto_file(pb: trace_pb2.Trace) -> bytes:
    """What write_trace would write for this protobuf (a valid checksum), so
    that a crafted trace reaches the checks behind the checksum."""
    body = pb.SerializeToString()
    return trace_pb2.TraceFile(format_version=FORMAT_VERSION, trace=body,
                               sha256=hashlib.sha256(body).digest()).SerializeToString()


def refusal(data: bytes) -> str:
    with pytest.raises(TraceFileError) as caught:
        trace_from_bytes(data)
    return str(caught.value)


# ------------------------------------------------------------ whole files ----

def test_round_trip_through_a_file(tmp_path: Path) -> None:
    trace = udp_ping_trace()
    path = tmp_path / "run.pb"
    write_trace(trace, path)
    back = read_trace(path)
    assert back == trace and dict(back.vector_clocks) == dict(trace.vector_clocks)
    assert back.faults == trace.faults and len(back.messages) == 6
    assert trace_to_json(back)["format"] == JSON_FORMAT


def test_a_version_2_file_is_still_read() -> None:
    """Files written before peeks: a TraceFile with a checksum, version 2."""
    trace = udp_ping_trace()
    pb = trace_to_proto(trace)
    pb.format_version = 2
    body = pb.SerializeToString()
    data = trace_pb2.TraceFile(format_version=2, trace=body,
                               sha256=hashlib.sha256(body).digest()).SerializeToString()
    assert trace_from_bytes(data) == trace


def test_a_version_2_file_with_peek_edges_gets_its_peek_seqs() -> None:
    """Version 2 files written while peek edges existed but peek_seqs did
    not: the messages' peeks come back from the edges."""
    trace = udp_ping_trace()
    m, peek = trace.messages[0], trace.messages[1].send_seq
    trace.edges.append(Edge(m.send_seq, peek, "peek"))
    pb = trace_to_proto(trace)
    pb.format_version = 2
    body = pb.SerializeToString()
    data = trace_pb2.TraceFile(format_version=2, trace=body,
                               sha256=hashlib.sha256(body).digest()).SerializeToString()
    assert trace_from_bytes(data).messages[0].peek_seqs == (peek,)


def test_peeks_survive_a_file(tmp_path: Path) -> None:
    trace = udp_ping_trace()
    m = trace.messages[0]
    peek = trace.messages[1].send_seq  # any event will do for the file
    trace.messages[0] = dataclasses.replace(m, peek_seqs=(peek,))
    trace.edges.append(Edge(m.send_seq, peek, "peek"))
    write_trace(trace, tmp_path / "run.pb")
    back = read_trace(tmp_path / "run.pb")
    assert back.messages[0].peek_seqs == (peek,) and Edge(m.send_seq, peek, "peek") in back.edges
    assert trace_to_json(back)["messages"][0]["peek_seqs"] == [peek]


def test_a_version_1_file_is_still_read() -> None:
    """Files written before the checksum: a bare Trace, format_version 1."""
    trace = udp_ping_trace()
    pb = trace_to_proto(trace)
    pb.format_version = 1
    assert trace_from_bytes(pb.SerializeToString()) == trace


def test_a_version_1_file_keeps_its_tcp_state_clocks() -> None:
    """Version 1 keyed a tcp_state event's clock component node/pid/tid (all
    0): read with today's key, the event would have happened before all."""
    trace = udp_ping_trace()
    last = trace.events[-1]
    state = Event(seq=last.seq + 1, kind=TCP_STATE, ts=last.ts + 1000, ts_enter=last.ts + 1000,
                  pid=0, tid=0, comm="", node="server", sk=0xB0, old_state=1, new_state=8)
    trace = build_trace([*trace.events, state], trace.topology)
    pb = trace_to_proto(trace)
    pb.format_version = 1
    for clock in pb.clocks:
        if f"server/tcp_state/{state.seq}" in clock.clock:
            clock.clock["server/0/0"] = clock.clock.pop(f"server/tcp_state/{state.seq}")
    old = trace_from_bytes(pb.SerializeToString())
    assert not happens_before(old, state.seq, 0)
    assert concurrent(old, state.seq, 0)


def test_a_version_1_file_cut_before_its_complete_flag_is_refused() -> None:
    pb = trace_to_proto(udp_ping_trace())
    pb.format_version = 1
    pb.ClearField("complete")  # what a cut before field 9 leaves
    pb.ClearField("faults")
    assert "cut short or damaged" in refusal(pb.SerializeToString())


# ------------------------------------------------- cut short and damaged ----

def test_every_cut_of_a_file_is_refused() -> None:
    """Protobuf has no end marker: without the checksum, most of these cuts
    parsed as a shorter trace (0 events, "complete": true)."""
    data = trace_to_bytes(udp_ping_trace())
    for size in range(len(data)):
        with pytest.raises(TraceFileError):
            trace_from_bytes(data[:size])


def test_every_damaged_byte_is_refused() -> None:
    data = trace_to_bytes(udp_ping_trace())
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[i] ^= flip
            with pytest.raises(TraceFileError):
                trace_from_bytes(bytes(damaged))


def test_reasons_a_person_understands() -> None:
    data = trace_to_bytes(udp_ping_trace())
    assert refusal(b"").startswith("the file is empty (0 bytes)")
    body_end = data.index(hashlib.sha256(trace_pb2.TraceFile.FromString(data).trace).digest())
    assert refusal(data[:body_end - 2]).startswith("the file is cut short")
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x01
    message = refusal(bytes(damaged))
    assert message.startswith(("the file is damaged", "not a bop-bpf trace, or one cut short"))
    assert refusal(b"\xff\x00garbage" * 5).startswith("not a bop-bpf trace")
    newer = trace_pb2.TraceFile(format_version=7, trace=b"x", sha256=b"y").SerializeToString()
    assert "trace format version 7 is not one this ldfi reads" in refusal(newer)


# ------------------------------------------- crafted, with a valid checksum ----

def test_an_edge_of_an_unknown_kind_is_named() -> None:
    pb = trace_to_proto(udp_ping_trace())
    pb.edges[1].kind = 77
    assert refusal(proto_file(pb)).startswith(
        f"edge 1 ({pb.edges[1].src} -> {pb.edges[1].dst}) has kind 77, not one of program, "
        "fork, connect, message")


def test_references_to_events_that_are_not_there_are_named() -> None:
    clock = trace_to_proto(udp_ping_trace())
    clock.clocks.add(event=99).clock.update({"x": 1})
    assert refusal(proto_file(clock)).startswith(
        "a vector clock names event 99, which is not in the trace")
    edge = trace_to_proto(udp_ping_trace())
    edge.edges.add(src=0, dst=42, kind=trace_pb2.EDGE_KIND_PROGRAM)
    assert "(0 -> 42) names event 42, which is not in the trace" in refusal(proto_file(edge))
    message = trace_to_proto(udp_ping_trace())
    message.messages[0].recv_seqs.append(55)
    assert "names event 55, which is not in the trace" in refusal(proto_file(message))
    unclocked = trace_to_proto(udp_ping_trace())
    del unclocked.clocks[3]
    assert refusal(proto_file(unclocked)).startswith("event 3 has no vector clock")


# ---------------------------------------------------------- ldfi export ----

def export_refuses(path: Path, reason: str) -> None:
    done = ldfi("export", str(path))
    assert done.returncode == 2 and done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"ldfi: error: {path}: {reason}"), lines[0]


def test_export_of_a_cut_file_exits_2_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.pb"
    write_trace(udp_ping_trace(), good)
    whole = ldfi("export", str(good))
    assert whole.returncode == 0 and '"complete": true' in whole.stdout, whole.stderr
    cut = tmp_path / "cut.pb"
    cut.write_bytes(good.read_bytes()[:207])
    export_refuses(cut, "not a bop-bpf trace, or one cut short or damaged")
    empty = tmp_path / "empty.pb"
    empty.write_bytes(b"")
    export_refuses(empty, "the file is empty (0 bytes)")


def test_export_of_a_directory_or_a_device_says_what_it_is(tmp_path: Path) -> None:
    export_refuses(tmp_path, "is a directory, not a trace file")
    export_refuses(Path("/dev/zero"), "is a device, not a trace file")
