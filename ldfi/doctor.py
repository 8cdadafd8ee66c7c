"""`ldfi doctor`: run the kernel probes and say, for a person (a table) or a
machine (--json), what this kernel can do and what the product loses where it
cannot. Exit 0 when everything the product needs is there, 1 otherwise."""

from __future__ import annotations

import json
import platform
import sys

from ldfi.errors import EXIT_BUG, EXIT_OK, require_root
from tracer.probes import ProbeResult, run_probes


def run_doctor(as_json: bool) -> int:
    require_root("doctor")
    results = run_probes()
    ok = all(r.ok for r in results if r.required)
    if as_json:
        print(json.dumps(_report(results, ok), indent=2))
        if not ok:
            print(_failure_line(results), file=sys.stderr)
    else:
        _print_table(results)
        _print_verdict(results, ok)
    return EXIT_OK if ok else EXIT_BUG


def _report(results: list[ProbeResult], ok: bool) -> dict[str, object]:
    return {
        "ok": ok,
        "kernel": platform.release(),
        "probes": [r.to_dict() for r in results],
    }


def _print_table(results: list[ProbeResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ldfi doctor: kernel {platform.release()}", title_justify="left")
    # Titles never wrap, so a reader (or grep) finds each feature on one line.
    table.add_column("probe", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("required", no_wrap=True)
    table.add_column("detail", ratio=3)
    table.add_column("lost when missing", ratio=2)
    for r in results:
        status = (
            "[green]ok[/]" if r.ok else ("[red]missing[/]" if r.required else "[yellow]missing[/]")
        )
        table.add_row(r.title, status, "yes" if r.required else "optional", r.detail, r.loses)
    # Piped output (logs, CI) gets a width that keeps the detail readable.
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)


def _print_verdict(results: list[ProbeResult], ok: bool) -> None:
    if not ok:
        print(_failure_line(results), file=sys.stderr)
        return
    missing_optional = [r.title for r in results if not r.required and not r.ok]
    extras = (
        f" (optional extras missing: {', '.join(missing_optional)})" if missing_optional else ""
    )
    print(f"ldfi doctor: everything bop-bpf needs is here{extras}")


def _failure_line(results: list[ProbeResult]) -> str:
    """One line on what is missing; an unusable bpf() explains every other
    row, so then it is the only thing said."""
    bpf = next((r for r in results if r.name == "bpf_syscall"), None)
    if bpf is not None and not bpf.ok:
        return f"ldfi: error: this kernel has no usable BPF: {bpf.detail}"
    missing = ", ".join(r.title for r in results if r.required and not r.ok)
    return f"ldfi: error: missing what bop-bpf needs: {missing}"
