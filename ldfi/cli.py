"""The `ldfi` command line: parse arguments, dispatch to one module per
subcommand, and turn UserError into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import select
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from ldfi import __version__
from ldfi.errors import EXIT_INCONCLUSIVE, UserError

Handler = Callable[[argparse.Namespace], int]


def _doctor(args: argparse.Namespace) -> int:
    from ldfi.doctor import run_doctor

    return run_doctor(as_json=args.json)


def _run(args: argparse.Namespace) -> int:
    from ldfi.errors import require_root
    from ldfi.scenario import load_scenario

    scenario = load_scenario(args.scenario)
    if args.no_faults and args.inject:
        raise UserError("--no-faults and --inject exclude each other: pick one")
    options = None if args.no_faults or args.inject else _search_options(args, scenario)
    plan = _plan(args.inject, scenario) if args.inject else None
    require_root("run")
    store = _writable_store(args.store)
    json_out = _writable_file(args.json, "--json")
    if args.no_faults:
        return _run_once(scenario, store, json_out)
    program = _trace_program()
    with program:
        if plan is not None:
            return _inject_once(scenario, store, program, plan, json_out)
        return _search(scenario, store, program, options, json_out)


def _run_once(scenario, store: Path, json_out: Path | None) -> int:
    from ldfi.errors import EXIT_BUG, EXIT_OK
    from ldfi.runner import run_once
    from ldfi.summary import print_run

    result = run_once(scenario, store)
    print_run(result)
    if json_out:
        _write_json(json_out, "--json", result.to_json())
    if result.status == "error":
        return EXIT_INCONCLUSIVE
    return EXIT_OK if result.predicate_ok else EXIT_BUG


def _search_options(args: argparse.Namespace, scenario):
    from ldfi.durations import parse_duration
    from ldfi.engine import SearchOptions
    from ldfi.solver.budget import Budget

    table = dict(scenario.faults)
    for key, value in (("kinds", args.kinds), ("max_faults", args.max_faults),
                       ("max_crashes", args.max_crashes), ("horizon", args.horizon)):
        if value is not None:
            table[key] = tuple(k.strip() for k in value.split(",") if k.strip()) \
                if key == "kinds" else value
    if args.include_client:
        table["include_client"] = True
    budget = Budget.from_mapping({k: v for k, v in table.items() if v is not None},
                                 f"{args.scenario}: [faults] and flags")
    for flag, value in (("--max-runs", args.max_runs), ("--reruns", args.reruns)):
        if value < (1 if flag == "--max-runs" else 0):
            raise UserError(f"{flag} {value}: must be at least "
                            f"{1 if flag == '--max-runs' else 0}")
    time_budget = None
    if args.time_budget:
        try:
            time_budget = parse_duration(args.time_budget)
        except ValueError as err:
            raise UserError(f"--time-budget {args.time_budget}: {err}") from None
    return SearchOptions(budget=budget, strategy=args.strategy, max_runs=args.max_runs,
                         time_budget=time_budget, reruns=args.reruns, seed=args.seed,
                         order=args.order)


def _plan(text: str, scenario):
    from ldfi.faults import ArmContext, arm, parse_plan
    from tracer.injector import PlannedFault

    faults = parse_plan(text)
    known = {n.name for n in scenario.nodes} | {"client"}
    for fault in faults:
        unknown = sorted(fault.nodes - known)
        if unknown:
            raise UserError(f"--inject {str(fault)!r}: no node named {unknown[0]!r} in "
                            f"{scenario.path} (nodes: {', '.join(sorted(known))})")
    context = ArmContext(nodes=tuple(n.name for n in scenario.nodes))
    return [PlannedFault(str(f), *arm(f, context)) for f in faults]


def _trace_program(payload: int = 64):
    from tracer.program import TraceProgram, TracerUnavailable

    try:
        return TraceProgram(payload_bytes=payload)
    except TracerUnavailable as err:
        raise UserError(str(err), EXIT_INCONCLUSIVE) from None


def _inject_once(scenario, store: Path, program, plan, json_out: Path | None) -> int:
    from ldfi.errors import EXIT_BUG, EXIT_OK
    from ldfi.summary import print_faults, print_run
    from ldfi.traced_run import traced_run

    run = traced_run(scenario, store, program, plan)
    print_run(run.result)
    print_faults(run.trace.faults)
    print(f"trace: {run.trace_path}")
    if json_out:
        data = run.result.to_json()
        data["faults"] = [dataclasses.asdict(f) for f in run.trace.faults]
        data["trace"] = str(run.trace_path)
        _write_json(json_out, "--json", data)
    if run.result.status == "error":
        return EXIT_INCONCLUSIVE
    return EXIT_OK if run.result.predicate_ok else EXIT_BUG


def _search(scenario, store: Path, program, options, json_out: Path | None) -> int:
    from ldfi.engine import BUG, CERTIFIED, search
    from ldfi.errors import EXIT_BUG, EXIT_OK
    from ldfi.report import Progress, print_verdict

    with Progress(scenario.name, options.strategy) as progress:
        result = search(scenario, options, program, store, progress)
    print_verdict(result)
    if json_out:
        _write_json(json_out, "--json", result.to_json())
    return {BUG: EXIT_BUG, CERTIFIED: EXIT_OK}.get(result.verdict, EXIT_INCONCLUSIVE)


def _replay(args: argparse.Namespace) -> int:
    from ldfi.errors import EXIT_BUG, EXIT_OK, require_root
    from ldfi.scenario import load_scenario
    from ldfi.traced_run import traced_run

    if args.runs < 1:
        raise UserError(f"--runs {args.runs}: must be at least 1")
    report = _read_report(args.report)
    faults = _counterexample_faults(report, args.report)
    scenario = load_scenario(report["scenario_path"])
    plan = _plan("; ".join(faults), scenario) if faults else []
    require_root("replay")
    store = _writable_store(args.store)
    failed = 0
    with _trace_program() as program:
        for i in range(args.runs):
            run = traced_run(scenario, store, program, plan)
            broke = run.result.predicate_ok is False
            failed += broke
            fired = ", ".join(("fired" if f.fired else "DID NOT FIRE") for f in run.trace.faults)
            print(f"replay {i + 1}/{args.runs}: "
                  f"{'predicate FAILS' if broke else 'predicate holds'}"
                  f"{' (' + fired + ')' if fired else ''}  {run.result.run_dir}")
    print(f"reproduced {failed}/{args.runs}: {'; '.join(faults) or 'no faults'}")
    return EXIT_BUG if failed else EXIT_OK


def _read_report(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; give a report.json written by 'ldfi run'") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a search report ({err})") from None
    if not isinstance(data, dict) or "scenario_path" not in data or "verdict" not in data:
        raise UserError(f"{path}: not a search report (no scenario_path/verdict)")
    if not isinstance(data["scenario_path"], str) or not data["scenario_path"]:
        raise _malformed(path, "scenario_path", data["scenario_path"], "the scenario TOML's path")
    return data


def _counterexample_faults(report: dict, path: str) -> list[str]:
    """The minimized faults a report's counterexample holds (the fault texts
    'ldfi run' wrote), or a UserError naming the field that is wrong."""
    cx = report.get("counterexample")
    if not cx:
        raise UserError(f"{path}: verdict {report.get('verdict')!r} has no "
                        "counterexample to replay")
    if not isinstance(cx, dict):
        raise _malformed(path, "counterexample", cx, 'an object with a "faults" list')
    faults = cx.get("faults")
    if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
        raise _malformed(path, "counterexample.faults", faults,
                         'a list of faults, e.g. ["crash(server, before send 3)"]')
    return faults


def _malformed(path: str, field: str, value: object, want: str) -> UserError:
    shown = "missing" if value is None else f"{value!r}"[:60]
    return UserError(f"{path}: {field} is malformed ({shown}); it must be {want}: give the "
                     "report.json 'ldfi run' wrote, unedited")


def _faults(args: argparse.Namespace) -> int:
    from ldfi.faults import get, kinds

    for kind in kinds():
        model = get(kind)
        print(f"{kind:<10} {model.summary}\n{'':<10} e.g. {model.example}")
    return 0


def _trace(args: argparse.Namespace) -> int:
    from ldfi.errors import EXIT_OK, require_root
    from ldfi.scenario import load_scenario
    from ldfi.summary import print_run, print_trace
    from ldfi.traced_run import traced_run
    scenario = load_scenario(args.scenario)
    if not 0 <= args.payload <= 4096:
        raise UserError(f"--payload {args.payload}: must be 0 (off) to 4096 bytes")
    require_root("trace")
    store = _writable_store(args.store)
    output = _writable_file(args.output, "-o")
    with _trace_program(args.payload) as program:
        run = traced_run(scenario, store, program)
    print_run(run.result)
    print_trace(run.trace, run.trace_path)
    if output:
        _write_whole(output, "-o", run.trace_path.read_bytes())
        print(f"trace written to {output}")
    if run.result.status == "error" or not run.trace.complete:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def _writable_store(path: str) -> Path:
    store = Path(path)
    try:
        (store / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--store {path}: {err.strerror}; give a writable directory") from None
    return store


def _writable_file(path: str | None, flag: str) -> Path | None:
    """Fail before a long run, not after it, when its output cannot be
    written; without creating it: an interrupted run must leave no empty file."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{flag} {path}: is a directory; give a writable file path")
    try:
        if _is_special(out):
            if not os.access(out, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        else:
            probe = _temporary_beside(out)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
    except OSError as err:
        raise UserError(f"{flag} {path}: {err.strerror}; give a writable file path") from None
    return out


def _is_special(path: Path) -> bool:
    """A pipe or device (-o /dev/stdout): written in place, never renamed over."""
    return path.exists() and not path.is_file()


def _temporary_beside(out: Path) -> Path:
    """A name in the target's own directory (through a symlink, as open()
    would go), so that the rename over it is atomic."""
    target = Path(os.path.realpath(out))
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _write_whole(out: Path, flag: str, data: bytes) -> None:
    """Write `out` whole or not at all: into a file beside it, renamed over it
    once complete. A reader never finds half a file, and an interrupted or
    failed write leaves only what was there before."""
    try:
        if _is_special(out):
            out.write_bytes(data)
            return
        target = Path(os.path.realpath(out))
        temporary = _temporary_beside(out)
        try:
            temporary.write_bytes(data)
            if target.exists():
                shutil.copymode(target, temporary)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UserError(f"{flag} {out}: cannot write it ({err.strerror}); the run's own copy "
                        "is in its run directory (see above)", EXIT_INCONCLUSIVE) from None


def _write_json(out: Path, flag: str, data: dict) -> None:
    _write_whole(out, flag, (json.dumps(data, indent=2) + "\n").encode())


def _export(args: argparse.Namespace) -> int:
    from ldfi.trace.wire import WHOLE_TRACE, TraceFileError, read_trace, trace_to_json

    try:
        trace = read_trace(args.trace)
    except FileNotFoundError:
        raise UserError(f"{args.trace}: no such file; give a trace from 'ldfi trace'") from None
    except TraceFileError as err:  # says what is wrong with the file, and what to give
        raise UserError(f"{args.trace}: {err}") from None
    except OSError as err:
        raise UserError(f"{args.trace}: cannot read it ({err.strerror}); {WHOLE_TRACE}") from None
    print(json.dumps(trace_to_json(trace), indent=2))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from ldfi.errors import require_root
    from ldfi.sandbox import gc

    require_root("gc")
    if args.dry_run:
        found = gc.find_leftovers()
        for leftover in found:
            print(f"would remove {leftover.describe()}")
        print(f"ldfi gc: would remove {len(found)} leftover(s)")
        return 0
    done = gc.collect()
    for leftover in done.removed:
        print(f"removed {leftover.describe()}")
    for leftover, why in done.failed:
        print(f"could not remove {leftover.describe()}: {why}", file=sys.stderr)
    print(f"ldfi gc: removed {len(done.removed)} leftover(s)"
          + (f", {len(done.failed)} could not be removed" if done.failed else ""))
    return 1 if done.failed else 0


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser. An argument it does not know is its error, told
    with its own usage line ('ldfi doctor [-h] [--json]'); by default argparse
    hands it up to the top level, whose usage does not name the subcommand."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfi",
        description="Lineage-driven fault injection for unmodified distributed systems (eBPF).",
    )
    parser.add_argument("--version", action="version", version=f"ldfi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_SubcommandParser)

    doctor = sub.add_parser("doctor", help="probe the kernel for every eBPF feature bop-bpf uses")
    doctor.add_argument("--json", action="store_true", help="print the probe results as JSON")
    doctor.set_defaults(handler=_doctor)

    run = sub.add_parser(
        "run", help="search for a fault-tolerance bug (LDFI), or run once (--no-faults, --inject)")
    run.add_argument("scenario", help="path to the scenario TOML file")
    once = run.add_argument_group("one run instead of a search")
    once.add_argument(
        "--no-faults", action="store_true", help="run the scenario once, without faults, and report"
    )
    once.add_argument("--inject", metavar="PLAN",
                      help='run once with these faults, e.g. "crash(server, before send 3)"; '
                           "several separated by ';' (docs/fault-models.md)")
    budget = run.add_argument_group("fault budget (defaults: the scenario's [faults] table)")
    budget.add_argument("--kinds", metavar="K,K", help="fault kinds, e.g. omission,cut,crash")
    budget.add_argument("--max-faults", type=int, metavar="N", help="faults per hypothesis")
    budget.add_argument("--max-crashes", type=int, metavar="N", help="crashes per hypothesis")
    budget.add_argument("--horizon", type=int, metavar="N",
                        help="only fault messages/sends with ordinal below N (Molly's EFF)")
    budget.add_argument("--include-client", action="store_true",
                        help="also fault the workload's and check's own messages")
    search = run.add_argument_group("search")
    search.add_argument("--strategy", choices=["ldfi", "random", "exhaustive"], default="ldfi")
    search.add_argument("--order", choices=["largest", "smallest"], default="largest",
                        help="ldfi: the largest fault sets first (default; a bug is then "
                             "minimized by ddmin), or the smallest first (Molly's order)")
    search.add_argument("--max-runs", type=int, default=200, metavar="N",
                        help="stop (inconclusive) after N runs (default 200)")
    search.add_argument("--time-budget", metavar="DURATION", help="stop after this long, e.g. 10m")
    search.add_argument("--reruns", type=int, default=3, metavar="N",
                        help="re-runs of a bug to measure its reproduction (default 3)")
    search.add_argument("--seed", type=int, metavar="N", help="seed of the random strategy")
    run.add_argument("--store", default="ldfi-store", help="where runs and reports go")
    run.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    run.set_defaults(handler=_run, runs_scenario=True)

    replay = sub.add_parser("replay", help="re-run a search's counterexample")
    replay.add_argument("report", help="the report.json of a search (printed by 'ldfi run')")
    replay.add_argument("--runs", type=int, default=1, metavar="N", help="how many times")
    replay.add_argument("--store", default="ldfi-store", help="where run directories go")
    replay.set_defaults(handler=_replay, runs_scenario=True)

    faults = sub.add_parser("faults", help="list the fault kinds (built-in and plugins)")
    faults.set_defaults(handler=_faults)

    trace = sub.add_parser("trace", help="run a scenario once under the eBPF tracer")
    trace.add_argument("scenario", help="path to the scenario TOML file")
    trace.add_argument("-o", "--output", metavar="FILE", help="copy the trace (protobuf) here")
    trace.add_argument("--payload", type=int, default=64, metavar="N",
                       help="bytes of each message's payload to record (0: none; default 64)")
    trace.add_argument("--store", default="ldfi-store", help="where run directories go")
    trace.set_defaults(handler=_trace, runs_scenario=True)

    export = sub.add_parser("export", help="print a trace file for people and tools")
    export.add_argument("trace", help="a trace written by 'ldfi trace'")
    export.add_argument("--format", choices=["json"], default="json")
    export.set_defaults(handler=_export)

    gc = sub.add_parser(
        "gc", help="remove namespaces, cgroups and processes left behind by a killed engine"
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    gc.set_defaults(handler=_gc)
    return parser


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: unwinds like Ctrl-C, every clean-up on the way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    """The first SIGINT or SIGTERM. Both are ignored from here on, so that the
    clean-up it sets off runs to its end: a second Ctrl-C landing inside a bcc
    detach or an mmap close left half-closed objects, tracebacks and exit -2."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _stdout_closed(err: Exception) -> bool:
    """Whether `err` means stdout is a pipe or socket with no reader left
    (`ldfi export run.pb | head -1`): the reader's choice, not a failure."""
    if not isinstance(err, BrokenPipeError) or sys.stdout is None:
        return False
    poll = select.poll()
    poll.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))


