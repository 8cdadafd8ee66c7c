"""One run of a scenario with the tracer attached, turned into a
happens-before trace and written next to the run's other artefacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ldfi.errors import EXIT_INCONCLUSIVE, UserError
from ldfi.runner import RunResult, run_once
from ldfi.scenario import Scenario
from ldfi.trace import CycleError, Topology, Trace, build_trace
from ldfi.trace.wire import write_trace
from tracer.program import TraceProgram
from tracer.recorder import TraceRecorder


@dataclass
class TracedRun:
    result: RunResult
    trace: Trace
    trace_path: Path


def traced_run(scenario: Scenario, store: Path, program: TraceProgram) -> TracedRun:
    recorder = TraceRecorder(program)
    result = run_once(scenario, store, [recorder])
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
            events, Topology(addresses=recorder.addresses, cgroups=recorder.cgroups),
            lost_events=lost, meta=meta,
        )
    except CycleError as err:
        raise UserError(
            f"the trace of run {result.run_id} is inconsistent ({err}); the run's logs are in "
            f"{result.run_dir}: please report this with the scenario", EXIT_INCONCLUSIVE,
        ) from None
    path = Path(result.run_dir) / "trace.pb"
    write_trace(trace, path)
    return TracedRun(result, trace, path)
