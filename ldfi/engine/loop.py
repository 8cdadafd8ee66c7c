"""The LDFI loop: run without faults, take the lineage of the good outcome,
ask for a fault set (the largest first) that could break every way it was reached,
inject exactly that, and repeat, until the outcome breaks (a bug, confirmed
by re-runs and minimized), no hypothesis is left (certified within the
budget), or a budget runs out (inconclusive, saying which).

The loop only sequences the stages; each lives in its own module:
traced_run (sandbox + tracer + injector), ldfi.lineage (supports),
ldfi.solver (hypotheses), ldfi.faults (what a fault is and how it is armed),
ldfi.engine.minimize (delta debugging), ldfi.store (what is kept).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ldfi.engine.anchors import Occurrences
from ldfi.engine.budgets import budget_assumptions, budget_json, describe_budget
from ldfi.engine.equivalence import AnsweredRuns
from ldfi.engine.minimize import ddmin
from ldfi.engine.records import (
    BUG,
    CERTIFIED,
    INCONCLUSIVE,
    Counterexample,
    FaultOutcome,
    RunRecord,
    SearchResult,
)
from ldfi.faults import ArmContext, Fault, MessageAnchor, arm
from ldfi.lineage.build import lineage
from ldfi.lineage.outcome import Outcome
from ldfi.scenario import Scenario
from ldfi.solver.budget import Budget
from ldfi.solver.hypotheses import Hypotheses
from ldfi.store import Store
from ldfi.traced_run import TracedRun, traced_run
from tracer.faults import FaultReport
from tracer.injector import PlannedFault
from tracer.program import TraceProgram


def misfired(faults: Sequence[Fault], outcomes: Sequence[FaultOutcome]
             ) -> list[tuple[Fault, str]]:
    """(fault, message it fired at) of the message-anchored faults that fired
    at another message than theirs: the kernel's count and the trace's
    ordinal disagreed, so the run tested another hypothesis than planned."""
    return [(f, o.message) for f, o in zip(faults, outcomes, strict=True)
            if o.fired and o.message and isinstance(f.anchor, MessageAnchor)
            and o.message != str(f.anchor.id)]


@dataclass
class SearchOptions:
    budget: Budget
    strategy: str = "ldfi"  # ldfi | random | exhaustive
    order: str = "largest"  # ldfi's set sizes: largest | smallest (Molly's) first
    max_runs: int = 200
    time_budget: float | None = None  # seconds of wall time for the whole search
    reruns: int = 3  # re-runs of a candidate bug, before and after minimization
    seed: int | None = None


class Observer:
    """Progress hooks (ldfi.report.Progress implements them)."""

    def starting(self, what: str) -> None: ...

    def finished(self, run: RunRecord, supports: int, tried: int, space: int) -> None: ...


class Engine:
    def __init__(self, scenario: Scenario, options: SearchOptions, program: TraceProgram,
                 store: Store, store_root: Path, observer: Observer | None = None) -> None:
        self.scenario = scenario
        self.options = options
        self.program = program
        self.store = store
        self.store_root = store_root
        self.observer = observer or Observer()
        self.outcome = Outcome.from_mapping(scenario.outcome, f"{scenario.path}: [outcome]")
        self.strategy = Hypotheses(options.budget, strategy=options.strategy,
                                   seed=options.seed or 0, order=options.order)
        self.arming = ArmContext(nodes=tuple(n.name for n in scenario.nodes))
        self.runs: list[RunRecord] = []
        self.started = time.monotonic()
        self.search_id = store.begin(scenario.name, str(scenario.path), options.strategy,
                                     budget_json(options.budget), options.seed)
        self.supports = 0
        self.tried = 0
        self.answered = AnsweredRuns()
        self.repeats: list[tuple[list[str], int]] = []  # hypotheses an earlier run answered
        self._deferred: list[frozenset[Fault]] = []  # sets that wait for their smaller one's run
        self._known: set[tuple[str, str, str]] = set()  # (src, dst, content) of run 0
        self._last_overhead_mark = time.monotonic()

    # -- the loop ---------------------------------------------------------------

    def search(self) -> SearchResult:
        first = self._execute([], "fault-free")
        if first.result.predicate_ok is None:
            return self._finish(INCONCLUSIVE, "The fault-free run could not complete "
                                f"({first.result.error}); fix the scenario first "
                                f"(logs: {first.result.run_dir}/logs).")
        if not first.result.predicate_ok:
            return self._bug_without_faults(first)
        if first.result.vacuous:
            return self._finish(INCONCLUSIVE, "The fault-free run satisfies the predicate only "
                                "vacuously (the check exited with its vacuous_exit status): "
                                "there is no good outcome to learn the lineage of. Make the "
                                "workload produce one.")
        self._learn(first)
        flawed: list[str] = []  # why a certification would not be sound
        if not first.trace.complete:
            flawed.append(f"the fault-free run lost {first.trace.lost_events} events")
        while True:
            why_stop = self._out_of_budget()
            if why_stop:
                return self._finish(INCONCLUSIVE, why_stop + self._untested(flawed))
            hypothesis = self._next_hypothesis()
            if hypothesis is None:
                break
            same = self.answered.answering(hypothesis)
            if same is not None:  # that run again: nothing to learn from running it
                self.repeats.append(([str(f) for f in sorted(hypothesis)], same))
                continue
            self.tried += 1
            run = self._execute(sorted(hypothesis), "hypothesis")
            record = self.runs[-1]
            if run.result.predicate_ok is None:
                flawed.append(f"run {record.index} could not complete ({run.result.error})")
                self.strategy.mark_tried(hypothesis)
                self._report_progress()
                continue
            if not run.result.predicate_ok:
                self._report_progress()
                return self._confirm_bug(sorted(hypothesis), run)
            if record.unfired:
                flawed.append(f"run {record.index}: " + "; ".join(
                    f"{f.fault} did not fire although its anchor occurred"
                    for f in record.unfired))
            for fault, at in misfired(sorted(hypothesis), record.faults):
                flawed.append(f"run {record.index}: {fault} fired at {at}, not at its message")
            if not run.trace.complete:
                flawed.append(f"run {record.index} lost {run.trace.lost_events} events")
            self.strategy.mark_tried(hypothesis)
            fired = [f for f, o in zip(sorted(hypothesis), record.faults, strict=True) if o.fired]
            if run.result.vacuous:  # good only because the faults removed the premise
                self.strategy.add_vacuous(fired)
                self.runs[-1].support_size = 0
                self._report_progress()
                continue
            self._learn(run, fired)
        if flawed:
            return self._finish(INCONCLUSIVE, "No hypothesis is left within the budget, but "
                                "the search cannot vouch for all of it: " + "; ".join(flawed)
                                + ".")
        return self._finish(CERTIFIED, self._certified_reason())

    def _next_hypothesis(self) -> frozenset[Fault] | None:
        """The strategy's next set; but a set some of whose faults cannot fire
        (Hypotheses.moot) first yields the smaller set without them, and
        comes back after it: that run then answers it (AnsweredRuns), unless
        the prediction was wrong and a dropped fault's anchor did occur."""
        if self._deferred:
            return self._deferred.pop()
        hypothesis = self.strategy.next()
        if hypothesis is None:
            return None
        smaller = hypothesis - self.strategy.moot(hypothesis)
        if (smaller == hypothesis or not smaller or self.strategy.was_tried(smaller)
                or self.answered.answering(smaller) is not None):
            return hypothesis
        self.strategy.mark_tried(smaller)
        self._deferred.append(hypothesis)
        return smaller

    def _learn(self, run: TracedRun, fired: Sequence[Fault] = ()) -> None:
        """Add the run's support. If the outcome was reached through messages
        the fault-free run never sent (new content, not retransmissions), that
        path exists because of the faults (timeouts, termination protocols:
        2pc-ctp), so the support binds only hypotheses holding those faults.
        Otherwise it is an alternative the protocol always has (a retry, the
        same delivery without the crashed node), as in Molly, and binds all:
        conditioning every support was measured to cost ack-deliv over 200
        runs instead of 58."""
        support = lineage(run.trace, self.outcome).support
        self.runs[-1].support_size = len(support)
        if not self._known:  # the fault-free run: what the protocol sends anyway
            self._known = {(m.src, m.dst, m.payload_hash) for m in support.messages}
        novel = any((m.src, m.dst, m.payload_hash) not in self._known
                    for m in support.messages)
        self.strategy.add_support(support, fired if novel else ())
        self.supports += 1
        self._report_progress()

    # -- a bug ------------------------------------------------------------------------

    def _confirm_bug(self, faults: list[Fault], failing: TracedRun) -> SearchResult:
        """Re-run the failing hypothesis, minimize it, re-run the minimum."""
        found = [str(f) for f in faults]
        repro = self._reproduce(faults, "reproduce")
        if repro == 0 and self.options.reruns > 0:
            return self._finish(INCONCLUSIVE, f"{'; '.join(found)} broke the outcome once "
                                f"(run {self.runs[-1 - self.options.reruns].index}) but never "
                                f"again in {self.options.reruns} re-runs: a flaky failure. Its "
                                f"run is in {failing.result.run_dir}.")
        last_failure: dict[str, TracedRun] = {"run": failing}

        def fails(subset: list[Fault]) -> bool:
            run = self._execute(subset, "minimize")
            if run.result.predicate_ok is False:
                last_failure["run"] = run
                return True
            return False

        minimal = ddmin(faults, fails) if len(faults) > 1 else faults
        if minimal != faults:
            # a failing run of exactly the minimal set, for the report
            last_failure["run"] = self._execute(minimal, "confirm")
        reproduced = self._reproduce(minimal, "confirm")
        attempts = self.options.reruns
        witness = last_failure["run"]
        cx = Counterexample(
            faults=[str(f) for f in minimal], found_with=found, reproduced=reproduced,
            attempts=attempts, run_dir=witness.result.run_dir, trace=str(witness.trace_path),
            replay=self._replay_command(minimal))
        reason = (f"The outcome breaks under {len(minimal)} fault(s): "
                  f"{'; '.join(cx.faults)}. Reproduced {reproduced}/{attempts} times.")
        return self._finish(BUG, reason, counterexample=cx)

    def _reproduce(self, faults: list[Fault], purpose: str) -> int:
        return sum(self._execute(faults, purpose).result.predicate_ok is False
                   for _ in range(self.options.reruns))

    def _bug_without_faults(self, first: TracedRun) -> SearchResult:
        failures = 1 + self._reproduce([], "reproduce")
        attempts = 1 + self.options.reruns
        cx = Counterexample([], [], failures - 1, self.options.reruns, first.result.run_dir,
                            str(first.trace_path), self._replay_command([]))
        return self._finish(BUG, f"The predicate fails WITHOUT any fault ({failures}/{attempts} "
                            "runs): the system or its check is broken"
                            + (" or flaky" if failures < attempts else "")
                            + ". Fix that before searching for fault-tolerance bugs.",
                            counterexample=cx)

    # -- one run ------------------------------------------------------------------------

    def _execute(self, faults: Sequence[Fault], purpose: str) -> TracedRun:
        label = "; ".join(str(f) for f in faults) or "no faults"
        self.observer.starting(f"{purpose}: {label}")
        overhead_start = time.monotonic()
        plan = [self._planned(f) for f in faults]
        run = traced_run(self.scenario, self.store_root, self.program, plan)
        result = run.result
        occurrences = Occurrences(run.trace)
        outcomes = [self._outcome_of(f, r, occurrences)
                    for f, r in zip(faults, run.trace.faults, strict=True)]
        total = time.monotonic() - overhead_start
        record = RunRecord(
            index=len(self.runs), purpose=purpose, faults=outcomes,
            predicate=result.predicate_ok, vacuous=result.vacuous, status=result.status,
            error=result.error,
            duration=result.wall, engine_overhead=max(0.0, total - result.wall),
            lost_events=run.trace.lost_events, support_size=0, run_id=result.run_id,
            run_dir=result.run_dir)
        self.runs.append(record)
        self.store.add_run(self.search_id, record)
        # what a completed good run answers (ldfi.engine.equivalence); not a
        # run that lost events: an anchor missing from its trace may still
        # have occurred
        if result.predicate_ok and not record.unfired and run.trace.complete:
            fired = [f for f, o in zip(faults, outcomes, strict=True) if o.fired]
            self.answered.add(record.index, fired, occurrences)
        if purpose != "hypothesis" and purpose != "fault-free":
            self._report_progress()
        return run

    def _planned(self, fault: Fault) -> PlannedFault:
        trigger, action = arm(fault, self.arming)
        return PlannedFault(str(fault), trigger, action)

    def _outcome_of(self, fault: Fault, report: FaultReport,
                    occurrences: Occurrences) -> FaultOutcome:
        vacuous = not report.fired and not occurrences.occurred(fault)
        return FaultOutcome(str(fault), report.fired, vacuous, report.message,
                            report.describe())

    # -- bookkeeping ----------------------------------------------------------------------

    def _report_progress(self) -> None:
        self.observer.finished(self.runs[-1], self.supports, self.tried,
                               self.strategy.search_space())

    def _out_of_budget(self) -> str:
        if len(self.runs) >= self.options.max_runs:
            return f"The run budget ({self.options.max_runs} runs) is exhausted."
        if (self.options.time_budget is not None
                and time.monotonic() - self.started >= self.options.time_budget):
            return f"The time budget ({self.options.time_budget:g}s) is exhausted."
        return ""

    def _untested(self, flawed: list[str]) -> str:
        text = f" {self.tried} hypotheses were tried of at most {self.strategy.search_space()}."
        return text + (" Also: " + "; ".join(flawed) + "." if flawed else "")

    def _certified_reason(self) -> str:
        b = describe_budget(self.options.budget)
        repeats = (f", answered by an earlier run ({len(self.repeats)}: their other faults' "
                   "anchors never occur there)") if self.repeats else ""
        return (f"No combination of faults within the budget ({b}) can break the "
                f"outcome: every one is either tried ({self.tried} runs with faults){repeats} "
                f"or ruled out by the {self.supports} ways the outcome was reached.")

    def _assumptions(self) -> list[str]:
        return [
            "faults are anchored to messages that occurred in the runs seen (the lineage); "
            "behaviour that never showed up in a run is not covered",
            "the system behaves the same for the same faults (re-runs measure how far that "
            "holds)",
            *budget_assumptions(self.options.budget),
        ]

    def _replay_command(self, faults: Sequence[Fault]) -> str:
        inject = "; ".join(str(f) for f in faults)
        cmd = ["ldfi", "run", str(self.scenario.path)]
        cmd += ["--inject", inject] if inject else ["--no-faults"]
        return shlex.join(cmd)

    def _finish(self, verdict: str, reason: str,
                counterexample: Counterexample | None = None) -> SearchResult:
        result = SearchResult(
            verdict=verdict, reason=reason, scenario=self.scenario.name,
            scenario_path=str(self.scenario.path), strategy=self.options.strategy,
            order=self.options.order,
            budget=budget_json(self.options.budget), search_space=self.strategy.search_space(),
            hypotheses_tried=self.tried, supports=self.supports, seed=self.options.seed,
            answered_by_earlier_runs=[{"faults": h, "run": i} for h, i in self.repeats],
            wall=time.monotonic() - self.started, runs_detail=self.runs,
            counterexample=counterexample, assumptions=self._assumptions())
        self.store.finish(self.search_id, result)
        return result


def search(scenario: Scenario, options: SearchOptions, program: TraceProgram, store_root: Path,
           observer: Observer | None = None,
           make_store: Callable[[Path], Store] = Store) -> SearchResult:
    engine = Engine(scenario, options, program, make_store(store_root), store_root, observer)
    try:
        return engine.search()
    finally:
        # free the solver (and its pending z3 enumerations) now, while z3 is
        # whole, not at interpreter exit, where finalizers run in any order
        del engine.strategy
