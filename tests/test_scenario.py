"""The scenario parser: exact values for a good file, and for each kind of bad
input the exact file:line, the offending key and value in one UserError line."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from ldfi.durations import parse_duration
from ldfi.errors import EXIT_USAGE, UserError
from ldfi.scenario import (
    SCHEMA,
    Command,
    Node,
    Ready,
    Scenario,
    TemplateError,
    _Lines,
    load_scenario,
    placeholders,
    render,
)

REPO = Path(__file__).resolve().parent.parent

# Line numbers below refer to this file; edits replace one line or insert after one.
BASE = """\
name = "demo"
[run]
timeout = "30s"
settle = "0.5s"

[[node]]
name = "server"
cmd = "sh server.sh --port 7000"
ready = { tcp = 7000 }

[[node]]
name = "replica"
cmd = "sh replica.sh --primary {server}"

[workload]
cmd = "cat {scenario_dir}/input"

[check]
cmd = "sh -c 'test -s {workdir}/out'"
"""


def edit(text: str, replace: dict[int, str] | None = None, after: dict[int, str] | None = None):
    """BASE with line n replaced (replace) or followed by new lines (after)."""
    lines = text.splitlines()
    for number, new in (replace or {}).items():
        lines[number - 1] = new
    for number, new in sorted((after or {}).items(), reverse=True):
        lines[number:number] = new.splitlines()
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


def error(tmp_path: Path, text: str) -> tuple[str, str]:
    """(the file as passed, the UserError message) for a scenario that must fail."""
    path = write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_scenario(path)
    assert caught.value.exit_code == EXIT_USAGE
    message = str(caught.value)
    assert "\n" not in message
    return path, message


def assert_error(tmp_path: Path, text: str, line: int, *parts: str) -> str:
    path, message = error(tmp_path, text)
    assert message.startswith(f"{path}:{line}: "), message
    for part in parts:
        assert part in message, message
    # the shape: <file>:<line>: <what> (<key path>); <fix>
    assert re.fullmatch(rf"{re.escape(path)}:\d+: .+ \(.+\); .+", message), message
    return message


def make_executable(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


# --- a good file -----------------------------------------------------------------


FULL = """\
name = "echo"
[run]
timeout = "30s"
settle = "0.5s"

[[node]]
name = "server"
cmd = "sh server.sh --port 7000 --peer {backup}"
cwd = "srv"
env = { LOG = "debug", SELF = "{node}@{server}" }
ready = { tcp = 7000, timeout = "5s" }
stop_timeout = "1500ms"

[[node]]
name = "backup"
cmd = '''
exec ./run.sh --home ${HOME} --literal {{x}}
'''
[node.ready]
log = 'listening on port \\d+'

[[node]]
name = "pinger"
cmd = "sh -c 'sleep 1'"
ready = { cmd = "sh -c 'true {server}'" }

[[node]]
name = "udp-1"
cmd = "sh u.sh"
ready = { udp = 9000 }

[[node]]
name = "late_2"
cmd = "sh l.sh"
ready = { delay = 2 }

[workload]
cmd = "sh client.sh --server {server}:7000 --out {workdir}/result"
timeout = "20s"
env = { MODE = "fast" }

