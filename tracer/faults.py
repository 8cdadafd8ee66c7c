"""What the kernel side of fault injection can do, as plain data.

A fault is armed as one *trigger* (when it starts) and one *action* (what it
does). Triggers and actions speak only of node names, channel numbers and
send ordinals, never of ports or pids, so a plan written from one run's trace
applies to the next. `tracer.injector.Injector` turns them into BPF map
entries; the engine's fault models (ldfi/faults) build them from their
anchors. This module imports nothing of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --------------------------------------------------------------- triggers


@dataclass(frozen=True, slots=True)
class SendTrigger:
    """Fires in the kernel at the entry of `node`'s `nth` (0-based) successful
    send that matches every filter given, before any of its bytes leave.

    peer:     only sends to this node
    proto:    "tcp" | "udp"
    channel:  only sends on this channel (the k-th connection/UDP socket between
              the two nodes, numbered in the kernel in opening order, the way
              ldfi.trace.ids numbers them); needs peer and proto
    opener:   TCP: the node that opened that channel (connect side)
    prefix:   only sends whose payload starts with these bytes (at most 16)
    """

    node: str
    nth: int = 0
    peer: str | None = None
    proto: str | None = None
    channel: int | None = None
    opener: str | None = None
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class TimeTrigger:
    """Fires from user space `after` seconds after the workload starts (0: as it
    starts). Use it only for node-level actions: it has no message to act on."""

    after: float = 0.0


Trigger = SendTrigger | TimeTrigger

# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class DropMessage:
    """UDP: drop exactly the datagram(s) of the triggering send."""


@dataclass(frozen=True, slots=True)
class CutFlow:
    """Drop every packet of the triggering send's flow direction (retransmissions
    included) from the trigger on, for `heal` seconds or to the end of the run."""

    heal: float | None = None


@dataclass(frozen=True, slots=True)
class DelayFlow:
    """Drop the triggering flow direction's packets for `window` seconds, so that
    TCP delivers late by retransmission (UDP datagrams in the window are lost)."""

    window: float


@dataclass(frozen=True, slots=True)
class ResetFlow:
    """TCP: the first packet carrying the triggering send's bytes becomes a RST
    (checksum fixed); the connection is reset on both sides."""


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL `node`'s processes at the trigger (from BPF for the triggering
    task, so it is exact) and silence its network from that instant. With a
    SendTrigger, the triggering send never leaves and is not traced as sent.
    `restart_after`: run the node's command again after that many seconds."""

    node: str
    restart_after: float | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """SIGSTOP `node`'s processes at the trigger, SIGCONT after `duration`. The
    triggering send itself completes (signals are delivered on return)."""

    node: str
    duration: float


@dataclass(frozen=True, slots=True)
class Partition:
    """Drop every packet between the two node sets, both directions, all flows
    (open ones and later ones), from the trigger on, for `heal` seconds or to
    the end of the run."""

    side_a: tuple[str, ...]
    side_b: tuple[str, ...]
    heal: float | None = None


Action = DropMessage | CutFlow | DelayFlow | ResetFlow | Kill | Stop | Partition

# --------------------------------------------------------------- evidence


@dataclass(slots=True)
class FaultReport:
    """What one armed fault did. `fired` is False when its trigger never
    happened: such a fault must never be counted as tested."""

    name: str  # the fault as the engine wrote it, e.g. "cut(client->server:tcp0#2)"
    trigger: str
    action: str
    fired: bool = False
    fired_ns: int = 0  # CLOCK_MONOTONIC ns (bpf_ktime_get_ns)
    node: str = ""  # where it fired
    pid: int = 0
    tid: int = 0
    send_ts_enter: int = 0  # the triggering send's sys_enter time: finds its trace event
    packets_dropped: int = 0
    packets_reset: int = 0
    signals: list[str] = field(default_factory=list)  # e.g. ["SIGKILL pid 42 (bpf)"]
    restarted: bool = False
    healed: bool = False
    notes: list[str] = field(default_factory=list)
    message: str = ""  # logical id of the send it fired at (filled from the trace)

    def describe(self) -> str:
        if not self.fired:
            return f"{self.name}: did not fire ({self.trigger} never happened)"
        did = []
        if self.packets_dropped:
            did.append(f"{self.packets_dropped} packets dropped")
        if self.packets_reset:
            did.append(f"{self.packets_reset} packets turned into RST")
        did += self.signals
        if self.restarted:
            did.append("restarted")
        if self.healed:
            did.append("healed")
        what = ", ".join(did) if did else "no packet or process affected yet"
        at = f" at {self.message}" if self.message else ""
        return f"{self.name}: fired on {self.node}{at} (pid {self.pid}): {what}"
