"""What a person reads during and after a search: a live progress line, and
a verdict they can act on (what was found or certified, under which
assumptions, and the command that replays the counterexample)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ldfi.engine.records import BUG, CERTIFIED, RunRecord, SearchResult

_COLOURS = {BUG: "bold red", CERTIFIED: "bold green"}


class Progress:
    """Live status while the search runs (a single updating line on a
    terminal, one plain line per run otherwise, so logs stay readable)."""

    def __init__(self, scenario: str, strategy: str, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stderr, highlight=False)
        self.scenario, self.strategy = scenario, strategy
        self.started = time.monotonic()
        self.runs = self.supports = self.tried = self.space = 0
        self.current = "fault-free run"
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self._live = Live(self._line(), console=self.console, transient=True,
                              refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def _line(self) -> Text:
        return Text.assemble(
            (f"{self.scenario} ", "bold"), f"[{self.strategy}] ",
            f"runs {self.runs} · supports {self.supports} · hypotheses tried {self.tried}"
            f" of ≤{self.space} · {time.monotonic() - self.started:.1f}s · ",
            (self.current, "cyan"))

    def starting(self, what: str) -> None:
        self.current = what
        if self._live is not None:
            self._live.update(self._line())

    def finished(self, run: RunRecord, supports: int, tried: int, space: int) -> None:
        self.runs, self.supports, self.tried, self.space = run.index + 1, supports, tried, space
        if self._live is not None:
            self._live.update(self._line())
            return
        faults = ", ".join(f.fault for f in run.faults) or "no faults"
        outcome = {True: "predicate holds", False: "PREDICATE FAILS", None: "run error"}
        held = " vacuously" if run.predicate and run.vacuous else ""
        # markup=False: "[hypothesis]" and fault strings are text, not rich tags
        self.console.print(f"run {run.index:>3} [{run.purpose}] {faults}: "
                           f"{outcome[run.predicate]}{held} ({run.duration:.2f}s)", markup=False)


def print_verdict(result: SearchResult, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(Text(f"\n{result.verdict.upper()}", style=_COLOURS.get(result.verdict,
                                                                          "bold yellow")),
                  Text(f"  {result.scenario} · strategy {result.strategy}"
                       + (f", {result.order} sets first" if result.strategy == "ldfi" else "")))
    console.print(result.reason)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths and commands must stay whole to be pasted
    table.add_row("runs", f"{result.runs} ({result.wall:.1f}s)")
    table.add_row("budget", _budget(result.budget))
    repeats = len(result.answered_by_earlier_runs)
    table.add_row("search space", f"{result.search_space} fault combinations within the budget; "
                  f"{result.hypotheses_tried} tried"
                  + (f", {repeats} answered by earlier runs" if repeats else ""))
    table.add_row("supports", str(result.supports))
    cx = result.counterexample
    if cx is not None:
        table.add_row("counterexample", "; ".join(cx.faults))
        if cx.faults != cx.found_with:
            table.add_row("found as", "; ".join(cx.found_with))
        table.add_row("reproduced", f"{cx.reproduced}/{cx.attempts} re-runs")
        table.add_row("failing run", cx.run_dir)
        table.add_row("trace", cx.trace)
        table.add_row("replay", cx.replay)
    for line in result.assumptions:
        table.add_row("assumes", line)
    if result.report_path:
        table.add_row("report", result.report_path)
        if cx is not None:
            table.add_row("replay", f"ldfi replay {result.report_path} --runs 3")
    console.print(table)


def _budget(budget: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in budget.items() if v not in (None, {}, []))