[check]
cmd = "grep -q OK {workdir}/result"
timeout = 3
cwd = "srv"
"""


def test_full_scenario_parses_to_exact_values(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    make_executable(tmp_path / "run.sh")
    scenario = load_scenario(write(tmp_path, FULL))
    srv = tmp_path.resolve() / "srv"
    here = tmp_path.resolve()
    assert scenario == Scenario(
        name="echo",
        path=here / "scenario.toml",
        dir=here,
        timeout=30.0,
        settle=0.5,
        nodes=(
            Node(
                name="server",
                cmd="sh server.sh --port 7000 --peer {backup}",
                cwd=srv,
                env={"LOG": "debug", "SELF": "{node}@{server}"},
                ready=Ready(kind="tcp", port=7000, timeout=5.0),
                stop_timeout=1.5,
            ),
            Node(
                name="backup",
                cmd="exec ./run.sh --home ${HOME} --literal {{x}}\n",
                cwd=here,
                env={},
                ready=Ready(kind="log", pattern=r"listening on port \d+", timeout=10.0),
                stop_timeout=2.0,
            ),
            Node(
                name="pinger",
                cmd="sh -c 'sleep 1'",
                cwd=here,
                env={},
                ready=Ready(kind="cmd", cmd="sh -c 'true {server}'", timeout=10.0),
                stop_timeout=2.0,
            ),
            Node(
                name="udp-1",
                cmd="sh u.sh",
                cwd=here,
                env={},
                ready=Ready(kind="udp", port=9000, timeout=10.0),
                stop_timeout=2.0,
            ),
            Node(
                name="late_2",
                cmd="sh l.sh",
                cwd=here,
                env={},
                ready=Ready(kind="delay", delay=2.0, timeout=10.0),
                stop_timeout=2.0,
            ),
        ),
        workload=Command(
            cmd="sh client.sh --server {server}:7000 --out {workdir}/result",
            cwd=here,
            env={"MODE": "fast"},
            timeout=20.0,
        ),
        check=Command(cmd="grep -q OK {workdir}/result", cwd=srv, env={}, timeout=3.0),
        faults=dict.fromkeys(("kinds", "max_faults", "max_crashes", "per_kind", "horizon",
                              "include_client")),
        outcome={"node": None, "payload": None, "on": None},
    )


def test_defaults(tmp_path: Path) -> None:
    text = edit(BASE, replace={2: "", 3: "", 4: ""})  # no [run]
    scenario = load_scenario(write(tmp_path, text))
    assert (scenario.timeout, scenario.settle) == (60.0, 0.0)
    replica = scenario.node("replica")
    assert replica.ready == Ready(kind="none", timeout=10.0)
    assert (replica.stop_timeout, replica.env, replica.cwd) == (2.0, {}, tmp_path.resolve())
    assert scenario.workload.timeout is None
    assert scenario.check.timeout is None


def test_node_lookup_and_placeholder_values(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, BASE))
    assert scenario.node("server").ready.port == 7000
    with pytest.raises(KeyError, match="nope"):
        scenario.node("nope")
    values = scenario.placeholder_values(
        {"server": "10.0.0.2", "replica": "10.0.0.3"}, "/runs/1", "client"
    )
    assert render(scenario.nodes[1].cmd, values) == "sh replica.sh --primary 10.0.0.2"
    assert render(scenario.check.cmd, values) == "sh -c 'test -s /runs/1/out'"
    assert render(scenario.workload.cmd, values) == f"cat {tmp_path.resolve()}/input"
    six = scenario.placeholder_values({"server": "10.0.0.2", "replica": "10.0.0.3"}, "/runs/1",
                                      "client", {"server": "fd00::2", "replica": "fd00::3"})
    assert render("{server.ipv6} {replica}", six) == "fd00::2 10.0.0.3"
    with pytest.raises(ValueError, match="replica"):
        scenario.placeholder_values({"server": "10.0.0.2"}, "/runs/1", "client")


def test_relative_path_in_error_is_shown_as_given(tmp_path: Path) -> None:
    write(tmp_path, edit(BASE, replace={8: 'cmd = "pyton3 server.py"'}))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UserError) as caught:
            load_scenario("scenario.toml")
    finally:
        os.chdir(cwd)
    assert str(caught.value) == (
        "scenario.toml:8: command 'pyton3' not found on PATH ([[node]] 'server' cmd); "
        "fix the command or install it"
    )


# --- bad input: each case names the line, the key and the value ------------------

BAD = [
    # unknown keys, everywhere
    ("unknown top key", {1: 'nam = "demo"'}, {}, 1,
     ["unknown key 'nam' (nam)", "did you mean 'name'?", "name, run, node, workload, check"]),
    ("unknown top table", {}, {19: "[fault]\nx = 1"}, 20,
     ["unknown key 'fault' (fault)", "did you mean 'faults'?",
      "allowed keys: name, run, node, workload, check, faults, outcome"]),
    ("unknown faults key", {}, {19: "[faults]\nmax_fault = 1"}, 21,
     ["unknown key 'max_fault' ([faults] max_fault)", "did you mean 'max_faults'?"]),
    ("negative budget", {}, {19: "[faults]\nmax_faults = -1"}, 21,
     ["max_faults must be a whole number >= 1"]),
    ("zero budget", {}, {19: "[faults]\nmax_faults = 0"}, 21,
     ["max_faults must be a whole number >= 1, not integer 0", "'ldfi run --no-faults'"]),
    ("zero horizon", {}, {19: "[faults]\nhorizon = 0"}, 21,
     ["horizon must be a whole number >= 1"]),
    ("negative crashes", {}, {19: "[faults]\nmax_crashes = -1"}, 21,
     ["max_crashes must be a whole number >= 0"]),
    ("unknown outcome node", {}, {19: '[outcome]\nnode = "nobody"'}, 21,
     ["no node named 'nobody' ([outcome] node)"]),
    ("unknown run key", {4: 'setle = "1s"'}, {}, 4,
     ["unknown key 'setle' ([run] setle)", "allowed keys: timeout, settle"]),
    ("unknown node key", {}, {13: 'comand = "x"'}, 14,
     ["unknown key 'comand' ([[node]] 'replica' comand)",
      "allowed keys: name, cmd, cwd, env, ready, stop_timeout"]),
    ("unknown workload key", {}, {16: 'timout = "1s"'}, 17,
     ["unknown key 'timout' ([workload] timout)", "did you mean 'timeout'?",
      "allowed keys: cmd, timeout, cwd, env"]),
    ("unknown check key", {}, {19: "retries = 3"}, 20,
     ["unknown key 'retries' ([check] retries)", "allowed keys: cmd, timeout, cwd, env"]),
    ("unknown ready key", {9: "ready = { tcp = 7000, tpc = 1 }"}, {}, 9,
     ["unknown key 'tpc' ([[node]] 'server' ready.tpc)",
      "allowed keys: tcp, udp, log, delay, cmd, timeout"]),
    # missing required keys and tables
    ("missing name", {1: "# no name"}, {}, 1, ["missing required key 'name' (name)"]),
    ("missing node cmd", {13: "# no cmd"}, {}, 11,
     ["missing required key 'cmd' ([[node]] 'replica' cmd)"]),
    ("missing node name", {12: "# no name"}, {}, 11,
     ["missing required key 'name' ([[node]] #2 name)"]),
    ("missing workload cmd", {16: "# no cmd"}, {}, 15,
     ["missing required key 'cmd' ([workload] cmd)"]),
    ("missing check cmd", {19: "# no cmd"}, {}, 18, ["missing required key 'cmd' ([check] cmd)"]),
    ("missing workload", {15: "", 16: ""}, {}, 1,
     ["missing [workload] table (workload)", "add a [workload] table with cmd"]),
    ("missing nodes", dict.fromkeys(range(6, 14), ""), {}, 1,
     ["missing [[node]] table (node)", "with name, cmd"]),
    ("empty node array", dict.fromkeys(range(6, 14), ""), {1: "node = []"}, 2,
     ["no nodes (node)", "add at least one [[node]]"]),
    # wrong types
    ("cmd not a string", {8: "cmd = 5"}, {}, 8,
     ["cmd must be a string, not integer 5 ([[node]] 'server' cmd)"]),
    ("name not a string", {1: "name = 3"}, {}, 1, ["name must be a string, not integer 3 (name)"]),
    ("empty cmd", {16: 'cmd = "  "'}, {}, 16, ["cmd is empty ([workload] cmd)"]),
    ("timeout a boolean", {3: "timeout = true"}, {}, 3,
     ["timeout must be a duration, not boolean true ([run] timeout)"]),
    ("env not a table", {}, {8: 'env = "LOG=1"'}, 9,
     ["env must be a table, not string 'LOG=1' ([[node]] 'server' env)"]),
    ("env value not a string", {}, {16: "env = { RETRIES = 3 }"}, 17,
     ["RETRIES must be a string, not integer 3 ([workload] env.RETRIES)"]),
    ("ready not a table", {9: "ready = 7000"}, {}, 9,
     ["ready must be a table, not integer 7000 ([[node]] 'server' ready)",
      "tcp, udp, log, delay, cmd, timeout"]),
    ("port as a string", {9: 'ready = { tcp = "7000" }'}, {}, 9,
     ["tcp must be a port number, not string '7000' ([[node]] 'server' ready.tcp)"]),
    ("run as an array", {2: "[[run]]"}, {}, 2,
     ["run must be a table, not an array (run)", "keys from: timeout, settle"]),
    ("node as a single table", {6: "[node]", 11: "", 12: "", 13: ""}, {}, 6,
     ["node must be an array of tables, not a table (node)", "write each one as a [[node]] table"]),
    # durations
    ("duration with a space", {3: 'timeout = "30 sec"'}, {}, 3,
     ["invalid duration '30 sec' ([run] timeout)", '"500ms", "1.5s"']),
    ("duration unknown unit", {4: 'settle = "2d"'}, {}, 4,
     ["invalid duration '2d' ([run] settle)"]),
    ("negative duration", {4: "settle = -1"}, {}, 4, ["invalid duration -1 ([run] settle)"]),
    ("zero timeout", {3: 'timeout = "0s"'}, {}, 3,
     ["timeout must be greater than 0, got '0s' ([run] timeout)"]),
    ("zero stop_timeout", {}, {13: "stop_timeout = 0"}, 14,
     ["stop_timeout must be greater than 0, got 0 ([[node]] 'replica' stop_timeout)"]),
    ("zero ready timeout", {9: 'ready = { tcp = 7000, timeout = "0ms" }'}, {}, 9,
     ["timeout must be greater than 0, got '0ms' ([[node]] 'server' ready.timeout)"]),
    ("zero workload timeout", {}, {16: "timeout = 0.0"}, 17,
     ["timeout must be greater than 0, got 0.0 ([workload] timeout)"]),
    ("infinite duration", {3: "timeout = inf"}, {}, 3, ["invalid duration inf ([run] timeout)"]),
    # ports and readiness
    ("port 0", {9: "ready = { tcp = 0 }"}, {}, 9,
     ["port 0 out of range ([[node]] 'server' ready.tcp)", "from 1 to 65535"]),
    ("port too big", {9: "ready = { udp = 65536 }"}, {}, 9,
     ["port 65536 out of range ([[node]] 'server' ready.udp)"]),
    ("two ready kinds", {9: 'ready = { tcp = 7000, log = "up" }'}, {}, 9,
     ["ready needs exactly one of tcp, udp, log, delay, cmd, got tcp and log "
      "([[node]] 'server' ready)"]),
    ("no ready kind", {9: 'ready = { timeout = "5s" }'}, {}, 9,
     ["ready needs exactly one of tcp, udp, log, delay, cmd, got none ([[node]] 'server' ready)"]),
    ("empty ready", {9: "ready = {}"}, {}, 9, ["got none ([[node]] 'server' ready)"]),
    ("bad regex", {9: 'ready = { log = "listening (" }'}, {}, 9,
     ["invalid regular expression 'listening ('", "missing ), unterminated subpattern",
      "([[node]] 'server' ready.log)"]),
    # node names
    ("uppercase name", {7: 'name = "Server"'}, {}, 7,
     ["invalid node name 'Server' ([[node]] #1 name)", "lowercase letter"]),
    ("name starting with a digit", {7: 'name = "1st"'}, {}, 7, ["invalid node name '1st'"]),
    ("name too long", {7: f'name = "{"s" * 21}"'}, {}, 7, [f"invalid node name '{'s' * 21}'"]),
    ("reserved client", {12: 'name = "client"'}, {}, 12,
     ["node name 'client' is reserved ([[node]] #2 name)",
      "workdir, scenario_dir, node, client, workload, check are reserved"]),
    ("reserved workdir", {12: 'name = "workdir"'}, {}, 12, ["node name 'workdir' is reserved"]),
    ("reserved node", {7: 'name = "node"'}, {}, 7, ["node name 'node' is reserved"]),
    ("duplicate name", {12: 'name = "server"'}, {}, 12,
     ["duplicate node name 'server' ([[node]] 'server' name)", "unique"]),
    # placeholders
    ("unknown placeholder", {13: 'cmd = "sh replica.sh {sever}"'}, {}, 13,
     ["unknown placeholder '{sever}' ([[node]] 'replica' cmd)", "did you mean '{server}'?",
      "{server}, {replica}, {workdir}, {scenario_dir}, {node}"]),
    ("unknown IPv6 placeholder", {13: 'cmd = "sh replica.sh {sever.ipv6}"'}, {}, 13,
     ["unknown placeholder '{sever.ipv6}' ([[node]] 'replica' cmd)",
      "did you mean '{server.ipv6}'?"]),
    ("only nodes have IPv6 placeholders", {19: 'cmd = "ping {workdir.ipv6}"'}, {}, 19,
     ["unknown placeholder '{workdir.ipv6}' ([check] cmd)"]),
    ("placeholder for a later node is fine, a wrong case is not", {8: 'cmd = "sh s.sh {REPLICA}"'},
     {}, 8, ["unknown placeholder '{REPLICA}' ([[node]] 'server' cmd)"]),
    ("client is no placeholder", {16: 'cmd = "cat {client}"'}, {}, 16,
     ["unknown placeholder '{client}' ([workload] cmd)"]),
    ("shell braces must be doubled", {19: "cmd = \"awk '{print $1}' {workdir}/out\""}, {}, 19,
     ["malformed placeholder '{print $1}' at column 6 ([check] cmd)", "write {{ and }}"]),
    ("single closing brace", {19: 'cmd = "sh -c x}"'}, {}, 19,
     ["single '}' at column 8 ([check] cmd)"]),
    ("unknown placeholder in env", {}, {13: 'env = { PEER = "{primary}" }'}, 14,
     ["unknown placeholder '{primary}' ([[node]] 'replica' env.PEER)"]),
    ("unknown placeholder in ready.cmd", {9: 'ready = { cmd = "sh -c {srv}" }'}, {}, 9,
     ["unknown placeholder '{srv}' ([[node]] 'server' ready.cmd)"]),
    # cwd
    ("missing cwd", {}, {8: 'cwd = "nope"'}, 9,
     ["directory 'nope' does not exist", "([[node]] 'server' cwd)"]),
    ("cwd is a file", {}, {16: 'cwd = "scenario.toml"'}, 17,
     ["'scenario.toml' is not a directory", "([workload] cwd)"]),
    # commands that are not found
    ("program not on PATH", {16: 'cmd = "pyton3 client.py"'}, {}, 16,
     ["command 'pyton3' not found on PATH ([workload] cmd); fix the command or install it"]),
    ("after assignments", {8: 'cmd = "A=1 B=2 pyton3 s.py"'}, {}, 8,
     ["command 'pyton3' not found on PATH ([[node]] 'server' cmd)"]),
    ("after exec", {8: 'cmd = "exec pyton3 s.py"'}, {}, 8, ["command 'pyton3' not found"]),
    ("after exec -a", {8: 'cmd = "exec -a srv pyton3 s.py"'}, {}, 8,
     ["command 'pyton3' not found"]),
    ("sleep is a program", {8: 'cmd = "slep 100"'}, {}, 8, ["command 'slep' not found"]),
    ("path that does not exist", {8: 'cmd = "./server --port 7000"'}, {}, 8,
     ["command './server' not found: no file", "([[node]] 'server' cmd)"]),
    ("ready.cmd not found", {9: 'ready = { cmd = "curl-nope {server}" }'}, {}, 9,
     ["command 'curl-nope' not found on PATH ([[node]] 'server' ready.cmd)"]),
    ("check not found", {19: 'cmd = "chek {workdir}"'}, {}, 19,
     ["command 'chek' not found on PATH ([check] cmd)"]),
    ("unbalanced quotes", {19: "cmd = \"sh -c 'test -s\""}, {}, 19,
     ["cannot split the command into words: No closing quotation ([check] cmd)",
      "balance the quotes"]),
]


@pytest.mark.parametrize(
    ("replace", "after", "line", "parts"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input(
    tmp_path: Path, replace: dict[int, str], after: dict[int, str], line: int, parts: list[str]
) -> None:
    assert_error(tmp_path, edit(BASE, replace, after), line, *parts)


def test_edits_keep_base_valid(tmp_path: Path) -> None:
    # the BAD cases only mean something if BASE itself loads
    load_scenario(write(tmp_path, BASE))


def test_not_executable(tmp_path: Path) -> None:
    make_executable(tmp_path / "server.py", mode=0o644)
    message = assert_error(
        tmp_path, edit(BASE, {8: 'cmd = "./server.py --port 7000"'}), 8,
        f"command './server.py' is not executable ({tmp_path.resolve() / 'server.py'})",
        "([[node]] 'server' cmd)", "chmod +x ./server.py",
    )
    assert "python3 ./server.py" in message


def test_directory_is_not_a_command(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    assert_error(
        tmp_path, edit(BASE, {8: 'cmd = "./bin"'}), 8, "command './bin' is not executable"
    )


def test_path_commands_resolve_against_the_command_cwd(tmp_path: Path) -> None:
    make_executable(tmp_path / "srv" / "run.sh")
    good = edit(BASE, {8: 'cmd = "./run.sh"'}, {8: 'cwd = "srv"'})
    assert load_scenario(write(tmp_path, good)).nodes[0].cwd == tmp_path.resolve() / "srv"
    # the same command from the scenario dir does not exist
    assert_error(
        tmp_path, edit(BASE, {16: 'cmd = "./run.sh"'}), 16,
        f"command './run.sh' not found: no file {tmp_path.resolve() / 'run.sh'}",
    )


@pytest.mark.parametrize(
    "cmd",
    [
        "cd sub && ./nothing-here",  # builtins are not looked up
        "exec sh -c 'exit 0'",
        "echo hi; pyton3",  # only the first program is checked
        "test -f x",
        "true",
        ": nothing",
        "[ -e x ]",
        "if true; then pyton3; fi",
        "export A=1; x",
        "A=1 B=2",  # assignments only
        "exec",
        "${HOME}/bin/tool",  # expansions are only known at run time
        "$PYTHON s.py",
        "{workdir}/tool",  # created per run
        "{{ echo a; }}",
        "(cd sub && ./x)",
        ">out sh -c x",
        "{scenario_dir}/tool.sh",
        "sleep 1",
        "SLEEP=1 exec -a name -- sh -c x",
    ],
)
def test_commands_that_pass(tmp_path: Path, cmd: str) -> None:
    make_executable(tmp_path / "tool.sh")
    text = edit(BASE, {8: f"cmd = {json.dumps(cmd)}"})
    assert load_scenario(write(tmp_path, text)).nodes[0].cmd == cmd


def test_env_path_is_used_to_find_the_program(tmp_path: Path) -> None:
    make_executable(tmp_path / "bin" / "mytool")
    good = edit(BASE, {8: 'cmd = "mytool"'}, {8: 'env = { PATH = "{scenario_dir}/bin" }'})
    assert load_scenario(write(tmp_path, good)).nodes[0].env == {"PATH": "{scenario_dir}/bin"}
    # a relative PATH entry is relative to the command's cwd
    relative = edit(BASE, {8: 'cmd = "mytool"'}, {8: 'env = { PATH = "bin" }'})
    load_scenario(write(tmp_path, relative))
    # with its own PATH, `sh` from the host PATH is not found
    assert_error(
        tmp_path, edit(BASE, {}, {8: 'env = { PATH = "{scenario_dir}/bin" }'}), 8,
        "command 'sh' not found on PATH ([[node]] 'server' cmd)", "env PATH",
    )
    assert_error(tmp_path, edit(BASE, {8: 'cmd = "mytool"'}), 8, "command 'mytool' not found")


# --- line numbers: subtables, dotted keys, multi-line values -------------------------


def test_line_in_a_subtable(tmp_path: Path) -> None:
    text = edit(BASE, {9: ""}, {13: "[node.ready]\ntcp = 7000\nlog = 'x'\n[node.env]\nA = 1"})
    assert_error(tmp_path, text, 18, "A must be a string, not integer 1 ([[node]] 'replica' env.A)")
    text = edit(BASE, {9: ""}, {13: "[node.ready]\ntcp = 7000\nudp = 0"})
    assert_error(tmp_path, text, 16, "port 0 out of range ([[node]] 'replica' ready.udp)")
    text = edit(BASE, {9: ""}, {13: "[node.ready]\n\ntcp = 7000\nlog = 'x'"})
    assert_error(tmp_path, text, 14, "got tcp and log ([[node]] 'replica' ready)")


def test_line_of_a_dotted_key(tmp_path: Path) -> None:
    text = edit(BASE, {9: ""}, {13: "ready.tcp = 70000"})
    assert_error(tmp_path, text, 14, "port 70000 out of range ([[node]] 'replica' ready.tcp)")


def test_multiline_values_are_not_read_as_keys(tmp_path: Path) -> None:
    tricky = "cmd = '''\nsh -c 'x'\n[[node]]\nname = \"fake\"\ncmd = \"y\"\n'''"
    text = edit(BASE, {8: ""}, {8: tricky, 13: "stop_timeout = '0s'"})
    # lines 9-14 are the multi-line cmd: the 2nd node's header is line 17
    assert_error(tmp_path, text, 20, "([[node]] 'replica' stop_timeout)")


@pytest.mark.parametrize("name", ["../../tmp/escape", "a/b", "x" * 65, ".hidden", "with space"])
def test_scenario_name_must_be_safe_in_a_path(tmp_path: Path, name: str) -> None:
    """The name becomes part of run directory names: it must not escape the store."""
    text = edit(BASE, {1: f"name = {name!r}"}, {})
    assert_error(tmp_path, text, 1, "invalid scenario name")


def test_a_node_may_not_take_a_client_steps_name(tmp_path: Path) -> None:
    """logs/workload.* and logs/check.* belong to the client's steps."""
    text = BASE.replace('name = "replica"', 'name = "check"')
    assert_error(tmp_path, text, 12, "node name 'check' is reserved")


