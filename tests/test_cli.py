"""The `ldfi` command line as a user meets it: a closed stdout pipe, a
malformed report, a mistyped option, Ctrl-C pressed several times, SIGTERM.
One line on stderr or none, the documented exit code, nothing left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import MODELS, REPO, ldfi, ldfi_resources
from test_trace_file import udp_ping_trace

from ldfi.cli import _unexpected, build_parser
from ldfi.trace.wire import write_trace
from tracer.kernel import cgroup2_root

ECHO = str(MODELS / "echo" / "scenario.toml")


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# -- a reader that went away (| head -1) ---------------------------------------

def with_closed_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    """`ldfi ARGS | head -0`, deterministically: the pipe's read end is
    closed before ldfi writes anything."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "ldfi.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", ["export", "faults"])
def test_a_closed_stdout_pipe_ends_quietly(tmp_path: Path, command: str) -> None:
    trace = tmp_path / "run.pb"
    write_trace(udp_ping_trace(), trace)
    done = with_closed_stdout(*(["export", str(trace)] if command == "export" else ["faults"]))
    assert done.stderr == ""
    assert done.returncode == 128 + signal.SIGPIPE  # what a shell shows for `cat | head`


def test_the_other_pipes_of_a_run_are_not_taken_for_stdout() -> None:
    """A BrokenPipeError while stdout is fine is a real failure: said, not swallowed."""
    args = build_parser().parse_args(["export", "run.pb"])
    line = _unexpected(args, BrokenPipeError(32, "Broken pipe"))
    assert line.startswith("ldfi: error: BrokenPipeError: ")


def test_unexpected_errors_name_ldfi_gc_only_after_a_run() -> None:
    parse = build_parser().parse_args
    outside = _unexpected(parse(["export", "run.pb"]), KeyError("x"))
    assert "'ldfi export' could not complete" in outside and "ldfi gc" not in outside
    for argv in (["trace", ECHO], ["run", ECHO], ["replay", "report.json"]):
        assert "'ldfi gc' removes anything left behind" in _unexpected(parse(argv), OSError())


# -- a malformed report ----------------------------------------------------------

@pytest.mark.parametrize(("report", "field"), [
    ({"counterexample": {"nofaults": 1}}, "counterexample.faults is malformed (missing)"),
    ({"counterexample": "x"}, "counterexample is malformed ('x')"),
    ({"counterexample": {"faults": "crash(server, before send 3)"}}, "counterexample.faults"),
    ({"counterexample": {"faults": [3]}}, "counterexample.faults is malformed ([3])"),
    ({"scenario_path": 5, "counterexample": {"faults": []}}, "scenario_path is malformed (5)"),
])
def test_replay_of_a_malformed_report_names_the_field(tmp_path: Path, report: dict,
                                                      field: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"scenario_path": ECHO, "verdict": "bug", **report}))
    done = ldfi("replay", str(path), "--store", str(tmp_path / "store"))
    line = one_line(done)
    assert done.returncode == 2 and done.stdout == ""
    assert line.startswith(f"ldfi: error: {path}: {field}"), line
    assert "ldfi gc" not in line
    assert not (tmp_path / "store").exists()  # refused before anything ran


# -- a mistyped option -------------------------------------------------------------

@pytest.mark.parametrize(("argv", "usage"), [
    (["doctor", "--jsn"], "usage: ldfi doctor [-h] [--json]"),
    (["gc", "--force"], "usage: ldfi gc [-h] [--dry-run]"),
    (["export", "run.pb", "--bogus", "x"], "usage: ldfi export [-h]"),
])
def test_an_unknown_option_is_the_subcommands_error(argv: list[str], usage: str) -> None:
    done = ldfi(*argv)
    assert done.returncode == 2 and done.stdout == ""
    first, last = done.stderr.splitlines()[0], done.stderr.splitlines()[-1]
    assert first.startswith(usage), done.stderr
    unknown = " ".join(argv[argv.index(next(a for a in argv if a.startswith("--"))):])
    assert last == f"ldfi {argv[0]}: error: unrecognized arguments: {unknown}"


# -- Ctrl-C pressed several times, SIGTERM --------------------------------------------

SIGNALLED = """\
name = "signalled"
[run]
timeout = "90s"
[[node]]
name = "sigserver"
cmd = "python3 {models}/echo/server.py --port 7000"
ready = {{ tcp = 7000 }}
[workload]
cmd = "python3 -c 'import time; time.sleep(60)' {marker}"
[check]
cmd = "true"
"""


