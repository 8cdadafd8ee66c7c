"""Facts about the running kernel and its mounts that several parts need:
where cgroup v2 and tracefs live, how to silence bcc's compiler chatter,
how to link a program to a cgroup."""

from __future__ import annotations

import contextlib
import ctypes as ct
import functools
import os
from collections.abc import Iterator
from pathlib import Path

BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")


def _mounts() -> list[tuple[str, str]]:
    """(fstype, mountpoint) for every mount, from /proc/self/mounts."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((parts[2], parts[1]))
    return out


def cgroup2_root() -> Path | None:
    """The cgroup v2 mount point: /sys/fs/cgroup on a pure-v2 system, often
    /sys/fs/cgroup/unified on a hybrid one. None when v2 is not mounted."""
    candidates = [Path(mnt) for fstype, mnt in _mounts() if fstype == "cgroup2"]
    if not candidates:
        return None
    # Prefer the standard location when several exist.
    candidates.sort(key=lambda p: (p != Path("/sys/fs/cgroup"), len(str(p))))
    return candidates[0]


def tracefs_root() -> Path | None:
    for fstype, mnt in _mounts():
        if fstype == "tracefs":
            return Path(mnt)
    return None


def cgroup_id(path: Path) -> int:
    """The id BPF's bpf_get_current_cgroup_id() returns for a v2 cgroup: its inode number."""
    return os.stat(path).st_ino


@functools.cache
def _libbpf() -> ct.CDLL:
    lib = ct.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_link_create.argtypes = [ct.c_int, ct.c_int, ct.c_int, ct.c_void_p]
    return lib


def link_to_cgroup(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """A BPF link of a cgroup program to a cgroup (libbpf's bpf_link_create;
    bcc 0.26 only attaches, which outlives the process). The kernel detaches
    the program when the returned fd is closed, or when the process dies.
    Raises OSError."""
    fd = _libbpf().bpf_link_create(prog_fd, cgroup_fd, attach_type, None)
    if fd < 0:
        raise OSError(-fd, os.strerror(-fd))
    return fd


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Hide what C code writes to fd 2 (bcc's clang warnings about the 6.1
    headers, libbpf's load errors) while keeping Python's own stderr intact."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