def _discard_stdout() -> None:
    """Python flushes stdout at exit: point it at /dev/null first, so that what
    is left in the buffer does not raise BrokenPipeError again (the handling
    the Python docs recommend, see the signal module's note on SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _unexpected(args: argparse.Namespace, err: Exception) -> str:
    """The one line for an error nobody foresaw; 'ldfi gc' only after a run."""
    if getattr(args, "runs_scenario", False):
        after = "the run could not complete; 'ldfi gc' removes anything left behind"
    else:
        after = f"'ldfi {args.command}' could not complete"
    return (f"ldfi: error: {type(err).__name__}: {err} ({after}; LDFI_DEBUG=1 shows the "
            "traceback)")


def main(argv: list[str] | None = None) -> int:
    """The `ldfi` program. Exit codes: docs/architecture.md. Once it returns,
    SIGINT and SIGTERM are ignored: the process only exits then, and a signal
    landing in an atexit clean-up (bcc's) would only print a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # both take Ctrl-C's clean-up path,
        if signal.getsignal(sig) != signal.SIG_IGN:  # unless ignored (nohup, `cmd &`)
            signal.signal(sig, _interrupt)
    try:
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _dispatch(args: argparse.Namespace) -> int:
    handler: Handler = args.handler
    try:
        code = handler(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a reader that went away shows here, not at exit
        return code
    except UserError as err:
        print(f"ldfi: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # also the doctor's own, raised between its probes
        signum = getattr(err, "signum", signal.SIGINT)
        what = "terminated" if signum == signal.SIGTERM else "interrupted"
        print(f"ldfi: {what}; cleaned up", file=sys.stderr)
        return 128 + signum
    except Exception as err:  # the environment failed us: one line, never a traceback
        if _stdout_closed(err):
            _discard_stdout()
            return 128 + signal.SIGPIPE  # what a shell shows for a tool SIGPIPE ended
        if os.environ.get("LDFI_DEBUG"):
            raise
        print(_unexpected(args, err), file=sys.stderr)
        return EXIT_INCONCLUSIVE


if __name__ == "__main__":
    sys.exit(main())
