"""What a search produces: one record per run, the counterexample, and the
verdict, each as plain data that goes to the store, the JSON report and the
screen without conversion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

BUG, CERTIFIED, INCONCLUSIVE = "bug", "certified", "inconclusive"


@dataclass
class FaultOutcome:
    fault: str  # the fault's text form (parses back with ldfi.faults)
    fired: bool
    vacuous: bool = False  # did not fire because its anchor did not occur in that run
    message: str = ""  # logical id of the message it fired at
    effect: str = ""  # FaultReport.describe()


@dataclass
class RunRecord:
    index: int  # 0 = the fault-free run
    purpose: str  # fault-free | hypothesis | reproduce | minimize | confirm
    faults: list[FaultOutcome]
    predicate: bool | None  # None: the run did not reach its check
    vacuous: bool  # the check passed only vacuously: nothing learnt from this run
    status: str  # ok | failed | error
    error: str | None
    duration: float  # the target's own run, wall seconds
    engine_overhead: float  # everything else of the iteration (trace, lineage, solve, arm)
    lost_events: int
    support_size: int  # messages in this run's support (0 if none was taken)
    run_id: str
    run_dir: str

    @property
    def all_fired(self) -> bool:
        return all(f.fired or f.vacuous for f in self.faults)

    @property
    def unfired(self) -> list[FaultOutcome]:
        return [f for f in self.faults if not f.fired and not f.vacuous]


@dataclass
class Counterexample:
    faults: list[str]  # minimized
    found_with: list[str]  # the hypothesis that first broke the outcome
    reproduced: int  # failing runs among `attempts` re-runs of the minimized faults
    attempts: int
    run_dir: str  # a failing run of the minimized faults
    trace: str  # its trace
    replay: str  # a command a person can paste


@dataclass
class SearchResult:
    verdict: str  # bug | certified | inconclusive
    reason: str  # one paragraph a person can act on
    scenario: str
    scenario_path: str
    strategy: str
    budget: dict[str, Any]
    search_space: int  # fault combinations the budget admits over the candidates seen
    hypotheses_tried: int
    supports: int
    seed: int | None
    wall: float
    runs_detail: list[RunRecord] = field(default_factory=list)
    # hypotheses not run because an earlier run already was their run (the
    # faults it adds are anchored on things that never happened there)
    answered_by_earlier_runs: list[dict[str, Any]] = field(default_factory=list)
    counterexample: Counterexample | None = None
    assumptions: list[str] = field(default_factory=list)
    report_path: str = ""
    order: str = "largest"  # the ldfi strategy's set sizes (SearchOptions.order)

    @property
    def runs(self) -> int:
        return len(self.runs_detail)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = self.runs
        return data
