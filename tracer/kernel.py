"""Facts about the running kernel and its mounts that several parts need:
where cgroup v2 and tracefs live, how to silence bcc's compiler chatter."""

from __future__ import annotations

import contextlib
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
