"""One run of a scenario with the tracer attached (and, when a plan is given,
the fault injector), turned into a happens-before trace and written next to
the run's other artefacts. The trace carries every armed fault's report,
with the logical id of the message it fired at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ldfi.errors import EXIT_INCONCLUSIVE, UserError
from ldfi.runner import RunResult, run_once
from ldfi.scenario import Scenario
from ldfi.trace import CycleError, Topology, Trace, build_trace
from ldfi.trace.wire import write_trace
from tracer.events import FAULT
from tracer.faults import FaultReport
from tracer.injector import Injector, PlannedFault
from tracer.program import TraceProgram
from tracer.recorder import TraceRecorder


@dataclass
class TracedRun:
    result: RunResult
    trace: Trace
    trace_path: Path


def traced_run(scenario: Scenario, store: Path, program: TraceProgram,
               plan: Sequence[PlannedFault] = ()) -> TracedRun:
    injector = Injector(program, plan) if plan else None
    recorder = TraceRecorder(program, send_syscalls=bool(injector and injector.needs_send_syscalls))
    result = run_once(scenario, store, [recorder, injector] if injector else [recorder])
    recorded = recorder.recorded
    events = recorded.events if recorded else []
    lost = recorded.lost_events if recorded else 0
    meta = {
        "scenario": scenario.name,
        "run_id": result.run_id,
        "status": result.status,
        "predicate_ok": str(result.predicate_ok).lower(),
        "payload_bytes": str(program.payload_bytes),
        "workload_started_ns": str(recorder.workload_started_ns),
    }
    try:
        trace = build_trace(
            events, Topology(addresses=recorder.addresses, cgroups=recorder.cgroups,
                             addresses6=recorder.addresses6),
            lost_events=lost, meta=meta,
        )
    except CycleError as err:
        raise UserError(
            f"the trace of run {result.run_id} is inconsistent ({err}); the run's logs are in "
            f"{result.run_dir}: please report this with the scenario", EXIT_INCONCLUSIVE,
        ) from None
    if injector is not None:
        trace.faults = injector.reports
        locate_faults(trace)
    path = Path(result.run_dir) / "trace.pb"
    write_trace(trace, path)
    return TracedRun(result, trace, path)


def locate_faults(trace: Trace) -> None:
    """Name the message each fired fault hit: the send event of the firing
    thread with the recorded sys_enter time. A send killed by the fault left
    no event (it never happened, as far as the network is concerned)."""
    sends = {(e.tid, e.ts_enter): e.seq for e in trace.events if e.is_send}
    by_send = {m.send_seq: m for m in trace.messages}
    fired_at = {e.fault_slot: e.seq for e in trace.events if e.kind == FAULT}
    for slot, report in enumerate(trace.faults):
        if not report.fired or not report.send_ts_enter:
            continue
        seq = sends.get((report.tid, report.send_ts_enter))
        message = by_send.get(seq) if seq is not None else None
        if message is not None:
            report.message = str(message.id)
        elif slot in fired_at:
            report.notes.append("the triggering send never took effect (killed before it)")


def unfired(reports: Sequence[FaultReport]) -> list[FaultReport]:
    return [r for r in reports if not r.fired]