def test_too_many_nodes(tmp_path: Path) -> None:
    nodes = "".join(f'[[node]]\nname = "n{i}"\ncmd = "true"\n' for i in range(201))
    text = f'name = "big"\n{nodes}[workload]\ncmd = "true"\n[check]\ncmd = "true"\n'
    assert_error(tmp_path, text, 603, "201 nodes")


def test_multiline_array_is_skipped() -> None:
    # `["a"],` alone would read as a table header
    text = edit(BASE, {}, {7: 'tags = [\n  ["a"],\n  "cmd = 1",\n]'})
    lines = _Lines(text)
    assert lines.line(("node", 0, "tags")) == 8
    assert lines.line(("node", 0, "cmd")) == 12
    assert lines.line(("node", 0, "ready", "tcp")) == 13
    assert lines.line(("node", 1)) == 15
    assert lines.line(("check", "cmd")) == 23
    assert lines.line(("nothing",)) == 1


def test_quoted_keys(tmp_path: Path) -> None:
    text = edit(BASE, {}, {16: 'env = { "MY VAR" = 2 }'})
    assert_error(tmp_path, text, 17, "([workload] env.\"MY VAR\")")
    text = edit(BASE, {}, {16: '"cwd" = "nope"'})
    assert_error(tmp_path, text, 17, "directory 'nope' does not exist")


