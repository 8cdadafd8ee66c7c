"""Find and remove what a killed engine left behind: network namespaces
(with their veths, bridge and tc filters), /etc/netns host files, cgroups,
the processes in them, and pinned BPF objects.

Ownership is decided without guessing. `ldfi-<slot>-...` belongs to a run
slot, live while its flock is held; `ldfi-<tool>-<pid>...` (e.g. the doctor's
probes) belongs to a process, live while that pid exists. Live resources are
never touched, so `gc` is safe while other runs proceed.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ldfi.sandbox import cgroups, network, slots
from tracer.kernel import cgroup2_root

BPF_FS = Path("/sys/fs/bpf")
_OWNER_PID = re.compile(r"^ldfi-[a-z]+-(\d+)(?:-|$)")


@dataclass(frozen=True)
class Leftover:
    kind: str  # "netns", "hosts", "cgroup", "process", "bpf-pin"
    name: str
    path: Path

    def describe(self) -> str:
        return f"{self.kind:8} {self.name}"


def owner_is_live(name: str) -> bool:
    slot = slots.slot_of(name)
    if slot is not None:
        return slots.slot_is_live(slot)
    m = _OWNER_PID.match(name)
    if m:
        return Path(f"/proc/{m.group(1)}").exists()
    return False  # an ldfi- name we cannot attribute: nobody can be using it


def _named(directory: Path | None) -> list[Path]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(slots.PREFIX))


def _processes_in_netns(inodes: dict[int, str]) -> list[Leftover]:
    """Processes still inside a dead run's namespaces (e.g. escaped their cgroup)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            ino = os.stat(f"/proc/{entry.name}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes:
            found.append(Leftover("process", f"pid {entry.name} in {inodes[ino]}",
                                  Path(f"/proc/{entry.name}")))
    return found


def find_leftovers(only_slot: int | None = None) -> list[Leftover]:
    """Everything ldfi-named whose owner is dead (or, with only_slot, that
    slot's resources whatever their owner: the caller holds its lock)."""

    def dead(name: str) -> bool:
        if only_slot is not None:
            return slots.slot_of(name) == only_slot
        return not owner_is_live(name)

    found: list[Leftover] = []
    for path in _named(cgroup2_root()):
        if dead(path.name):
            found.append(Leftover("cgroup", path.name, path))
    dead_netns = [p for p in _named(network.NETNS_DIR) if dead(p.name)]
    inodes = {}
    for path in dead_netns:
        ino = network.netns_inode(path.name)
        if ino is not None:
            inodes[ino] = path.name
    if inodes:
        found += _processes_in_netns(inodes)
    found += [Leftover("netns", p.name, p) for p in dead_netns]
    for path in _named(network.ETC_NETNS):
        if dead(path.name):
            found.append(Leftover("hosts", path.name, path))
    for path in _named(BPF_FS):
        if dead(path.name):
            found.append(Leftover("bpf-pin", path.name, path))
    return found


def remove(leftover: Leftover) -> None:
    if leftover.kind == "cgroup":
        cgroups.remove_tree(leftover.path)
    elif leftover.kind == "process":
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(leftover.path.name), signal.SIGKILL)
    elif leftover.kind in ("netns", "hosts"):
        network.remove_netns(leftover.name)
    elif leftover.kind == "bpf-pin":
        if leftover.path.is_dir():
            for child in leftover.path.iterdir():
                child.unlink()
            leftover.path.rmdir()
        else:
            leftover.path.unlink()


@dataclass
class Collected:
    removed: list[Leftover]
    failed: list[tuple[Leftover, str]]  # (what, why)


def collect(only_slot: int | None = None) -> Collected:
    """Remove every leftover (processes first: they pin namespaces).

    A slot's leftovers are removed while holding that slot's lock, so a run
    that takes the slot meanwhile is never touched (with only_slot the
    caller already holds it). Failures are reported, not raised: one stuck
    cgroup must not stop the rest from being collected."""
    done = Collected([], [])
    by_slot: dict[int | None, list[Leftover]] = {}
    for leftover in find_leftovers(only_slot):
        by_slot.setdefault(slots.slot_of(leftover.name), []).append(leftover)
    for slot, group in by_slot.items():
        if only_slot is not None or slot is None:
            _remove_all(group, done)
            continue
        lock = slots.lock_if_free(slot)
        if lock is None:
            continue  # a run took this slot after we looked: it is live now
        try:
            _remove_all(group, done)
        finally:
            os.close(lock)
    return done


def _remove_all(leftovers: list[Leftover], done: Collected) -> None:
    for leftover in leftovers:
        try:
            remove(leftover)
        except FileNotFoundError:
            pass
        except OSError as err:
            done.failed.append((leftover, err.strerror or str(err)))
            continue
        done.removed.append(leftover)
