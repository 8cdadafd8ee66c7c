"""The tracer as a run observer: scope the loaded program to a run's cgroups
when its sandbox is ready, stop when the run ends.

It satisfies ldfi.runner.RunObserver structurally; the tracer does not import
the engine (data flows from the sandbox to the tracer, never back)."""

from __future__ import annotations

import time
from typing import Any

from tracer.program import RecordedRun, Recording, TraceProgram


class TraceRecorder:
    def __init__(self, program: TraceProgram, send_syscalls: bool = False) -> None:
        self.program = program
        self.send_syscalls = send_syscalls  # see TraceProgram.record
        self._recording: Recording | None = None
        self.recorded: RecordedRun | None = None
        self.addresses: dict[str, str] = {}
        self.addresses6: dict[str, str] = {}
        self.cgroups: dict[str, int] = {}
        self.workload_started_ns = 0

    def sandbox_ready(self, sandbox: Any) -> None:
        self.cgroups = sandbox.cgroup_ids()
        self.addresses = dict(sandbox.addresses)
        self.addresses6 = dict(getattr(sandbox, "addresses6", {}))
        self._recording = self.program.record({cid: name for name, cid in self.cgroups.items()},
                                              send_syscalls=self.send_syscalls)

    def workload_started(self, sandbox: Any) -> None:
        self.workload_started_ns = time.monotonic_ns()  # same clock as bpf_ktime_get_ns

    def run_finished(self, sandbox: Any, result: Any) -> None:
        if self._recording is not None:
            self.recorded = self._recording.stop()
            self._recording = None
