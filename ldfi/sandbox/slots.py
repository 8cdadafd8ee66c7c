"""Run slots: a small integer that names everything one run creates
(`ldfi-<slot>-...`) and picks its private /24.

A slot is owned by whoever holds an flock on /run/ldfi/slots/<slot>.lock.
The kernel drops that lock when the owner dies, however it dies (even
kill -9), so `ldfi gc` can tell a live run's resources from a dead one's
without guessing: it never touches a slot it cannot lock.
"""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

SLOT_DIR = Path("/run/ldfi/slots")
# 198.18.0.0/15 holds 512 /24 subnets; the last one is kept for the
# doctor and benchmarks, which build namespaces outside any run.
MAX_SLOTS = 511
PREFIX = "ldfi-"
_SLOT_NAME = re.compile(r"^ldfi-(\d+)(?:-|$)")


@dataclass
class Slot:
    index: int
    _fd: int

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.index}"

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def _lock_path(index: int) -> Path:
    return SLOT_DIR / f"{index}.lock"


def _try_lock(index: int, create: bool = True) -> int | None:
    """The slot's lock fd if we got the lock (close it to release), else None.
    With create=False, a slot whose lock file does not exist gives None."""
    if create:
        SLOT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(_lock_path(index), os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def acquire_slot() -> Slot:
    """Lock the lowest free slot. The caller must clean the slot's leftovers
    (from a killed owner) before using it."""
    for index in range(MAX_SLOTS):
        fd = _try_lock(index)
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return Slot(index, fd)
    raise RuntimeError(f"all {MAX_SLOTS} run slots are busy: too many runs at once")


def slot_of(name: str) -> int | None:
    """The slot a resource name belongs to ('ldfi-7-node-a' -> 7), or None."""
    m = _SLOT_NAME.match(name)
    return int(m.group(1)) if m else None


def lock_if_free(index: int) -> int | None:
    """The slot's lock fd if nobody holds it (close it to release), else None.
    Leftovers of a slot without a lock file (removed by hand) still belong to
    nobody, so the file is created then."""
    return _try_lock(index)


def slot_is_live(index: int) -> bool:
    """True while some process holds the slot's lock (a run is using it)."""
    if not _lock_path(index).exists():
        return False  # never used, and asking must not create a lock file
    fd = _try_lock(index, create=False)
    if fd is None:
        return _lock_path(index).exists()  # held, unless it vanished meanwhile
    os.close(fd)
    return False