def test_inline_node_array_falls_back_to_the_array_line(tmp_path: Path) -> None:
    nodes = 'node = [\n  { name = "a", cmd = "sh a" },\n  { name = "b", cmd = "sh b", x = 1 },\n]'
    text = edit(BASE, dict.fromkeys(range(6, 14), ""), {1: nodes})
    assert_error(tmp_path, text, 2, "unknown key 'x' ([[node]] 'b' x)")


# --- files that are not scenarios ------------------------------------------------------


def test_toml_syntax_error(tmp_path: Path) -> None:
    path, message = error(tmp_path, edit(BASE, {8: 'cmd = "sh server.sh'}))
    assert message.startswith(f"{path}:8: invalid TOML: "), message
    assert "(column " in message and "fix the syntax" in message


def test_toml_syntax_error_at_end(tmp_path: Path) -> None:
    path, message = error(tmp_path, BASE + "[check\n")
    assert message.startswith(f"{path}:20: invalid TOML: "), message


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path, message = error(tmp_path, edit(BASE, {}, {8: 'cmd = "sh x"'}))
    assert message.startswith(f"{path}:9: invalid TOML: "), message


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(UserError, match=re.escape(f"{path}: scenario file not found")):
        load_scenario(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a directory"):
        load_scenario(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "scenario.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(UserError, match=re.escape(f"{path}: not UTF-8 text (byte 8)")):
        load_scenario(path)


# --- templates -----------------------------------------------------------------------

VALUES = {"server": "10.0.0.2", "workdir": "/runs/7", "node": "client"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{server}:7000", "10.0.0.2:7000"),
        ("{workdir}/out {node}", "/runs/7/out client"),
        ("{{server}}", "{server}"),
        ("awk '{{print $1}}'", "awk '{print $1}'"),
        ("{{{server}}}", "{10.0.0.2}"),
        ("echo ${HOME}", "echo ${HOME}"),
        ("echo ${X:-{workdir}}", "echo ${X:-/runs/7}"),
        ("echo $${HOME}/$", "echo $${HOME}/$"),
        ("no braces", "no braces"),
        ("", ""),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, VALUES) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}", "unknown placeholder '{nope}'"),
        ("a {server", "malformed placeholder '{server' at column 3"),
        ("{ server }", "malformed placeholder '{ server }' at column 1"),
        ("{}", "malformed placeholder '{}' at column 1"),
        ("a } b", "single '}' at column 3"),
        ("${A}}", "single '}' at column 5"),
    ],
)
def test_render_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(template, VALUES)


