"""The `ldfi` command line: parse arguments, dispatch to one module per
subcommand, and turn UserError into one line on stderr and an exit code."""

from __future__ import annotations

import argparse
import json
import os
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
    from ldfi.errors import EXIT_BUG, EXIT_OK, require_root
    from ldfi.runner import run_once
    from ldfi.scenario import load_scenario
    from ldfi.summary import print_run

    scenario = load_scenario(args.scenario)
    if not args.no_faults:
        raise UserError(
            "the LDFI search loop is not available yet: run the scenario once with "
            f"'ldfi run {args.scenario} --no-faults'"
        )
    require_root("run")
    store = _writable_store(args.store)
    json_out = _writable_file(args.json, "--json")
    result = run_once(scenario, store)
    print_run(result)
    if json_out:
        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if result.status == "error":
        return EXIT_INCONCLUSIVE
    return EXIT_OK if result.predicate_ok else EXIT_BUG


def _trace(args: argparse.Namespace) -> int:
    from ldfi.errors import EXIT_OK, require_root
    from ldfi.scenario import load_scenario
    from ldfi.summary import print_run, print_trace
    from ldfi.traced_run import traced_run
    from tracer.program import TraceProgram, TracerUnavailable

    scenario = load_scenario(args.scenario)
    if not 0 <= args.payload <= 4096:
        raise UserError(f"--payload {args.payload}: must be 0 (off) to 4096 bytes")
    require_root("trace")
    store = _writable_store(args.store)
    output = _writable_file(args.output, "-o")
    try:
        program = TraceProgram(payload_bytes=args.payload)
    except TracerUnavailable as err:
        raise UserError(str(err), EXIT_INCONCLUSIVE) from None
    with program:
        run = traced_run(scenario, store, program)
    print_run(run.result)
    print_trace(run.trace, run.trace_path)
    if output:
        shutil.copyfile(run.trace_path, output)
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
    """Fail before a long run, not after it, when its output cannot be written."""
    if path is None:
        return None
    out = Path(path)
    try:
        with open(out, "a"):
            pass
    except OSError as err:
        raise UserError(f"{flag} {path}: {err.strerror}; give a writable file path") from None
    return out


def _export(args: argparse.Namespace) -> int:
    from ldfi.trace.wire import read_trace, trace_to_json

    try:
        trace = read_trace(args.trace)
    except FileNotFoundError:
        raise UserError(f"{args.trace}: no such file; give a trace from 'ldfi trace'") from None
    except Exception as err:  # protobuf's DecodeError and friends
        raise UserError(f"{args.trace}: not a bop-bpf trace ({err})") from None
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfi",
        description="Lineage-driven fault injection for unmodified distributed systems (eBPF).",
    )
    parser.add_argument("--version", action="version", version=f"ldfi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    doctor = sub.add_parser("doctor", help="probe the kernel for every eBPF feature bop-bpf uses")
    doctor.add_argument("--json", action="store_true", help="print the probe results as JSON")
    doctor.set_defaults(handler=_doctor)

    run = sub.add_parser("run", help="run a scenario (once, with --no-faults)")
    run.add_argument("scenario", help="path to the scenario TOML file")
    run.add_argument(
        "--no-faults", action="store_true", help="run the scenario once, without faults, and report"
    )
    run.add_argument("--store", default="ldfi-store", help="where run directories go")
    run.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    run.set_defaults(handler=_run)

    trace = sub.add_parser("trace", help="run a scenario once under the eBPF tracer")
    trace.add_argument("scenario", help="path to the scenario TOML file")
    trace.add_argument("-o", "--output", metavar="FILE", help="copy the trace (protobuf) here")
    trace.add_argument("--payload", type=int, default=64, metavar="N",
                       help="bytes of each message's payload to record (0: none; default 64)")
    trace.add_argument("--store", default="ldfi-store", help="where run directories go")
    trace.set_defaults(handler=_trace)

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


def main(argv: list[str] | None = None) -> int:
    # SIGTERM takes the same clean-up path as Ctrl-C (KeyboardInterrupt).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserError as err:
        print(f"ldfi: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("ldfi: interrupted; cleaned up", file=sys.stderr)
        return 130
    except Exception as err:  # the environment failed us: one line, never a traceback
        if os.environ.get("LDFI_DEBUG"):
            raise
        print(f"ldfi: error: {type(err).__name__}: {err} (the run could not complete; "
              "'ldfi gc' removes anything left behind; LDFI_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_INCONCLUSIVE


if __name__ == "__main__":
    sys.exit(main())
