"""Arm a plan of faults for one run, and prove what each one did.

The kernel side lives in bpf/faults.bpf.c, compiled into the tracer's program
(TraceProgram), so a run with faults is always a traced run. For one run:

    injector = Injector(program, [PlannedFault("cut(c->s:tcp0#2)", trigger, action), ...])
    run_once(scenario, store, [recorder, injector])   # a RunObserver, like the recorder
    injector.reports                                  # FaultReport per fault

sandbox_ready: triggers and pair rules go into the maps, the tc classifier is
attached to every endpoint's eth0 egress (nodes and client), and the kernel
side is armed. A watcher thread then does what only user space can do once a
fault has fired: kill a node's other processes, stop and continue them,
restart a node, fire time-anchored faults. run_finished: everything is
disarmed, detached and cleared, whatever happened, and the fault states are
read back into reports. Like the recorder, this imports nothing of the engine:
it talks to the sandbox through the handful of methods it calls.
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
import signal
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from tracer.decode import BPF_DIR, header_constants
from tracer.faults import (
    Action,
    CutFlow,
    DelayFlow,
    DropMessage,
    FaultReport,
    Kill,
    Partition,
    ResetFlow,
    SendTrigger,
    Stop,
    TimeTrigger,
    Trigger,
)
from tracer.program import TraceProgram

F = header_constants(BPF_DIR / "faults.h")
MAX_FAULTS = F["MAX_FAULTS"]
PREFIX_MAX = F["PREFIX_MAX"]
WATCH_INTERVAL = 0.002  # s: how late user-space follow-ups (cgroup.kill, SIGCONT) may be
_EGRESS = 0xFFFFFFF3  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
_PROTO = {"tcp": 6, "udp": 17}
_MAPS = ("triggers", "fault_states", "flow_rules", "pair_rules", "drop_tids", "dead_cgroups",
         "chan_counts", "sk_chans", "tuple_chans")


class PlanError(ValueError):
    """A plan that cannot be armed in this run (unknown node, too many faults, ...)."""


@dataclass(frozen=True, slots=True)
class PlannedFault:
    name: str  # how the engine writes the fault; reports use it
    trigger: Trigger
    action: Action


def describe_trigger(trigger: Trigger) -> str:
    if isinstance(trigger, TimeTrigger):
        return f"{trigger.after:g}s after the workload started"
    parts = [f"{trigger.node}'s send #{trigger.nth + 1}"]
    if trigger.peer:
        parts.append(f"to {trigger.peer}")
    if trigger.proto:
        parts.append(f"over {trigger.proto}")
    if trigger.channel is not None:
        parts.append(f"on channel {trigger.channel}")
    if trigger.prefix:
        parts.append(f"starting with {trigger.prefix!r}")
    return " ".join(parts)


def describe_action(action: Action) -> str:
    return type(action).__name__


class Injector:
    def __init__(self, program: TraceProgram, plan: Sequence[PlannedFault]) -> None:
        if len(plan) > MAX_FAULTS:
            raise PlanError(f"{len(plan)} faults in one run; at most {MAX_FAULTS} can be armed")
        self.program = program
        self.plan = list(plan)
        self.reports = [FaultReport(p.name, describe_trigger(p.trigger),
                                    describe_action(p.action)) for p in plan]
        self._sandbox: Any = None
        self._cgroups: dict[str, int] = {}
        self._addresses: dict[str, int] = {}  # node -> IPv4 as the kernel stores it
        self._attached: list[Any] = []  # netlink sockets with our clsact qdisc on eth0
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._workload_ns = 0
        self._followed: set[int] = set()  # slots whose user-space follow-up was done
        self._timers: list[tuple[int, int, str]] = []  # (due ns, slot, what)
        self._paused: dict[str, int] = {}  # node -> slot of the Stop that paused it
        self._lock = threading.Lock()

    @property
    def needs_send_syscalls(self) -> bool:
        """Send triggers fire in the sends' entry programs (bpf/faults.bpf.c)."""
        return any(isinstance(p.trigger, SendTrigger) for p in self.plan)

    # -- RunObserver ------------------------------------------------------

    def sandbox_ready(self, sandbox: Any) -> None:
        self._sandbox = sandbox
        self._cgroups = sandbox.cgroup_ids()
        self._addresses = {n: _ip(a) for n, a in sandbox.addresses.items()}
        for planned in self.plan:
            self._check_nodes(planned)
        try:
            self._clear()
            for slot, planned in enumerate(self.plan):
                self._write(slot, planned)
            tc = self.program.tc_function()
            for name in self._addresses:
                self._attach(sandbox.netlink(name), tc)
            if self.needs_send_syscalls:
                self.program.send_syscalls(True)  # left attached: see TraceProgram.record
            self._set_armed(True)
        except BaseException:
            self._disarm()  # the runner calls run_finished only after a sandbox_ready that returned
            raise
        self._watcher = threading.Thread(target=self._watch, name="ldfi-faults", daemon=True)
        self._watcher.start()

    def workload_started(self, sandbox: Any) -> None:
        self._workload_ns = time.monotonic_ns()
        with self._lock:
            for slot, planned in enumerate(self.plan):
                if isinstance(planned.trigger, TimeTrigger):
                    due = self._workload_ns + int(planned.trigger.after * 1e9)
                    self._timers.append((due, slot, "fire"))

    def run_finished(self, sandbox: Any, result: Any) -> None:
        try:
            self._stop.set()
            if self._watcher is not None:
                self._watcher.join()
            self._resume_paused()
        finally:
            try:
                self._collect()
            finally:
                self._disarm()

    # -- arming -------------------------------------------------------------

    def _check_nodes(self, planned: PlannedFault) -> None:
        names = []
        t, a = planned.trigger, planned.action
        if isinstance(t, SendTrigger):
            names += [t.node, t.peer, t.opener]
        if isinstance(a, Kill | Stop):
            names.append(a.node)
        if isinstance(a, Partition):
            names += [*a.side_a, *a.side_b]
        for name in names:
            if name is not None and name not in self._cgroups:
                known = ", ".join(sorted(self._cgroups))
                raise PlanError(f"{planned.name}: no node named {name!r} in this scenario "
                                f"(nodes: {known})")
        if isinstance(t, TimeTrigger) and isinstance(a, DropMessage | CutFlow | DelayFlow |
                                                     ResetFlow):
            raise PlanError(f"{planned.name}: a message fault needs a message or send anchor, "
                            "not a time")
        if isinstance(t, SendTrigger) and len(t.prefix) > PREFIX_MAX:
            raise PlanError(f"{planned.name}: a payload prefix has at most {PREFIX_MAX} bytes")

    def _write(self, slot: int, planned: PlannedFault) -> None:
        bpf = self.program.bpf
        trig = bpf[b"triggers"].Leaf()
        action = planned.action
        trig.action, trig.param_ns = _kernel_action(action)
        t = planned.trigger
        if isinstance(t, SendTrigger):
            trig.cgroup = self._cgroups[t.node]
            trig.nth = t.nth
            trig.peer_ip = self._addresses[t.peer] if t.peer else 0
            trig.proto = _PROTO[t.proto] if t.proto else 0
            if t.channel is not None:
                trig.has_channel, trig.channel = 1, t.channel
                trig.opener_cgroup = self._cgroups[t.opener] if t.opener else 0
            trig.prefix_len = len(t.prefix)
            for i, byte in enumerate(t.prefix):
                trig.prefix[i] = byte
        bpf[b"triggers"][ct.c_int(slot)] = trig
        for saddr, daddr in self._pairs(action):
            key = bpf[b"pair_rules"].Key()
            key.saddr, key.daddr = saddr, daddr
            bpf[b"pair_rules"][key] = ct.c_uint32(slot)

    def _pairs(self, action: Action) -> list[tuple[int, int]]:
        """The (source, destination) pairs a fault silences once fired (0 = any)."""
        if isinstance(action, Kill):
            ip = self._addresses[action.node]
            return [(ip, 0), (0, ip)]
        if isinstance(action, Partition):
            pairs = []
            for a in action.side_a:
                for b in action.side_b:
                    pairs += [(self._addresses[a], self._addresses[b]),
                              (self._addresses[b], self._addresses[a])]
            return pairs
        return []

    def _attach(self, ipr: Any, tc: Any) -> None:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.tc("add", "clsact", eth0)
        self._attached.append(ipr)
        ipr.tc("add-filter", "bpf", eth0, ":1", fd=tc.fd, name=tc.name.decode(),
               parent=_EGRESS, classid=1, direct_action=True)

    def _set_armed(self, on: bool) -> None:
        self.program.bpf[b"fault_armed"][ct.c_int(0)] = ct.c_uint32(int(on))

    def _clear(self) -> None:
        bpf = self.program.bpf
        for name in _MAPS:
            table = bpf[name.encode()]
            if name in ("triggers", "fault_states"):
                for slot in range(MAX_FAULTS):
                    table[ct.c_int(slot)] = table.Leaf()
            else:
                table.clear()

    def _disarm(self) -> None:
        """Everything back as it was, on every path: armed flag off, tc gone,
        maps empty. (Deleting the run's namespaces would remove the filters
        too; doing it here keeps the injector correct on its own.)"""
        try:
            self._set_armed(False)
        finally:
            for ipr in self._attached:
                with suppress(Exception):  # the namespace may already be gone
                    ipr.tc("del", "clsact", ipr.link_lookup(ifname="eth0")[0])
            self._attached.clear()
            self._clear()

    # -- user-space follow-ups --------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):
            try:
                self._step()
            except Exception as err:
                for report in self.reports:
                    report.notes.append(f"fault watcher error: {type(err).__name__}: {err}")
                return

    def _step(self) -> None:
        now = time.monotonic_ns()
        with self._lock:
            due = [t for t in self._timers if t[0] <= now]
            self._timers = [t for t in self._timers if t[0] > now]
        for _, slot, what in sorted(due):
            if what == "fire":
                self._fire_from_user_space(slot, now)
            elif what == "cont":
                self._resume(slot)
            elif what == "restart":
                self._restart(slot)
        states = self.program.bpf[b"fault_states"]
        for slot in range(len(self.plan)):
            if slot not in self._followed and states[ct.c_int(slot)].fired_ns:
                self._followed.add(slot)
                self._follow_up(slot)

    def _fire_from_user_space(self, slot: int, now: int) -> None:
        states = self.program.bpf[b"fault_states"]
        st = states[ct.c_int(slot)]
        if st.fired_ns:
            return
        _, param_ns = _kernel_action(self.plan[slot].action)
        st.until_ns = now + param_ns if param_ns else 0
        action = self.plan[slot].action
        if isinstance(action, Kill):
            # from now on the node's socket calls kill it (as a BPF-fired kill does)
            dead = self.program.bpf[b"dead_cgroups"]
            dead[ct.c_uint64(self._cgroups[action.node])] = ct.c_uint32(slot)
        st.fired_ns = now
        states[ct.c_int(slot)] = st

    def _follow_up(self, slot: int) -> None:
        action, report = self.plan[slot].action, self.reports[slot]
        if isinstance(action, Kill):
            self._sandbox.kill_node(action.node)
            report.signals.append(f"cgroup.kill of node {action.node}")
            if action.restart_after is not None:
                self._later(slot, action.restart_after, "restart")
        elif isinstance(action, Stop):
            n = self._sandbox.signal_node(action.node, signal.SIGSTOP)
            report.signals.append(f"SIGSTOP to {n} processes of {action.node}")
            self._paused[action.node] = slot
            self._later(slot, action.duration, "cont")

    def _later(self, slot: int, seconds: float, what: str) -> None:
        fired = self.program.bpf[b"fault_states"][ct.c_int(slot)].fired_ns
        with self._lock:
            self._timers.append((fired + int(seconds * 1e9), slot, what))

    def _resume(self, slot: int) -> None:
        action = self.plan[slot].action
        assert isinstance(action, Stop)
        if self._paused.pop(action.node, None) is None:
            return
        n = self._sandbox.signal_node(action.node, signal.SIGCONT)
        self.reports[slot].signals.append(f"SIGCONT to {n} processes of {action.node}")
        self.reports[slot].healed = True

    def _resume_paused(self) -> None:
        """A run that ends while a node is paused: continue it so it can stop."""
        for _node, slot in list(self._paused.items()):
            self._resume(slot)
            self.reports[slot].notes.append("the run ended while paused: continued early")

    def _restart(self, slot: int) -> None:
        action = self.plan[slot].action
        assert isinstance(action, Kill)
        bpf = self.program.bpf
        bpf[b"dead_cgroups"].pop(ct.c_uint64(self._cgroups[action.node]), None)
        states = bpf[b"fault_states"]
        st = states[ct.c_int(slot)]
        st.until_ns = time.monotonic_ns()  # the node's network comes back with it
        states[ct.c_int(slot)] = st
        self._sandbox.restart(action.node)
        self.reports[slot].restarted = True

    # -- evidence -------------------------------------------------------------

    def _collect(self) -> None:
        states = self.program.bpf[b"fault_states"]
        now = time.monotonic_ns()
        for slot, report in enumerate(self.reports):
            st = states[ct.c_int(slot)]
            report.fired = bool(st.fired_ns)
            if not report.fired:
                continue
            report.fired_ns = st.fired_ns
            report.pid, report.tid, report.send_ts_enter = st.pid, st.tid, st.send_ts
            report.packets_dropped, report.packets_reset = st.dropped, st.reset
            trigger = self.plan[slot].trigger
            action = self.plan[slot].action
            report.node = trigger.node if isinstance(trigger, SendTrigger) else _acted_on(action)
            if st.signals:
                sig = "SIGKILL" if isinstance(action, Kill) else "SIGSTOP"
                report.signals.insert(0, f"{sig} from BPF to pid {st.pid}")
            if st.until_ns and st.until_ns <= now and not isinstance(action, Stop):
                report.healed = True


