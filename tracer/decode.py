"""Decode the tracer's ring-buffer records (bpf/trace.h) into Events.

The constants come from bpf/trace.h itself, so the C header stays the one
definition of the record layout; precompiled struct formats mirror the C
structs (little-endian, no interior padding) and are checked against the
header's size constants at import.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Mapping
from pathlib import Path

from tracer.events import EXEC, EXIT, FAULT, FORK, SOCK, TCP_STATE, Event

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"


def header_constants(path: Path = BPF_DIR / "trace.h") -> dict[str, int]:
    text = path.read_text()
    pattern = r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)"
    return {m.group(1): int(m.group(2), 0) for m in re.finditer(pattern, text, re.M)}


H = header_constants()
H_FAULTS = header_constants(BPF_DIR / "faults.h")
SYSCALLS = {v: k[4:].lower() for k, v in H.items() if k.startswith("SYS_")}
PROTOCOLS = {6: "tcp", 17: "udp"}
FAMILIES = {2: 4, 10: 6}

_HDR = struct.Struct("<QIIIIQ16s")  # struct ev_hdr
_SOCK = struct.Struct("<QQqQiHHHHHHHBBIIIII16s16s")  # struct ev_sock after the header
_PROC = struct.Struct("<IIIiII64s")  # struct ev_proc after the header
_TCPSTATE = struct.Struct("<QiiHHHH16s16sBB6x")  # struct ev_tcpstate after the header
assert _HDR.size + _SOCK.size == H["EV_SOCK_SIZE_BASE"]
assert _HDR.size + _PROC.size == H["EV_PROC_SIZE"]
_FAULT = struct.Struct("<QQIIII")  # struct ev_fault after the header
assert _HDR.size + _TCPSTATE.size == H["EV_TCPSTATE_SIZE"]
assert _HDR.size + _FAULT.size == H_FAULTS["EV_FAULT_SIZE"]


def _address(family: int, raw: bytes) -> str:
    if family == 2:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == 10:
        addr = ipaddress.IPv6Address(raw)
        # A dual-stack socket talking to an IPv4 peer: name the peer as IPv4,
        # so both ends of one connection agree on its addresses.
        return str(addr.ipv4_mapped) if addr.ipv4_mapped else str(addr)
    return ""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class Decoder:
    """Turns raw records into Events; `nodes` maps cgroup id -> node name."""

    def __init__(self, nodes: Mapping[int, str]) -> None:
        self.nodes = dict(nodes)
        self.seq = 0

    def decode(self, record: bytes | memoryview) -> Event | None:
        ts, kind, pid, tid, netns, cgroup, comm = _HDR.unpack_from(record, 0)
        event = Event(seq=self.seq, kind="", ts=ts, pid=pid, tid=tid, comm=_cstr(comm),
                      node=self.nodes.get(cgroup, ""), cgroup=cgroup, netns=netns)
        if kind == H["EV_SOCK"]:
            self._sock(event, record)
        elif kind in (H["EV_FORK"], H["EV_EXEC"], H["EV_EXIT"]):
            self._proc(event, kind, record)
        elif kind == H["EV_TCPSTATE"]:
            self._tcp_state(event, record)
        elif kind == H_FAULTS["EV_FAULT"]:
            self._fault(event, record)
        else:
            return None
        self.seq += 1
        return event

    def _sock(self, e: Event, record: bytes) -> None:
        (ts_enter, sk, ret, count, fd, sysid, family, proto, _sotype, lport, rport, rfamily,
         state, flags, msg_flags, seq_w, seq_r, msg_idx, cap, laddr, raddr) = \
            _SOCK.unpack_from(record, _HDR.size)
        e.kind = SOCK
        e.syscall = SYSCALLS.get(sysid, str(sysid))
        e.ts_enter, e.sk, e.ret, e.count, e.fd = ts_enter, sk, ret, count, fd
        e.proto = PROTOCOLS.get(proto, "")
        e.family = FAMILIES.get(family, 0)
        e.laddr, e.lport = _address(family, laddr), lport
        e.raddr, e.rport = _address(rfamily, raddr), rport
        e.state, e.msg_flags, e.msg_idx = state, msg_flags, msg_idx
        if flags & H["F_SEQ"]:
            e.seq_w, e.seq_r = seq_w, seq_r
        e.raddr_from_arg = bool(flags & H["F_RADDR_ARG"])
        e.exit_only = bool(flags & H["F_NO_ENTRY"])
        if cap:
            start = H["EV_SOCK_SIZE_BASE"]
            e.payload = bytes(record[start:start + cap])

    def _proc(self, e: Event, kind: int, record: bytes) -> None:
        ppid, child_pid, child_tid, exit_code, flags, _pad, filename = \
            _PROC.unpack_from(record, _HDR.size)
        if kind == H["EV_FORK"]:
            e.kind, e.ppid, e.child_pid, e.child_tid = FORK, ppid, child_pid, child_tid
            e.is_thread = bool(flags)
        elif kind == H["EV_EXEC"]:
            e.kind, e.ppid, e.filename = EXEC, ppid, _cstr(filename)
        else:
            e.kind, e.exit_code = EXIT, exit_code

    def _tcp_state(self, e: Event, record: bytes) -> None:
        (sk, old, new, family, proto, lport, rport, laddr, raddr, _owner, sk_err) = \
            _TCPSTATE.unpack_from(record, _HDR.size)
        e.kind, e.sk, e.old_state, e.new_state = TCP_STATE, sk, old, new
        e.ret = -sk_err  # the sock's pending error at the change (a failed connect's)
        e.proto, e.family = PROTOCOLS.get(proto, ""), FAMILIES.get(family, 0)
        e.laddr, e.lport = _address(family, laddr), lport
        e.raddr, e.rport = _address(family, raddr), rport

    def _fault(self, e: Event, record: bytes) -> None:
        sk, ts_enter, slot, action, seq, _nth = _FAULT.unpack_from(record, _HDR.size)
        e.kind, e.sk, e.ts_enter, e.fault_slot, e.fault_action = FAULT, sk, ts_enter, slot, action
        e.seq_w = seq
