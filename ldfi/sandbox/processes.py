"""Starting and stopping a command inside a run's namespace and cgroup.

The engine makes itself a child subreaper, so a node's grandchildren whose
parent dies are re-parented to the engine, not to PID 1 (which reaps slowly
here): node processes stay children of the sandbox and are waited for.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from ldfi.sandbox import cgroups

_PR_SET_CHILD_SUBREAPER = 36
# Joins the cgroup before exec'ing `ip netns exec`, so that every process the
# command ever forks is born inside the cgroup (no preexec_fn: it is unsafe
# once the tracer's threads exist).
_ENTER = 'echo $$ > "$1" && shift && exec "$@"'
# Absolute paths: a scenario may set its own PATH in a node's env.
SH = "/bin/sh"
IP = shutil.which("ip") or "/usr/sbin/ip"


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


@dataclass
class Process:
    """A command running in the sandbox, with where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    group: Path
    stdout: Path
    stderr: Path
    started: float  # time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> int | None:
        return self.popen.poll()


def launch(
    name: str,
    cmd: str,
    *,
    netns: str,
    group: Path,
    cwd: Path,
    env: Mapping[str, str],
    log_dir: Path,
    log_name: str,
) -> Process:
    stdout, stderr = log_dir / f"{log_name}.out", log_dir / f"{log_name}.err"
    argv = [SH, "-c", _ENTER, "ldfi-enter", str(group / "cgroup.procs"),
            IP, "netns", "exec", netns, SH, "-c", cmd]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        popen = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,  # Ctrl-C at the terminal reaches the engine, not the nodes
        )
    _await_cgroup(popen, group)
    return Process(name, popen, group, stdout, stderr, time.monotonic())


def _await_cgroup(popen: subprocess.Popen[bytes], group: Path, timeout: float = 5.0) -> None:
    """Return once the child has joined its cgroup. Until then a stop would
    signal an empty group and the command would escape it."""
    deadline = time.monotonic() + timeout
    while popen.pid not in cgroups.procs(group):
        if popen.poll() is not None:
            return  # it died before joining; its exit code and log tell why
        if time.monotonic() >= deadline:
            # Outside its group it would escape cgroup.kill, and once the
            # namespace is gone nothing could find it again: kill it now.
            popen.kill()
            popen.wait()
            raise RuntimeError(f"a process did not join cgroup {group} within {timeout:g}s")
        time.sleep(0.0005)


def stop(processes: list[Process], grace: Mapping[str, float]) -> None:
    """SIGTERM every group, give each its grace period, then kill what is left
    and wait for every child, including re-parented orphans."""
    sessions = {p.pid for p in processes}
    members: set[int] = set()
    for p in processes:
        members.update(cgroups.procs(p.group))
        cgroups.signal_group(p.group, signal.SIGTERM)
    start = time.monotonic()
    for p in processes:
        remaining = grace.get(p.name, 2.0) - (time.monotonic() - start)
        if not cgroups.wait_empty(p.group, max(remaining, 0.0)):
            cgroups.kill_group(p.group)
            cgroups.wait_empty(p.group, 5.0)
    for p in processes:
        # The group is empty, so the child is gone or about to be: reap it.
        try:
            p.popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            p.popen.kill()  # alive though its group is empty (it moved itself out)
            p.popen.wait()
    reap_orphans(sessions, members)


def reap_orphans(sessions: set[int], members: set[int]) -> None:
    """Reap zombies re-parented to us that belong to one of our sessions or
    were in one of our groups (a daemon that called setsid leaves the session)."""
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the ")" of comm: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid, session = fields[0], int(fields[1]), int(fields[3])
        pid = int(entry.name)
        if state == "Z" and ppid == me and (session in sessions or pid in members):
            with suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 10) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
