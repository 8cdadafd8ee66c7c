"""Kernel struct member offsets from BTF (/sys/kernel/btf/vmlinux), read
at load time.

The running kernel differs from the headers bcc compiles against (Debian's
6.1 tree on a 6.18 kernel here), so every kernel-internal field the tracer
reads is addressed by an offset taken from the running kernel's own type
information and passed to the BPF C as a #define. Parsing the few structs we
need directly is ~10x faster than `bpftool btf dump` (tests compare both).

BTF layout (include/uapi/linux/btf.h): a header, then types (ids from 1),
each a 12-byte btf_type (name_off, info, size_or_type) plus kind-specific
trailing data; info holds vlen (bits 0-15), kind (24-28), kind_flag (31).
A struct member's offset is in bits; with kind_flag set, bits 0-23 are the
offset and 24-31 the bitfield size.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterator

BTF_PATH = "/sys/kernel/btf/vmlinux"

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, \
    KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, \
    KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, \
    KIND_TYPE_TAG, KIND_ENUM64 = range(1, 20)

# trailing bytes: fixed, or per vlen entry
_FIXED = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_PER_VLEN = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8,
             KIND_DATASEC: 12, KIND_ENUM64: 12}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BTF:
    """Index of every type's position; members decoded lazily."""

    def __init__(self, path: str = BTF_PATH) -> None:
        with open(path, "rb") as f:
            data = f.read()
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from("<HBBIIIII", data, 0)
        if magic != 0xEB9F:
            raise ValueError(f"not a little-endian BTF blob: {path}")
        self.data = data
        self.tstart = hdr_len + type_off
        self.sstart = hdr_len + str_off
        self.send = self.sstart + str_len
        self.pos = [0]  # pos[type_id] = byte position of its btf_type
        self.by_name = {}  # (kind, name_off) -> type id for STRUCT/UNION only
        self._index(type_len)

    def _index(self, type_len):
        data, pos = self.data, self.pos
        unpack = struct.Struct("<II").unpack_from
        fixed, per_vlen = _FIXED, _PER_VLEN
        p, end = self.tstart, self.tstart + type_len
        structs = []
        while p < end:
            name_off, info = unpack(data, p)
            kind = (info >> 24) & 0x1f
            pos.append(p)
            if kind in (KIND_STRUCT, KIND_UNION):
                structs.append((name_off, len(pos) - 1))
                p += 12 + 12 * (info & 0xffff)
            else:
                p += 12 + fixed.get(kind, 0) + per_vlen.get(kind, 0) * (info & 0xffff)
        self._structs = structs

    def name(self, off: int) -> str:
        s = self.sstart + off
        return self.data[s:self.data.index(b"\0", s)].decode()

    def find_func(self, name: str) -> int:
        """Type id of the FUNC `name` (e.g. a kfunc), or 0 when there is none.
        Found by its packed (name_off, info) words rather than a walk of
        every type."""
        data = self.data
        at = data.find(b"\0" + name.encode() + b"\0", self.sstart, self.send)
        if at < 0:
            return 0
        name_off = at + 1 - self.sstart
        for linkage in (0, 1, 2):  # static, global, extern
            needle = struct.pack("<II", name_off, KIND_FUNC << 24 | linkage)
            at = data.find(needle, self.tstart, self.sstart)
            while at >= 0:
                tid = bisect.bisect_left(self.pos, at)
                if tid < len(self.pos) and self.pos[tid] == at:
                    return tid
                at = data.find(needle, at + 1, self.sstart)
        return 0

    def find_struct(self, name: str) -> int:
        """First STRUCT/UNION with that name that has members (not a forward)."""
        want = name.encode()
        # compare names without decoding every string
        d, s0 = self.data, self.sstart
        for name_off, tid in self._structs:
            s = s0 + name_off
            if d[s:s + len(want)] == want and d[s + len(want)] == 0:
                return tid
        raise KeyError(f"struct {name} not in BTF")

    def type(self, tid: int) -> tuple[int, int, int, bool, int, int]:
        p = self.pos[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self.data, p)
        return name_off, (info >> 24) & 0x1f, info & 0xffff, bool(info >> 31), size_or_type, p

    def resolve(self, tid: int) -> int:
        """Skip typedef/const/volatile/restrict/type_tag."""
        while True:
            _n, kind, _v, _kf, t, _p = self.type(tid)
            if kind in _MODIFIERS:
                tid = t
            else:
                return tid

    def size(self, tid: int) -> int:
        tid = self.resolve(tid)
        _n, kind, _v, _kf, sz, p = self.type(tid)
        if kind in (KIND_STRUCT, KIND_UNION, KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return sz
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _idx, n = struct.unpack_from("<III", self.data, p + 12)
            return n * self.size(elem)
        raise ValueError(f"no size for kind {kind}")

    def members(self, tid: int) -> Iterator[tuple[int, int, int, int]]:
        tid = self.resolve(tid)
        _n, kind, vlen, kflag, _sz, p = self.type(tid)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise ValueError(f"type {tid} is not a struct/union")
        for i in range(vlen):
            mname, mtype, moff = struct.unpack_from("<III", self.data, p + 12 + 12 * i)
            if kflag:
                bitsize, bitoff = moff >> 24, moff & 0xffffff
            else:
                bitsize, bitoff = 0, moff
            yield mname, mtype, bitoff, bitsize

    def member(self, tid: int, name: str) -> tuple[int, int, int]:
        """(bit offset, bit size or 0, type id) of member `name`, searching
        anonymous struct/union members recursively (sock_common keeps
        skc_daddr, skc_dport, skc_num... inside anonymous unions/structs)."""
        for mname, mtype, bitoff, bitsize in self.members(tid):
            if mname == 0:
                inner = self.resolve(mtype)
                if self.type(inner)[1] in (KIND_STRUCT, KIND_UNION):
                    try:
                        o, bs, t = self.member(inner, name)
                        return bitoff + o, bs, t
                    except KeyError:
                        pass
            elif self.name(mname) == name:
                return bitoff, bitsize, mtype
        raise KeyError(name)

    def offset(self, struct_name: str, path: str) -> tuple[int, int]:
        """Byte offset of struct_name.path (path may be 'a.b.c' through
        embedded structs, not pointers). Returns (byte offset, byte size)."""
        tid = self.find_struct(struct_name)
        off = 0
        for part in path.split("."):
            bo, bs, tid = self.member(tid, part)
            if bs or bo % 8:
                raise ValueError(f"{struct_name}.{path} is a bitfield")
            off += bo
        return off // 8, self.size(tid)


# What the tracer needs: macro name -> (struct, member path)
NEEDED = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_TASK_PID": ("task_struct", "pid"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_EXIT_CODE": ("task_struct", "exit_code"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_INODE": ("file", "f_inode"),
    "OFF_FILE_PRIVATE": ("file", "private_data"),
    "OFF_INODE_MODE": ("inode", "i_mode"),
    "OFF_SOCKET_SK": ("socket", "sk"),
    "OFF_SOCKET_TYPE": ("socket", "type"),
    "OFF_SOCKET_FILE": ("socket", "file"),
    "OFF_SOCK_SOCKET": ("sock", "sk_socket"),  # not OFF_SK_: see OFF_SOCK_ERR
    "OFF_SK_FAMILY": ("sock", "__sk_common.skc_family"),
    "OFF_SK_STATE": ("sock", "__sk_common.skc_state"),
    "OFF_SK_DADDR": ("sock", "__sk_common.skc_daddr"),
    "OFF_SK_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "OFF_SK_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SK_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SK_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "OFF_SK_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
    "OFF_SK_NET": ("sock", "__sk_common.skc_net"),
    "OFF_SK_PROTOCOL": ("sock", "sk_protocol"),
    "OFF_SK_TYPE": ("sock", "sk_type"),
    "OFF_SOCK_ERR": ("sock", "sk_err"),  # not OFF_SK_: that span is read in one go
    "OFF_INET_SPORT": ("inet_sock", "inet_sport"),
    "OFF_TCP_COPIED_SEQ": ("tcp_sock", "copied_seq"),
    "OFF_TCP_WRITE_SEQ": ("tcp_sock", "write_seq"),
    "OFF_NSPROXY_NET": ("nsproxy", "net_ns"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    # for the typed loads (KFUNC_CAST): comm, and the cgroup id chain
    "OFF_TASK_COMM": ("task_struct", "comm"),
    "OFF_TASK_CGROUPS": ("task_struct", "cgroups"),
    "OFF_CSS_SET_DFL_CGRP": ("css_set", "dfl_cgrp"),
    "OFF_CGROUP_KN": ("cgroup", "kn"),
    "OFF_KERNFS_NODE_ID": ("kernfs_node", "id"),
    # a system call's arguments at its exit, from the task's saved user
    # registers (x86_64 calling convention; see trace.bpf.c USER_REGS)
    "OFF_REGS_ARG0": ("pt_regs", "di"),
    "OFF_REGS_ARG1": ("pt_regs", "si"),
    "OFF_REGS_ARG2": ("pt_regs", "dx"),
    "OFF_REGS_ARG3": ("pt_regs", "r10"),
    "OFF_REGS_ARG4": ("pt_regs", "r8"),
    "OFF_REGS_ARG5": ("pt_regs", "r9"),
    "OFF_REGS_ORIG_AX": ("pt_regs", "orig_ax"),  # the system call's number
    "OFF_REGS_AX": ("pt_regs", "ax"),  # -ENOSYS until the call returns
    "OFF_TASK_FLAGS": ("task_struct", "flags"),  # PF_IO_WORKER
}
# expected sizes: a layout change that alters a field's width must fail loudly
SIZES = {"OFF_FDT_MAX_FDS": 4, "OFF_INODE_MODE": 2, "OFF_SOCKET_TYPE": 2,
         "OFF_SK_FAMILY": 2, "OFF_SK_STATE": 1, "OFF_SK_DADDR": 4,
         "OFF_SK_RCV_SADDR": 4, "OFF_SK_DPORT": 2, "OFF_SK_NUM": 2,
         "OFF_SK_V6_DADDR": 16, "OFF_SK_V6_RCV_SADDR": 16, "OFF_SK_PROTOCOL": 2,
         "OFF_SK_TYPE": 2, "OFF_NET_INUM": 4, "OFF_TASK_PID": 4,
         "OFF_TASK_TGID": 4, "OFF_TASK_EXIT_CODE": 4, "OFF_TCP_COPIED_SEQ": 4,
         "OFF_TCP_WRITE_SEQ": 4, "OFF_INET_SPORT": 2, "OFF_TASK_COMM": 16,
         "OFF_SOCK_ERR": 4, "OFF_TASK_FLAGS": 4}


def offsets(btf: BTF | None = None) -> dict[str, int]:
    """NEEDED's offsets in `btf` (default: the running kernel's)."""
    btf = btf or BTF()
    out = {}
    for macro, (sname, mpath) in NEEDED.items():
        off, size = btf.offset(sname, mpath)
        want = SIZES.get(macro, 8)  # everything else is a pointer
        if size != want:
            raise ValueError(f"{sname}.{mpath} has size {size}, expected {want}")
        out[macro] = off
    # the BPF side reads struct sock_common's address fields with ONE
    # bpf_probe_read_kernel of its first SKC_SPAN bytes
    span = max(out[m] + SIZES.get(m, 8) for m in out if m.startswith("OFF_SK_")
               and m not in ("OFF_SK_PROTOCOL", "OFF_SK_TYPE"))
    out["SKC_SPAN"] = (span + 7) & ~7
    if out["OFF_SK_TYPE"] != out["OFF_SK_PROTOCOL"] + 2:
        raise ValueError("sk_protocol/sk_type not adjacent: update bpf/trace.bpf.c")
    return out


def cflags(offs: dict[str, int]) -> list[str]:
    return [f"-D{name}={value}" for name, value in sorted(offs.items())]
