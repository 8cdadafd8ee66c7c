"""Readiness checks: when is a node's service up?

Port checks read the node's own socket tables (/proc/<pid>/net/tcp, udp)
instead of connecting: a probe connection would be a message the tracer sees
and the node may act on, and the lineage must not contain our own probes.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ldfi.sandbox.processes import IP, SH, Process, tail
from ldfi.scenario import Ready

POLL = 0.01
_TCP_LISTEN = "0A"


class NotReady(Exception):
    """The node exited or timed out before it was ready; the message says why."""


def _bound_ports(pid: int, proto: str, state: str | None) -> set[int]:
    ports = set()
    for table in (proto, proto + "6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in lines:
            fields = line.split()
            if state is None or fields[3] == state:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _log_matches(proc: Process, pattern: re.Pattern[str]) -> bool:
    for path in (proc.stdout, proc.stderr):
        try:
            if pattern.search(path.read_text(errors="replace")):
                return True
        except FileNotFoundError:
            pass
    return False


def _cmd_succeeds(
    cmd: str, netns: str, cwd: Path, env: Mapping[str, str], timeout: float
) -> bool:
    try:
        done = subprocess.run(
            [IP, "netns", "exec", netns, SH, "-c", cmd], cwd=cwd, env=dict(env),
            timeout=max(timeout, 0.1),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def describe(ready: Ready) -> str:
    if ready.kind in ("tcp", "udp"):
        return f"{ready.kind} {ready.port}"
    if ready.kind == "log":
        return f"log /{ready.pattern}/"
    if ready.kind == "delay":
        return f"delay {ready.delay}s"
    if ready.kind == "cmd":
        return f"cmd {ready.cmd!r}"
    return "at once"


def wait_ready(
    ready: Ready, proc: Process, *, netns: str, cwd: Path, env: Mapping[str, str],
    ready_cmd: str | None, deadline: float,
) -> float:
    """Block until `proc` is ready; return seconds since it started.

    `deadline` (monotonic) is the run's own limit; the check's timeout applies too.
    """
    limit = min(deadline, proc.started + ready.timeout)
    pattern = re.compile(ready.pattern) if ready.kind == "log" and ready.pattern else None
    while True:
        code = proc.exited()
        if code is not None:
            raise NotReady(
                f"node '{proc.name}' exited with code {code} before it was ready "
                f"({describe(ready)}); last log lines:\n{_last_lines(proc)}"
            )
        if _is_ready(ready, proc, pattern, netns, cwd, env, ready_cmd, limit):
            return time.monotonic() - proc.started
        if time.monotonic() >= limit:
            raise NotReady(
                f"node '{proc.name}' was not ready ({describe(ready)}) after "
                f"{time.monotonic() - proc.started:.1f}s; last log lines:\n{_last_lines(proc)}"
            )
        time.sleep(POLL)


def _is_ready(
    ready: Ready, proc: Process, pattern: re.Pattern[str] | None, netns: str, cwd: Path,
    env: Mapping[str, str], ready_cmd: str | None, limit: float,
) -> bool:
    if ready.kind == "tcp":
        return ready.port in _bound_ports(proc.pid, "tcp", _TCP_LISTEN)
    if ready.kind == "udp":
        return ready.port in _bound_ports(proc.pid, "udp", None)
    if ready.kind == "log":
        assert pattern is not None
        return _log_matches(proc, pattern)
    if ready.kind == "delay":
        assert ready.delay is not None
        return time.monotonic() - proc.started >= ready.delay
    if ready.kind == "cmd":
        assert ready_cmd is not None
        ok = _cmd_succeeds(ready_cmd, netns, cwd, env, limit - time.monotonic())
        if not ok:
            time.sleep(0.05)  # a failing check command should not spin
        return ok
    return True


def _last_lines(proc: Process) -> str:
    out = [f"  {line}" for line in tail(proc.stderr, 8).splitlines()]
    out += [f"  {line}" for line in tail(proc.stdout, 4).splitlines()]
    return "\n".join(out) or "  (no output)"
