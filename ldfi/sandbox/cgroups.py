"""cgroup v2 groups for one run: `<cgroup2 root>/ldfi-<slot>/<name>`, one per
node plus one for the client. A node's every process stays in its group, so
stopping a node is killing its group, and the tracer and fault injector can
scope themselves to a run by cgroup id."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

from tracer.kernel import cgroup2_root, cgroup_id


def cgroup_base() -> Path:
    root = cgroup2_root()
    if root is None:
        raise RuntimeError("no cgroup v2 hierarchy is mounted: run 'make setup' (it mounts one)")
    return root


def procs(group: Path) -> list[int]:
    try:
        text = (group / "cgroup.procs").read_text()
    except FileNotFoundError:
        return []
    return [int(pid) for pid in text.split()]


def is_populated(group: Path) -> bool:
    """True while the group or any descendant has a live process."""
    try:
        for line in (group / "cgroup.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
    except FileNotFoundError:
        return False
    return bool(procs(group))


def signal_group(group: Path, sig: int) -> None:
    for pid in procs(group):
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_group(group: Path) -> None:
    """SIGKILL every process in the group and its descendants, atomically
    (cgroup.kill also catches processes forked while it runs)."""
    kill_file = group / "cgroup.kill"
    if kill_file.exists():
        with suppress(FileNotFoundError):
            kill_file.write_text("1")
    else:  # kernels before 5.14
        signal_group(group, signal.SIGKILL)


def wait_empty(group: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_populated(group):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def remove_tree(group: Path) -> None:
    """rmdir the group and its descendants, deepest first. Kills what is left."""
    if not group.exists():
        return
    kill_group(group)
    wait_empty(group, 5.0)
    for dirpath, _dirnames, _files in sorted(os.walk(group), key=lambda w: -len(w[0])):
        with suppress(FileNotFoundError):
            os.rmdir(dirpath)


class RunCgroups:
    """The cgroup tree of one run slot."""

    def __init__(self, prefix: str, names: list[str]) -> None:
        self.root = cgroup_base() / prefix
        self.groups = {name: self.root / name for name in names}

    def build(self) -> None:
        if self.root.exists():  # a dead owner's leftovers: gc should have removed them
            remove_tree(self.root)
        self.root.mkdir()
        for group in self.groups.values():
            group.mkdir()

    def ids(self) -> dict[str, int]:
        """name -> the cgroup id BPF sees (bpf_get_current_cgroup_id)."""
        return {name: cgroup_id(group) for name, group in self.groups.items()}

    def destroy(self) -> None:
        remove_tree(self.root)
