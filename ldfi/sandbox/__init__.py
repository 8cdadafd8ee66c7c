"""The sandbox a run lives in: one network namespace and one cgroup per node
and for the client, a bridge in a namespace of its own, host names that
resolve in every namespace, per-process logs, and a guaranteed teardown.

    with Sandbox(["a", "b"], run_dir) as sb:
        sb.start("a", "python3 a.py", cwd=..., env=...)
        sb.run_client("python3 client.py", ...)

Everything created is named `ldfi-<slot>-...` (see slots.py) so that
`ldfi gc` can remove what a killed engine leaves behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from ldfi.sandbox import cgroups, gc, processes
from ldfi.sandbox.cgroups import RunCgroups
from ldfi.sandbox.network import RunNetwork
from ldfi.sandbox.processes import Process
from ldfi.sandbox.slots import Slot, acquire_slot

CLIENT = "client"


@dataclass
class Finished:
    """A client command (workload or check) that ran to its end."""

    exit_code: int | None  # None when it was killed for running over its timeout
    timed_out: bool
    duration: float
    stdout: Path
    stderr: Path


class Sandbox:
    def __init__(self, node_names: Sequence[str], run_dir: Path) -> None:
        self.node_names = list(node_names)
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.slot: Slot | None = None
        self.network: RunNetwork | None = None
        self.cgroups: RunCgroups | None = None
        self.nodes: dict[str, Process] = {}
        self.grace: dict[str, float] = {}
        self._launches: dict[str, tuple[str, Path, dict[str, str]]] = {}
        self.restarts: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Sandbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        processes.become_subreaper()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.slot = acquire_slot()
        try:
            # a killed previous owner may have left things in this slot
            leftover = gc.collect(only_slot=self.slot.index)
            if leftover.failed:
                what, why = leftover.failed[0]
                raise RuntimeError(f"cannot clean slot {self.slot.index}: {what.describe()}: "
                                   f"{why}; run 'ldfi gc'")
            self.network = RunNetwork(self.slot.index, self.slot.prefix, self.node_names)
            self.cgroups = RunCgroups(self.slot.prefix, [*self.node_names, CLIENT])
            self.cgroups.build()
            self.network.build()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every process, then remove namespaces and cgroups. Safe to call
        twice. A second Ctrl-C or SIGTERM waits until teardown is complete."""
        deferred = _block_signals()
        try:
            self._teardown()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, deferred)

    def _teardown(self) -> None:
        try:
            if self.nodes:
                processes.stop(list(self.nodes.values()), self.grace)
                self.nodes.clear()
        finally:
            if self.cgroups is not None:
                self.cgroups.destroy()
                self.cgroups = None
            if self.network is not None:
                self.network.destroy()
                self.network = None
            if self.slot is not None:
                self.slot.release()
                self.slot = None

    # -- facts other parts need ------------------------------------------

    @property
    def addresses(self) -> dict[str, str]:
        """name -> IPv4 address, for nodes and the client."""
        assert self.network is not None
        return self.network.addresses

    @property
    def addresses6(self) -> dict[str, str]:
        """name -> IPv6 address, for nodes and the client."""
        assert self.network is not None
        return self.network.addresses6

    def netns(self, name: str) -> str:
        assert self.network is not None
        return self.network.endpoints[name].netns

    def cgroup_ids(self) -> dict[str, int]:
        """name -> cgroup id as BPF sees it, for nodes and the client."""
        assert self.cgroups is not None
        return self.cgroups.ids()

    def cgroup_path(self, name: str) -> Path:
        assert self.cgroups is not None
        return self.cgroups.groups[name]

    # -- processes --------------------------------------------------------

    def start(
        self, name: str, cmd: str, *, cwd: Path, env: Mapping[str, str], grace: float = 2.0
    ) -> Process:
        """Start node `name`'s command in its namespace and cgroup."""
        proc = self._launch(name, cmd, cwd, env, log_name=name)
        self.nodes[name] = proc
        self.grace[name] = grace
        self._launches[name] = (cmd, cwd, dict(env))
        return proc

    def restart(self, name: str) -> Process:
        """Start node `name`'s command again, as it was first started (crash-
        recovery); its output goes to `<name>.restart<k>.out/.err`."""
        cmd, cwd, env = self._launches[name]
        self.restarts[name] = self.restarts.get(name, 0) + 1
        old = self.nodes.get(name)
        if old is not None:
            old.popen.poll()  # reap it if it is gone
        proc = self._launch(name, cmd, cwd, env, log_name=f"{name}.restart{self.restarts[name]}")
        self.nodes[name] = proc
        return proc

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of node `name` at once (cgroup.kill); unlike
        stop_node, the node stays known to the sandbox, as a crashed node."""
        assert self.cgroups is not None
        cgroups.kill_group(self.cgroups.groups[name])

    def signal_node(self, name: str, sig: int) -> int:
        """Send `sig` to every process of node `name`; returns how many."""
        assert self.cgroups is not None
        group = self.cgroups.groups[name]
        pids = cgroups.procs(group)
        cgroups.signal_group(group, sig)
        return len(pids)

    def netlink(self, name: str) -> IPRoute:
        """A netlink socket inside `name`'s namespace (for tc filters on eth0)."""
        assert self.network is not None
        ipr = self.network.endpoints[name].ipr
        assert ipr is not None
        return ipr

    def _launch(
        self, name: str, cmd: str, cwd: Path, env: Mapping[str, str], log_name: str
    ) -> Process:
        assert self.cgroups is not None
        return processes.launch(
            name, cmd, netns=self.netns(name), group=self.cgroups.groups[name], cwd=cwd,
            env=self.environment(name, env), log_dir=self.log_dir, log_name=log_name,
        )

    def environment(self, name: str, env: Mapping[str, str]) -> dict[str, str]:
        """What a command running as `name` sees: the engine's environment, the
        scenario's env, and who and where it is."""
        merged = dict(os.environ)
        merged.update(env)
        merged["LDFI_NODE"] = name
        merged["LDFI_RUN_DIR"] = str(self.run_dir)
        return merged

    def stop_node(self, name: str) -> None:
        proc = self.nodes.pop(name, None)
        if proc is not None:
            processes.stop([proc], self.grace)

    def run_client(
        self, cmd: str, *, cwd: Path, env: Mapping[str, str], timeout: float | None,
        log_name: str,
    ) -> Finished:
        """Run a command in the client namespace to its end (or its timeout)."""
        proc = self._launch(CLIENT, cmd, cwd, env, log_name=log_name)
        timed_out = False
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # Whatever the command left running in the client group goes too.
            processes.stop([proc], {CLIENT: 0.0 if timed_out else 0.5})
        code = None if timed_out else proc.popen.returncode
        return Finished(code, timed_out, time.monotonic() - proc.started, proc.stdout, proc.stderr)


def _block_signals() -> set[signal.Signals]:
    """Block SIGINT/SIGTERM; return the previous mask (pending ones fire on restore)."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

