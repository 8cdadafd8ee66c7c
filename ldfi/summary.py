"""What a person reads after a run: a short table of nodes, the workload,
the check and the verdict, with where the logs are."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ldfi.runner import RunResult, StepReport
from ldfi.trace import Trace
from tracer.faults import FaultReport


def _step_line(name: str, step: StepReport | None) -> str:
    if step is None:
        return f"{name:9} did not run"
    how = "timed out" if step.timed_out else f"exit {step.exit_code}"
    return f"{name:9} {how:10} {step.duration:.2f}s"


def print_run(result: RunResult, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(f"[bold]scenario[/] {result.scenario}   [bold]run[/] {result.run_id}   "
                  f"[bold]subnet[/] {result.subnet or '-'}", soft_wrap=True)
    table = Table(box=None, pad_edge=False)
    for column in ("node", "address", "pid", "ready", "after", "at end"):
        table.add_column(column)
    for node in result.nodes:
        after = f"{node.ready_after:.2f}s" if node.ready_after is not None else "never"
        end = "running" if node.exit_code is None else f"exited {node.exit_code}"
        table.add_row(node.name, node.address, str(node.pid), node.ready, after, end)
    console.print(table)
    console.print(_step_line("workload", result.workload))
    console.print(_step_line("check", result.check))
    console.print(f"wall {result.wall:.2f}s (sandbox set-up {result.sandbox_setup * 1000:.0f} ms, "
                  f"teardown {result.teardown * 1000:.0f} ms)")
    console.print(f"run directory: {result.run_dir}", soft_wrap=True)
    if result.status == "error":
        console.print(f"[bold yellow]INCONCLUSIVE[/]: {result.error}", soft_wrap=True)
    elif result.vacuous:
        console.print(f"[bold green]PREDICATE HOLDS VACUOUSLY[/]: the check exited "
                      f"{result.check.exit_code if result.check else '-'} (vacuous_exit)")
    elif result.predicate_ok:
        console.print("[bold green]PREDICATE HOLDS[/]: the check exited 0")
    else:
        console.print(f"[bold red]PREDICATE FAILED[/]: the check exited "
                      f"{result.check.exit_code if result.check else '-'}"
                      f"{' (timed out)' if result.check and result.check.timed_out else ''}"
                      f"; see {result.run_dir}/logs/check.err", soft_wrap=True)


MESSAGES_SHOWN = 12


def print_trace(trace: Trace, path: object, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    delivered = sum(1 for m in trace.messages if m.delivered)
    console.print(f"trace: {len(trace.events)} events, {len(trace.messages)} messages "
                  f"({delivered} delivered), {len(trace.edges)} happens-before edges -> {path}",
                  soft_wrap=True)
    shown = trace.messages[:MESSAGES_SHOWN]
    if shown:
        table = Table(box=None, pad_edge=False)
        for column in ("message", "bytes", "delivered", "payload"):
            table.add_column(column)
        for m in shown:
            payload = m.payload[:24].decode("latin-1").encode("unicode_escape").decode()
            table.add_row(str(m.id), str(m.size), "yes" if m.delivered else "NO", payload)
        console.print(table)
        if len(trace.messages) > len(shown):
            console.print(f"... and {len(trace.messages) - len(shown)} more "
                          "('ldfi export' prints them all)")
    if not trace.complete:
        console.print(f"[bold yellow]INCOMPLETE TRACE[/]: the kernel lost {trace.lost_events} "
                      "events (record ring full); messages may be missing")


def print_faults(reports: list[FaultReport], console: Console | None = None) -> None:
    """One line per armed fault: fired or not, where, and what it did."""
    console = console or Console(highlight=False)
    for report in reports:
        style = "green" if report.fired else "bold yellow"
        console.print(f"[{style}]fault[/] {report.describe()}", soft_wrap=True)
        for note in report.notes:
            console.print(f"      {note}", soft_wrap=True)
