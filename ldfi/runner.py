"""One run of a scenario: sandbox up, nodes started and ready, workload,
settle, check (the success predicate), teardown. Observers (the tracer, the
fault injector) hook in at fixed points without the runner knowing them."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from ldfi.readiness import NotReady, describe, wait_ready
from ldfi.sandbox import CLIENT, Finished, Sandbox
from ldfi.scenario import Scenario, render


class RunObserver(Protocol):
    """Called at the moments a tracer or injector needs. Each may be a no-op."""

    def sandbox_ready(self, sandbox: Sandbox) -> None:
        """Namespaces and cgroups exist; no node has started yet."""

    def workload_started(self, sandbox: Sandbox) -> None: ...

    def run_finished(self, sandbox: Sandbox, result: RunResult) -> None:
        """The run is over (or aborted: result.error says why); called on every
        path, before the processes are torn down."""


@dataclass
class NodeReport:
    name: str
    address: str
    pid: int
    ready: str  # how readiness was judged, e.g. "tcp 7000"
    ready_after: float | None  # seconds from start to ready; None if never
    exit_code: int | None = None  # None: still running when the run ended
    stdout: str = ""
    stderr: str = ""


@dataclass
class StepReport:
    """The workload or the check."""

    cmd: str
    exit_code: int | None
    timed_out: bool
    duration: float
    stdout: str
    stderr: str


@dataclass
class RunResult:
    run_id: str
    scenario: str
    run_dir: str
    subnet: str = ""
    nodes: list[NodeReport] = field(default_factory=list)
    workload: StepReport | None = None
    check: StepReport | None = None
    predicate_ok: bool | None = None  # None: the run did not get as far as the check
    vacuous: bool = False  # the check said "good, vacuously" ([check] vacuous_exit)
    error: str | None = None  # why the run could not complete (inconclusive)
    wall: float = 0.0
    sandbox_setup: float = 0.0
    teardown: float = 0.0

    @property
    def status(self) -> str:
        if self.error is not None or self.predicate_ok is None:
            return "error"  # never call a run that did not reach its check "failed"
        return "ok" if self.predicate_ok else "failed"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status
        return data


class RunAborted(Exception):
    pass


def new_run_dir(store: Path, scenario: Scenario) -> tuple[str, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_id = f"{stamp}-{scenario.name}-{secrets.token_hex(2)}"
    run_dir = store.resolve() / "runs" / run_id  # {workdir} must not depend on a cwd
    (run_dir / "work").mkdir(parents=True)
    return run_id, run_dir


def run_once(
    scenario: Scenario, store: Path, observers: Sequence[RunObserver] = ()
) -> RunResult:
    run_id, run_dir = new_run_dir(store, scenario)
    result = RunResult(run_id, scenario.name, str(run_dir))
    started = time.monotonic()
    deadline = started + scenario.timeout
    sandbox = Sandbox([n.name for n in scenario.nodes], run_dir)
    watching: list[RunObserver] = []  # observers whose sandbox_ready succeeded
    try:
        sandbox.open()
        result.sandbox_setup = time.monotonic() - started
        assert sandbox.network is not None
        result.subnet = str(sandbox.network.subnet)
        for obs in observers:
            obs.sandbox_ready(sandbox)
            watching.append(obs)
        _run_steps(scenario, sandbox, result, deadline, observers)
    except RunAborted as err:
        result.error = str(err)
    except BaseException as err:
        result.error = f"engine error: {type(err).__name__}: {err}"
        raise
    finally:
        try:
            _notify_finished(watching, sandbox, result)
        finally:
            _finish(sandbox, result, started, run_dir)
    return result


def _notify_finished(observers: Sequence[RunObserver], sandbox: Sandbox,
                     result: RunResult) -> None:
    """Every observer gets its call even if one before it raises; the first
    error is raised afterwards."""
    first: BaseException | None = None
    for obs in observers:
        try:
            obs.run_finished(sandbox, result)
        except BaseException as err:
            first = first or err
    if first is not None:
        raise first


def _finish(sandbox: Sandbox, result: RunResult, started: float, run_dir: Path) -> None:
    """Tear down and write result.json, whatever happened before."""
    closing = time.monotonic()
    try:
        try:
            _record_exits(sandbox, result)
        finally:
            sandbox.close()
        result.teardown = time.monotonic() - closing
    finally:
        result.wall = time.monotonic() - started
        (run_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")


def _values(scenario: Scenario, sandbox: Sandbox, node: str) -> dict[str, str]:
    return scenario.placeholder_values(sandbox.addresses, sandbox.run_dir / "work", node,
                                       sandbox.addresses6)


def _run_steps(
    scenario: Scenario, sandbox: Sandbox, result: RunResult, deadline: float,
    observers: Sequence[RunObserver],
) -> None:
    _start_nodes(scenario, sandbox, result, deadline)
    for obs in observers:
        obs.workload_started(sandbox)
    result.workload = _client_step(scenario, sandbox, "workload", deadline)
    settle_until = min(time.monotonic() + scenario.settle, deadline)
    time.sleep(max(0.0, settle_until - time.monotonic()))
    result.check = _client_step(scenario, sandbox, "check", deadline)
    code = result.check.exit_code
    result.vacuous = code is not None and code == scenario.check.vacuous_exit
    result.predicate_ok = code == 0 or result.vacuous


def _start_nodes(
    scenario: Scenario, sandbox: Sandbox, result: RunResult, deadline: float
) -> None:
    """Start every node (in file order), then wait for each to be ready."""
    rendered = []
    for node in scenario.nodes:
        values = _values(scenario, sandbox, node.name)
        env = {k: render(v, values) for k, v in node.env.items()}
        proc = sandbox.start(node.name, render(node.cmd, values), cwd=node.cwd, env=env,
                             grace=node.stop_timeout)
        result.nodes.append(NodeReport(
            node.name, sandbox.addresses[node.name], proc.pid, describe(node.ready), None,
            stdout=str(proc.stdout), stderr=str(proc.stderr),
        ))
        rendered.append((values, env))
    for node, report, (values, env) in zip(scenario.nodes, result.nodes, rendered, strict=True):
        ready_cmd = render(node.ready.cmd, values) if node.ready.cmd else None
        try:
            report.ready_after = wait_ready(
                node.ready, sandbox.nodes[node.name], netns=sandbox.netns(node.name),
                cwd=node.cwd, env=sandbox.environment(node.name, env), ready_cmd=ready_cmd,
                deadline=deadline,
            )
        except NotReady as err:
            raise RunAborted(str(err)) from None


def _client_step(scenario: Scenario, sandbox: Sandbox, which: str, deadline: float) -> StepReport:
    step = scenario.workload if which == "workload" else scenario.check
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RunAborted(f"the run timeout ({scenario.timeout:g}s) passed before the {which} ran")
    timeout = min(step.timeout, remaining) if step.timeout else remaining
    values = _values(scenario, sandbox, CLIENT)
    cmd = render(step.cmd, values)
    env = {k: render(v, values) for k, v in step.env.items()}
    done: Finished = sandbox.run_client(cmd, cwd=step.cwd, env=env, timeout=timeout,
                                        log_name=which)
    return StepReport(cmd, done.exit_code, done.timed_out, done.duration, str(done.stdout),
                      str(done.stderr))


def _record_exits(sandbox: Sandbox, result: RunResult) -> None:
    for report in result.nodes:
        proc = sandbox.nodes.get(report.name)
        if proc is not None:
            report.exit_code = proc.exited()