def _acted_on(action: Action) -> str:
    if isinstance(action, Kill | Stop):
        return action.node
    if isinstance(action, Partition):
        return " ".join(action.side_a) + " | " + " ".join(action.side_b)
    return ""


def _kernel_action(action: Action) -> tuple[int, int]:
    """(FA_* code, duration in ns or 0 for 'to the end of the run')."""
    def ns(seconds: float | None) -> int:
        return int(seconds * 1e9) if seconds else 0

    if isinstance(action, DropMessage):
        return F["FA_DROP_MSG"], 0
    if isinstance(action, CutFlow):
        return F["FA_CUT"], ns(action.heal)
    if isinstance(action, DelayFlow):
        return F["FA_CUT"], ns(action.window)
    if isinstance(action, ResetFlow):
        return F["FA_RESET"], 0
    if isinstance(action, Kill):
        return F["FA_KILL"], 0
    if isinstance(action, Stop):
        return F["FA_STOP"], 0
    if isinstance(action, Partition):
        return F["FA_ACTIVATE"], ns(action.heal)
    raise PlanError(f"unknown action {action!r}")


def _ip(address: str) -> int:
    """IPv4 as the kernel holds it in a u32 (network byte order, read little-endian)."""
    return int.from_bytes(ipaddress.IPv4Address(address).packed, "little")