def bpf_objects(pid: int) -> set[str]:
    """The BPF programs, links and maps process `pid` holds (its fds say)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            info = fd.read_text()
        except OSError:
            continue  # closed meanwhile
        found |= {f"{kind}:{n}" for kind, n in re.findall(r"^(prog|link|map)_id:\s*(\d+)",
                                                           info, re.MULTILINE)}
    return found


def loaded_bpf_objects() -> set[str]:
    found = set()
    for kind in ("prog", "link", "map"):
        listed = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True,
                                text=True, check=True).stdout
        found |= {f"{kind}:{entry['id']}" for entry in json.loads(listed or "[]")}
    return found


def ldfi_cgroup_ids() -> set[int]:
    """Ids of every ldfi cgroup (never reused, unlike names: another run may
    take our slot, and its names, as soon as we are gone)."""
    root = cgroup2_root()
    assert root is not None
    return {d.stat().st_ino for top in root.glob("ldfi-*") for d in (top, *top.iterdir())
            if d.is_dir()}


def our_cgroup_ids(marker: str) -> set[int]:
    """Ids of our run's cgroups: the workload's, its run's, and its siblings
    (waiting for the workload to be in its group: its log opens first)."""
    root = cgroup2_root()
    assert root is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for pid in marked_processes(marker):
            with contextlib.suppress(OSError):
                path = Path(f"/proc/{pid}/cgroup").read_text().strip().split(":")[-1]
                if path.startswith("/ldfi-"):
                    run = (root / path.lstrip("/")).parent
                    return {d.stat().st_ino for d in (run, *run.iterdir()) if d.is_dir()}
        time.sleep(0.02)
    raise AssertionError("the workload never joined its cgroup")


def our_resources(before: set[str]) -> set[str]:
    """What our run added that carries its node's (this test's) name."""
    return {r for r in ldfi_resources() - before if "sigserver" in r}


def marked_processes(marker: str) -> list[str]:
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                alive.append(proc.name)
        except OSError:
            continue
    return alive


def start_trace(tmp_path: Path, out: Path) -> tuple[subprocess.Popen[str], str]:
    """`ldfi trace -o out` of a scenario whose workload sleeps, in a session of
    its own (as a terminal's Ctrl-C reaches only the engine then)."""
    marker = f"signalled-{uuid.uuid4().hex}"  # on the workload's command line only
    scenario = tmp_path / "signalled.toml"
    scenario.write_text(SIGNALLED.format(models=MODELS, marker=marker))
    engine = subprocess.Popen(
        [sys.executable, "-m", "ldfi.cli", "trace", str(scenario), "-o", str(out),
         "--store", str(tmp_path / "store")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_catchable_signals)
    return engine, marker


def _catchable_signals() -> None:
    """ldfi keeps a SIGINT its parent ignored (as in `make test &`): not ours."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def wait_for_workload(engine: subprocess.Popen[str], tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    while not list((tmp_path / "store").glob("runs/*/logs/workload.out")):
        assert engine.poll() is None and time.monotonic() < deadline, engine.communicate()
        time.sleep(0.02)


@pytest.mark.parametrize(("sig", "count", "gap", "old_output"), [
    (signal.SIGINT, 9, 0.001, None),
    (signal.SIGINT, 5, 0.02, b"an earlier trace"),
    (signal.SIGINT, 2, 0.05, None),
    (signal.SIGTERM, 4, 0.01, None),
], ids=["9 SIGINTs 1 ms apart", "5 SIGINTs 20 ms apart", "2 SIGINTs 50 ms apart",
        "4 SIGTERMs"])
@pytest.mark.usefixtures("root", "ebpf")
def test_repeated_signals_during_a_trace_clean_up_once(tmp_path: Path, sig: int, count: int,
                                                      gap: float, old_output: bytes | None
                                                      ) -> None:
    out = tmp_path / "out.pb"
    if old_output is not None:
        out.write_bytes(old_output)
    before = ldfi_resources()
    engine, marker = start_trace(tmp_path, out)
    wait_for_workload(engine, tmp_path)
    ours, groups = our_resources(before), our_cgroup_ids(marker)
    held = bpf_objects(engine.pid)
    assert {r.split(":")[0] for r in ours} >= {"netns", "hosts"} and len(groups) >= 3
    assert any(h.startswith("prog:") for h in held)
    for _ in range(count):
        engine.send_signal(sig)
        time.sleep(gap)
    _, err = engine.communicate(timeout=60)
    name = "interrupted" if sig == signal.SIGINT else "terminated"
    assert (engine.returncode, err.splitlines()) == (128 + sig, [f"ldfi: {name}; cleaned up"])
    # no trace was finished: none written, an earlier one kept as it was
    assert (out.read_bytes() if out.exists() else None) == old_output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.pb")] == []
    # (other runs may be going on, on a developer's machine: look only at ours)
    assert our_resources(before) == set()
    assert groups & ldfi_cgroup_ids() == set()
    assert held & loaded_bpf_objects() == set()
    assert marked_processes(marker) == []


@pytest.mark.usefixtures("root", "ebpf")
def test_signals_while_the_tracer_loads_clean_up_once(tmp_path: Path) -> None:
    """Before the run starts (the BPF programs compile and load for seconds)."""
    out = tmp_path / "out.pb"
    engine, marker = start_trace(tmp_path, out)
    time.sleep(1.0)
    for _ in range(5):
        engine.send_signal(signal.SIGINT)
        time.sleep(0.005)
    _, err = engine.communicate(timeout=60)
    assert (engine.returncode, err.splitlines()) == (130, ["ldfi: interrupted; cleaned up"])
    assert not out.exists() and marked_processes(marker) == []


@pytest.mark.usefixtures("root", "ebpf")
def test_a_finished_trace_is_written_whole(tmp_path: Path) -> None:
    """-o is written beside and renamed into place: the check that it can be
    written leaves no file of its own, the result is the run's trace."""
    scenario = tmp_path / "quick.toml"
    scenario.write_text(textwrap.dedent(SIGNALLED.format(models=MODELS, marker="quick"))
                        .replace("python3 -c 'import time; time.sleep(60)' quick", "true"))
    out = tmp_path / "out.pb"
    done = ldfi("trace", str(scenario), "-o", str(out), "--store", str(tmp_path / "store"))
    assert done.returncode == 0, done.stderr
    [run_trace] = (tmp_path / "store").glob("runs/*/trace.pb")
    assert out.read_bytes() == run_trace.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pb", "quick.toml", "store"]