def test_placeholders() -> None:
    assert placeholders("{a} {{b}} ${c} {d-1}{a} {e_f}") == {"a", "d-1", "e_f"}
    with pytest.raises(TemplateError):
        placeholders("{")


# --- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("12", 12.0),
        (" 3s ", 3.0),
        ("0.25ms", 0.00025),
        (0, 0.0),
        (7, 7.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "value",
    ["", "s", "30 s", "30sec", "1d", "-1s", "-1", "1.s", ".5s", "1e3", "30S", "1h30m", "ms",
     "9" * 400 + "s", -1, -0.5, 10**400, math.inf, math.nan],
)
def test_parse_duration_rejects(value: str | float) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_parse_duration_rejects_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_duration(value)  # type: ignore[arg-type]


# --- docs ----------------------------------------------------------------------------


def test_docs_cover_every_key() -> None:
    docs = (REPO / "docs" / "scenario.md").read_text()
    for table, keys in SCHEMA.items():
        for key in keys:
            assert f"`{key}`" in docs, f"docs/scenario.md does not document {table}.{key}"


def _faults_table() -> dict[str, tuple[str, str]]:
    """docs/scenario.md's [faults] rows: key -> (type, default)."""
    docs = (REPO / "docs" / "scenario.md").read_text()
    section = docs.split("### `[faults]`", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", section, re.MULTILINE)
    return {key: (kind.strip(), default.strip()) for key, kind, default in rows}


@pytest.mark.parametrize("key", ["max_faults", "max_crashes", "horizon"])
def test_docs_state_the_fault_budget_the_code_enforces(tmp_path: Path, key: str) -> None:
    """A whole-number key's documented least value is accepted and the one
    below it refused, by the scenario file and by the budget `ldfi run`
    builds from it and its flags; the documented default is the code's."""
    from ldfi.solver.budget import Budget

    kind, default = _faults_table()[key]
    least = int(re.fullmatch(r"integer >= (\d+)", kind).group(1))  # type: ignore[union-attr]
    scenario = load_scenario(write(tmp_path, BASE + f"[faults]\n{key} = {least}\n"))
    assert getattr(Budget.from_mapping(scenario.faults), key) == least
    with pytest.raises(UserError, match=f"{key} must be a whole number >= {least}"):
        load_scenario(write(tmp_path, BASE + f"[faults]\n{key} = {least - 1}\n"))
    with pytest.raises(UserError, match=f"{key} must be a whole number >= {least}"):
        Budget.from_mapping({key: least - 1})  # as from --max-faults, --horizon, ...
    assert str(getattr(Budget(), key)).lower() == default


def test_max_faults_0_points_at_no_faults() -> None:
    """0 faults per hypothesis would certify having run the good case only:
    that run is `ldfi run --no-faults`, and the error says so."""
    from ldfi.solver.budget import Budget

    with pytest.raises(UserError, match="--no-faults"):
        Budget.from_mapping({"max_faults": 0})
